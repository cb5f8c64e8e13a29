/* test_attention.c — sale_attention's checks that need no GPU: the
 * workspace size query, argument refusals before any launch, and the
 * no-device answer. */
#include <criterion/criterion.h>
#include <string.h>

#include "sale.h"
#include "sale_layout.h"

static sale_ctx *ctx;
static void setup(void)
{
    sale_options o = {0};
    o.cache_path = ":memory:";
    cr_assert_eq(sale_create(&ctx, &o), SALE_OK);
}
static void teardown(void)
{
    sale_destroy(ctx);
}
TestSuite(attention, .init = setup, .fini = teardown);

static sale_attention_args shape(int N)
{
    sale_attention_args a;
    sale_attention_args_init(&a);
    a.batch = 1, a.heads_q = 32, a.heads_kv = 8, a.seq_len = N, a.head_dim = 128, a.dtype = SALE_DTYPE_BF16;
    return a;
}

Test(attention, workspace_size_needs_no_tensors_and_grows_with_length)
{
    sale_attention_args a = shape(4096);
    size_t s1 = 0, s2 = 0;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &s1), SALE_OK, "%s", sale_last_error(ctx));
    a.seq_len = 65536;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &s2), SALE_OK, "%s", sale_last_error(ctx));
    /* at least the int8 codes of Q and K */
    cr_assert_geq(s2, (size_t)65536 * 128 * (32 + 8));
    cr_assert_gt(s2, s1 * 10);
}

Test(attention, defaults_are_documented_values)
{
    sale_attention_args a;
    memset(&a, 0x5a, sizeof a);
    sale_attention_args_init(&a);
    cr_assert_eq(a.mode, SALE_MODE_AUTO);
    cr_assert_float_eq(a.tau_default, 0.004f, 1e-9);
    cr_assert_null(a.q);
    cr_assert_eq(a.block_q, 0);
    a = shape(1000);
    cr_assert_eq(sale_num_qblocks(&a), 16);
    cr_assert_eq(sale_num_kblocks(&a), 32);
}

Test(attention, bad_arguments_are_refused_before_any_launch)
{
    sale_attention_args a = shape(1024);
    char buf[64] __attribute__((aligned(16)));
    a.q = a.k = a.v = a.out = buf; /* never launched: checks come first */
    a.heads_kv = 5;
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "heads_q") != NULL, "%s", sale_last_error(ctx));
    a = shape(1024);
    a.q = a.k = a.v = a.out = buf;
    a.head_dim = 256;
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "head_dim") != NULL, "%s", sale_last_error(ctx));
    a = shape(1024);
    a.q = a.k = a.v = a.out = buf;
    a.q_stride[2] = 100; /* not a multiple of 8 */
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "strides") != NULL, "%s", sale_last_error(ctx));
    a = shape(1024);
    a.q = a.k = a.v = a.out = buf;
    float tau[32] = {0};
    tau[7] = 2.0f;
    a.tau = tau;
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "tau[7]") != NULL, "%s", sale_last_error(ctx));
    a = shape(1024);
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID, "NULL tensors");
}

Test(attention, valid_call_without_a_gpu_says_no_device)
{
    int n = 0;
    if (sale_device_count(ctx, &n) == SALE_OK && n > 0)
        cr_skip_test("a GPU is present");
    sale_attention_args a = shape(1024);
    char buf[64] __attribute__((aligned(16)));
    a.q = a.k = a.v = a.out = buf;
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_NO_DEVICE);
    cr_assert(strstr(sale_last_error(ctx), "libcuda") != NULL || strstr(sale_last_error(ctx), "device") != NULL,
              "%s", sale_last_error(ctx));
}

/* tile warps 5 asks for the rows attend kernel (sm_90a); it is an attend-only
 * tile, so the select keeps its own: with stages given too, the call must
 * pass the key check that runs before a device is looked for (a GPU run
 * found it refused there: "warps: must be 2, 4 or 8"). So must warps 12
 * under thr=run (the two-row kernel; the GPU suite found it refused too).
 * Tile warps 5 for fused, which has no such tile, is still refused. */
Test(attention, rows_tile_is_attend_only_and_passes_the_early_key_check)
{
    int n = 0;
    if (sale_device_count(ctx, &n) == SALE_OK && n > 0)
        cr_skip_test("a GPU is present");
    sale_attention_args a = shape(4096);
    char buf[64] __attribute__((aligned(16)));
    a.q = a.k = a.v = a.out = buf;
    a.mode = SALE_MODE_TWO_PASS;
    a.dense_below = -1;
    a.tile_warps = 5;
    a.tile_stages = 2;
    for (int thr = SALE_THR_RUN; thr <= SALE_THR_FIXED; thr++) {
        a.thr = thr;
        cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_NO_DEVICE, "thr %d: %s", thr, sale_last_error(ctx));
    }
    /* a short input falls back to dense (dense_below), which keeps its own tiles under warps 5
     * (the bench found it refused: "warps: must be 2, 4 or 8") */
    a.mode = SALE_MODE_AUTO;
    a.dense_below = 0;
    a.seq_len = 512;
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_NO_DEVICE, "dense fallback, warps 5: %s", sale_last_error(ctx));
    a.mode = SALE_MODE_DENSE;
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_NO_DEVICE, "dense, warps 5: %s", sale_last_error(ctx));
    a.mode = SALE_MODE_TWO_PASS;
    a.dense_below = -1;
    a.seq_len = 4096;
    /* warps 12 under run names the two-row attend kernel (the run select is mma.sync: 2/4/8) */
    a.tile_warps = 12;
    a.tile_stages = 0;
    a.thr = SALE_THR_RUN;
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_NO_DEVICE, "warps 12, run: %s", sale_last_error(ctx));
    a.tile_warps = 5;
    a.tile_stages = 2;
    a.mode = SALE_MODE_FUSED;
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID, "fused has no 5-warp tile");
    cr_assert(strstr(sale_last_error(ctx), "warps") != NULL, "%s", sale_last_error(ctx));
}

/* Version 0 (SALE_MODE_PLAIN) takes the same arguments and workspace as
 * fused; a mode past it is refused by name. */
Test(attention, plain_mode_is_checked_like_fused)
{
    sale_attention_args a = shape(4096);
    size_t sf = 0, sp = 0;
    a.mode = SALE_MODE_FUSED; /* (AUTO is two-pass on sm_90, which also holds the wgmma select's scratch) */
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &sf), SALE_OK, "%s", sale_last_error(ctx));
    a.mode = SALE_MODE_PLAIN;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &sp), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(sp, sf, "plain uses the quantize outputs, mask and counts of fused");
    a.mode = (sale_mode)(SALE_MODE_AUTO + 1);
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &sp), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "mode") != NULL, "%s", sale_last_error(ctx));

    char buf[64] __attribute__((aligned(16)));
    a = shape(4096);
    a.q = a.k = a.v = a.out = buf;
    a.mode = SALE_MODE_PLAIN;
    a.block_seg = 100; /* refused by the plain key before any device is looked for */
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "block_seg") != NULL, "%s", sale_last_error(ctx));
    int n = 0;
    if (sale_device_count(ctx, &n) == SALE_OK && n > 0)
        return;
    a.block_seg = 0;
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_NO_DEVICE, "%s", sale_last_error(ctx));
}

/* two-pass with thr=fixed may run the sm_90a select, whose scratch holds
 * every row's threshold and every key block's c_j range: the workspace size
 * (computed without a device) covers it, whatever the device will be */
Test(attention, workspace_covers_the_thr_fixed_select_scratch)
{
    sale_attention_args a;
    sale_attention_args_init(&a);
    a.batch = 2, a.heads_q = 8, a.heads_kv = 2, a.seq_len = 5000, a.head_dim = 128;
    a.mode = SALE_MODE_TWO_PASS;
    size_t run = 0, fixed = 0;
    a.thr = SALE_THR_RUN;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &run), SALE_OK, "%s", sale_last_error(ctx));
    a.thr = SALE_THR_FIXED;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &fixed), SALE_OK, "%s", sale_last_error(ctx));
    const size_t nkb = (5000 + 31) / 32;
    const size_t need = (size_t)2 * 8 * 5000 * 4 + (size_t)2 * 8 * nkb * 8; /* t_i, {cmin, cmax} */
    /* run's scratch is the quantize kernel's mean partials; fixed's must hold the select's too */
    const size_t qpart = (size_t)sale_layout_mean_chunks(5000) * (8 + 2) * 2 * 128 * 8;
    cr_assert_geq(fixed, run);
    cr_assert_geq(fixed - run + qpart, need, "workspace %zu (run %zu) misses the select's scratch %zu", fixed, run, need);
    /* fused never runs the wgmma select: no extra scratch */
    a.mode = SALE_MODE_FUSED;
    size_t fused_fixed = 0;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &fused_fixed), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_leq(fused_fixed, fixed);
}

/* thr 0 is the device's default variant: fixed on sm_90 (the wgmma select),
 * run elsewhere */
Test(attention, default_threshold_variant_per_arch)
{
    cr_assert_eq(sale_attention_default_thr(90), SALE_THR_FIXED);
    cr_assert_eq(sale_attention_default_thr(SALE_ARCH_SM90A), SALE_THR_FIXED);
    cr_assert_eq(sale_attention_default_thr(80), SALE_THR_RUN);
    cr_assert_eq(sale_attention_default_thr(86), SALE_THR_RUN);
    cr_assert_eq(sale_attention_default_thr(89), SALE_THR_RUN);
}

/* tile_warps 20 names only the sm_90a wgmma estimation (two-pass, thr fixed,
 * its block sizes): elsewhere the refusal says so, not only "warps: must be
 * 2, 4 or 8" (the random configurations on the H200 met it under thr run) */
Test(attention, tile_warps_20_outside_the_wgmma_estimation_says_what_20_is)
{
    sale_attention_args a = shape(4096);
    a.mode = SALE_MODE_TWO_PASS;
    a.tile_warps = 20;
    size_t s = 0;
    a.thr = SALE_THR_RUN;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &s), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "tile_warps: 20 is the sm_90a wgmma estimation's tile") != NULL, "%s",
              sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "takes thr=fixed") != NULL, "and the rule it broke: %s",
              sale_last_error(ctx));
    a.thr = SALE_THR_FIXED; /* the estimation's own call: accepted */
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &s), SALE_OK, "%s", sale_last_error(ctx));
    a.block_k = 64; /* not its block sizes */
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &s), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "tile_warps: 20 is") != NULL, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "block_k 32") != NULL, "%s", sale_last_error(ctx));
}
