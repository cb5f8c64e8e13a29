/* test_calibrate.c — per-head calibration end to end: `sale calibrate` on a
 * small generated model on the CPU, the chosen taus read back by the CLI,
 * Lua and C, the budget property checked with the reference, bad input
 * files refused with the file and tensor named (stored thresholds kept), the
 * safetensors reader/writer and the config fallback. No hard-coded taus: the
 * reference's selection may change; the properties must hold whatever it is. */
#include <criterion/criterion.h>

#include "cli_helpers.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "internal.h"
#include "manual.h"
#include "safetensors.h"
#include "sale.h"
#include <sqlite3.h>

static char dir[256];
static char out[1 << 16];

static void setup(void)
{
    cli_tmp_setup(dir, sizeof dir, "/tmp/sale_cal_XXXXXX");
}

static void teardown(void)
{
    cli_tmp_teardown(dir);
}

TestSuite(calibrate, .init = setup, .fini = teardown, .timeout = 900);

static int run(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cli_vrun(out, sizeof out, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

static const char *in_dir(const char *name)
{
    static char buf[4][512];
    static int i;
    char *b = buf[i++ & 3];
    snprintf(b, 512, "%s/%s", dir, name);
    return b;
}

static sale_ctx *open_ctx(void)
{
    sale_options o = {0};
    o.cache_path = in_dir("kernels.db");
    sale_ctx *ctx = NULL;
    cr_assert_eq(sale_create(&ctx, &o), SALE_OK, "%s", ctx ? sale_last_error(ctx) : "");
    return ctx;
}

/* -------------------------------------------------- end to end on the CPU */

#define L_LAYERS 2
#define L_HEADS 4
#define L_KV 2
#define L_SEQ 2048
#define L_DIM 64
#define L_SAMPLES 2
#define L_SEED 7
#define L_BUDGET 0.003

/* Output error per (sample, head) of a run at taus against dense, worst over samples. */
static void errors_at(const sale_attention_args *base, const float *tau, const float *ref, double *worst)
{
    sale_attention_args a = *base;
    size_t n = (size_t)L_SAMPLES * L_HEADS * L_SEQ * L_DIM;
    uint16_t *o = malloc(n * 2);
    a.out = o;
    a.tau = tau;
    a.mode = SALE_MODE_FUSED;
    cr_assert_eq(sale_reference_attention(NULL, &a), SALE_OK);
    size_t hd = (size_t)L_SEQ * L_DIM;
    for (int h = 0; h < L_HEADS; h++) {
        worst[h] = 0;
        for (int s = 0; s < L_SAMPLES; s++) {
            double num = 0, den = 0;
            size_t off = ((size_t)s * L_HEADS + (size_t)h) * hd;
            for (size_t i = 0; i < hd; i++) {
                num += fabs(sale_f16_to_f32(o[off + i]) - ref[off + i]);
                den += fabs(ref[off + i]);
            }
            worst[h] = fmax(worst[h], num / den);
        }
    }
    free(o);
}

/* --dense-above D (default 0.5): the pure search's tau where it keeps fewer
 * than D of the head's blocks, dense (tau 0, error 0) where it keeps D or more */
Test(calibrate, heads_kept_above_dense_above_run_dense_and_the_others_keep_their_tau)
{
    const char *gen = "layers=1,heads=4,kv_heads=2,seq=1024,dim=64,samples=2,seed=11";
    cr_assert_eq(run("calibrate --model pure --generate %s --budget 0.003 --device cpu --dense-above 0", gen), 0, "%s",
                 out);
    cr_assert_eq(run("calibrate --model half --generate %s --budget 0.003 --device cpu", gen), 0, "%s", out);
    cr_assert_eq(run("calibrate --model some --generate %s --budget 0.003 --device cpu --dense-above 0.3", gen), 0,
                 "%s", out);
    sale_ctx *ctx = open_ctx();
    float tp[4], tau[4];
    sale_threshold_meta mp[4], m[4];
    cr_assert_eq(sale_thresholds_get(ctx, "pure", 0, tp, 4, mp), SALE_OK, "%s", sale_last_error(ctx));
    int changed = 0;
    const char *models[2] = {"half", "some"};
    const double above[2] = {0.5, 0.3};
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(sale_thresholds_get(ctx, models[i], 0, tau, 4, m), SALE_OK, "%s", sale_last_error(ctx));
        for (int h = 0; h < 4; h++) {
            if (tp[h] != 0 && mp[h].density >= above[i]) {
                cr_assert_eq(tau[h], 0.f, "%s head %d: kept %g >= %g runs dense", models[i], h, mp[h].density,
                             above[i]);
                cr_assert_eq(m[h].error, 0.0);
                changed++;
            } else {
                cr_assert_eq(tau[h], tp[h], "%s head %d: kept %g < %g keeps the search's tau", models[i], h,
                             mp[h].density, above[i]);
            }
        }
    }
    cr_assert_gt(changed, 0, "some head of this input is kept at density >= 0.3 (pure: %g %g %g %g)", mp[0].density,
                 mp[1].density, mp[2].density, mp[3].density);
    sale_destroy(ctx);
    cr_assert_eq(run("calibrate --model bad --generate %s --dense-above 1.5", gen), 2, "%s", out);
    cr_assert(strstr(out, "--dense-above: a fraction of blocks in [0, 1]"), "%s", out);
}

Test(calibrate, cli_warns_when_one_sample_decides_every_tau)
{
    cr_assert_eq(run("calibrate --model one --generate layers=1,heads=2,kv_heads=2,seq=512,dim=64,samples=1,seed=3 "
                     "--budget 0.02 --device cpu --dry-run"),
                 0, "%s", out);
    cr_assert(strstr(out, "warning: one sample per layer") && strstr(out, "capture two or more samples"), "%s", out);
    cr_assert(strstr(out, "chose 1 layers x 2 heads of 'one' (1 samples"), "%s", out);
}

/* A second calibration of a model over fewer layers left the first's rows
 * (another budget) for `tau=(model, layer)` to use silently: a calibration
 * replaces the model's thresholds as a whole, and says what it dropped. */
Test(calibrate, a_second_calibration_replaces_the_first_as_a_whole)
{
    const char *gen2 = "layers=2,heads=2,kv_heads=2,seq=512,dim=64,samples=2,seed=5";
    const char *gen1 = "layers=1,heads=2,kv_heads=2,seq=512,dim=64,samples=2,seed=6";
    cr_assert_eq(run("calibrate -q --model Z --generate %s --budget 0.05 --device cpu", gen2), 0, "%s", out);
    cr_assert(strstr(out, "replaced") == NULL, "a first calibration replaces nothing: %s", out);
    cr_assert_eq(run("calibrate -q --model other --generate %s --budget 0.05 --device cpu", gen1), 0, "%s", out);
    cr_assert_eq(run("calibrate -q --model Z --generate %s --budget 0.01 --device cpu", gen1), 0, "%s", out);
    cr_assert(strstr(out, "replaced the earlier calibration of 'Z': 4 thresholds, 2 of them dropped"), "%s", out);
    sale_ctx *ctx = open_ctx();
    float tau[2];
    sale_threshold_meta m[2];
    cr_assert_eq(sale_thresholds_get(ctx, "Z", 1, tau, 2, m), SALE_ERR_NOT_FOUND,
                 "layer 1 of the first calibration is still there");
    cr_assert_eq(sale_thresholds_get(ctx, "Z", 0, tau, 2, m), SALE_OK, "%s", sale_last_error(ctx));
    for (int h = 0; h < 2; h++)
        cr_assert_float_eq(m[h].budget, 0.01, 1e-12, "head %d keeps the first budget", h);
    cr_assert_eq(sale_thresholds_get(ctx, "other", 0, tau, 2, m), SALE_OK, "another model is untouched");
    sale_destroy(ctx);
    cr_assert_eq(run("ls --thresholds"), 0, "%s", out);
    cr_assert(strstr(out, "\n4 thresholds"), "2 of Z, 2 of other: %s", out);
}

Test(calibrate, cli_calibrates_a_generated_model_on_the_cpu_and_cli_lua_c_read_the_same_taus)
{
    cr_assert_eq(run("calibrate --model toy --generate layers=%d,heads=%d,kv_heads=%d,seq=%d,dim=%d,samples=%d,"
                     "seed=%d --budget %g --device cpu --dense-above 0",
                     L_LAYERS, L_HEADS, L_KV, L_SEQ, L_DIM, L_SAMPLES, L_SEED, L_BUDGET),
                 0, "%s", out);
    cr_assert(strstr(out, "layer 0 (1/2)") && strstr(out, "layer 1 (2/2)"), "progress per layer: %s", out);
    cr_assert(strstr(out, "calibrated 2 layers x 4 heads of 'toy'"), "%s", out);
    cr_assert(strstr(out, "tokens, thr run,"), "the variant calibrated with: %s", out);
    cr_assert(!strstr(out, "one sample per layer"), "two samples draw no warning: %s", out);

    /* C */
    sale_ctx *ctx = open_ctx();
    float tau[L_LAYERS][L_HEADS];
    sale_threshold_meta meta[L_LAYERS][L_HEADS];
    for (int l = 0; l < L_LAYERS; l++) {
        cr_assert_eq(sale_thresholds_get(ctx, "toy", l, tau[l], L_HEADS, meta[l]), SALE_OK, "%s",
                     sale_last_error(ctx));
        for (int h = 0; h < L_HEADS; h++) {
            cr_assert(tau[l][h] == 0 || (tau[l][h] <= 0.008f && tau[l][h] > 1e-4f), "tau %g", tau[l][h]);
            cr_assert_float_eq(meta[l][h].budget, L_BUDGET, 1e-12);
            cr_assert_eq(meta[l][h].budget_abs, 0);
            cr_assert_eq(meta[l][h].samples, L_SAMPLES);
            cr_assert_gt(meta[l][h].created, 1600000000);
            cr_assert(meta[l][h].error >= 0 && meta[l][h].error <= L_BUDGET);
            cr_assert_eq(meta[l][h].thr, SALE_THR_RUN, "the variant calibrated with (the default) is stored");
        }
    }
    float more[L_HEADS + 1];
    cr_assert_eq(sale_thresholds_get(ctx, "toy", 0, more, L_HEADS + 1, NULL), SALE_ERR_NOT_FOUND);
    cr_assert(strstr(sale_last_error(ctx), "head 4"), "%s", sale_last_error(ctx));
    sale_destroy(ctx);

    /* CLI: sale ls --thresholds */
    cr_assert_eq(run("ls --thresholds"), 0, "%s", out);
    cr_assert(strstr(out, "8 thresholds"), "%s", out);
    for (int l = 0; l < L_LAYERS; l++)
        for (int h = 0; h < L_HEADS; h++) {
            char want[64];
            snprintf(want, sizeof want, "%5d %4d %10.6g", l, h, (double)tau[l][h]);
            cr_assert(strstr(out, want), "'%s' not in %s", want, out);
        }
    cr_assert(strstr(out, " rel   run "), "the variant column: %s", out);

    /* Lua */
    FILE *f = fopen(in_dir("th.lua"), "w");
    fputs("for l = 0, 1 do\n"
          "  local tau, info = sale.thresholds('toy', l)\n"
          "  for h, t in ipairs(tau) do print(string.format('T %d %d %.6g %d %s', l, h - 1, t, info[h].samples, info[h].thr)) end\n"
          "end\n"
          "local none, why = sale.thresholds('nobody', 0)\n"
          "print(none == nil and 'NIL ' .. why)\n",
          f);
    fclose(f);
    cr_assert_eq(run("run %s", in_dir("th.lua")), 0, "%s", out);
    for (int l = 0; l < L_LAYERS; l++)
        for (int h = 0; h < L_HEADS; h++) {
            char want[64];
            snprintf(want, sizeof want, "T %d %d %.6g %d run\n", l, h, (double)tau[l][h], L_SAMPLES);
            cr_assert(strstr(out, want), "'%s' not in %s", want, out);
        }
    cr_assert(strstr(out, "NIL thresholds: none for model 'nobody'"), "%s", out);

    /* the property, recomputed with the reference on the same generated inputs */
    size_t nq = (size_t)L_SAMPLES * L_HEADS * L_SEQ * L_DIM, nk = (size_t)L_SAMPLES * L_KV * L_SEQ * L_DIM;
    uint16_t *q = malloc(nq * 2), *k = malloc(nk * 2), *v = malloc(nk * 2), *o = malloc(nq * 2);
    float *ref = malloc(nq * sizeof(float));
    for (int l = 0; l < L_LAYERS; l++) {
        sale_attention_args a;
        sale_attention_args_init(&a);
        a.batch = L_SAMPLES, a.heads_q = L_HEADS, a.heads_kv = L_KV, a.seq_len = L_SEQ, a.head_dim = L_DIM;
        a.dtype = SALE_DTYPE_F16;
        a.dense_below = -1;
        sale_gen_options g = {0};
        g.seed = L_SEED + (uint64_t)l; /* documented: layer L uses seed + L */
        g.structured = 1;
        int nn;
        cr_assert_eq(sale_generate_qkv(&a, &g, q, k, v, NULL, 0, &nn), SALE_OK);
        a.q = q, a.k = k, a.v = v, a.out = o;
        a.mode = SALE_MODE_DENSE;
        cr_assert_eq(sale_reference_attention(NULL, &a), SALE_OK);
        for (size_t i = 0; i < nq; i++)
            ref[i] = sale_f16_to_f32(o[i]);
        double at[L_HEADS], above[L_HEADS];
        float up[L_HEADS];
        errors_at(&a, tau[l], ref, at);
        for (int h = 0; h < L_HEADS; h++) {
            cr_assert_leq(at[h], L_BUDGET * (1 + 1e-9), "layer %d head %d: error %g at tau %g", l, h, at[h], tau[l][h]);
            cr_assert_float_eq(at[h], meta[l][h].error, 1e-9, "stored error is the measured one");
            up[h] = tau[l][h] == 0 ? 0.000125f : 2 * tau[l][h];
        }
        errors_at(&a, up, ref, above);
        for (int h = 0; h < L_HEADS; h++)
            if (tau[l][h] != 0.008f)
                cr_assert_gt(above[h], L_BUDGET, "layer %d head %d: the next larger tau %g also meets the budget (%g)",
                             l, h, up[h], above[h]);
    }
    free(q), free(k), free(v), free(o), free(ref);
}

/* ------------------------------------------------------- bad input files */

#define B_S 1
#define B_H 2
#define B_N 128
#define B_D 64

static float *fill(size_t n, float seed)
{
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = sinf(seed + 0.37f * (float)i);
    return x;
}

/* A layer file; what: NULL good, else "k3dims", "nov", "nan", "kN" */
static void write_layer(const char *path, const char *what)
{
    size_t n = (size_t)B_S * B_H * B_N * B_D;
    float *q = fill(n, 1), *k = fill(n, 2), *v = fill(n, 3);
    st_out t[3] = {{"q", SALE_DTYPE_F32, 4, {B_S, B_H, B_N, B_D}, q},
                   {"k", SALE_DTYPE_F32, 4, {B_S, B_H, B_N, B_D}, k},
                   {"v", SALE_DTYPE_F32, 4, {B_S, B_H, B_N, B_D}, v}};
    int nt = 3;
    if (what && !strcmp(what, "k3dims"))
        t[1].ndim = 3, t[1].shape[0] = B_H, t[1].shape[1] = B_N, t[1].shape[2] = B_D;
    if (what && !strcmp(what, "nov"))
        nt = 2;
    if (what && !strcmp(what, "nan"))
        q[77] = NAN;
    if (what && !strcmp(what, "kN"))
        t[1].shape[2] = B_N / 2, t[2].shape[2] = B_N / 2;
    char err[512];
    cr_assert_eq(st_write(path, t, nt, err, sizeof err), 0, "%s", err);
    free(q), free(k), free(v);
}

static void expect_refused(const char *what, const char *want1, const char *want2)
{
    char d[600], p0[700], p1[700];
    snprintf(d, sizeof d, "%s/in_%s", dir, what);
    mkdir(d, 0755);
    snprintf(p0, sizeof p0, "%s/layer_000.safetensors", d);
    snprintf(p1, sizeof p1, "%s/layer_001.safetensors", d);
    write_layer(p0, NULL);
    if (!strcmp(what, "truncated") || !strcmp(what, "headerlie")) {
        write_layer(p1, NULL);
        if (!strcmp(what, "truncated")) {
            cr_assert_eq(truncate(p1, 700), 0);
        } else {
            FILE *f = fopen(p1, "r+b");
            unsigned char big[8] = {0xff, 0xff, 0xff, 0x00, 0, 0, 0, 0};
            fwrite(big, 1, 8, f);
            fclose(f);
        }
    } else {
        write_layer(p1, what);
    }
    cr_assert_eq(run("calibrate -q --model kept --input %s --device cpu", d), 1, "%s: %s", what, out);
    cr_assert(strstr(out, "layer_001.safetensors"), "%s: file not named: %s", what, out);
    cr_assert(strstr(out, want1), "%s: '%s' not in %s", what, want1, out);
    if (want2)
        cr_assert(strstr(out, want2), "%s: '%s' not in %s", what, want2, out);
    cr_assert(strstr(out, "nothing stored"), "%s", out);
}

Test(calibrate, bad_input_files_name_file_and_tensor_and_leave_stored_thresholds_untouched)
{
    sale_ctx *ctx = open_ctx();
    float before[2][B_H] = {{0.004f, 0.002f}, {0.001f, 0}};
    sale_threshold_meta m = {0.05, 0, 3, 1700000000, 0.25, 0.01, SALE_THR_FIXED};
    sale_threshold_meta mh[B_H] = {m, m};
    for (int l = 0; l < 2; l++)
        cr_assert_eq(sale_thresholds_put(ctx, "kept", l, before[l], B_H, mh), SALE_OK, "%s", sale_last_error(ctx));
    sale_destroy(ctx);

    expect_refused("k3dims", "tensor 'k': expected 4 dims [S,H,N,D], got 3", NULL);
    expect_refused("nov", "tensor 'v': missing", NULL);
    expect_refused("nan", "tensor 'q': element [0,0,1,13] is NaN", NULL);
    expect_refused("kN", "tensor 'k': N (tokens) is 64 but q has 128", NULL);
    expect_refused("truncated", "outside", "truncated");
    expect_refused("headerlie", "header length 16777215 is impossible", NULL);

    ctx = open_ctx();
    for (int l = 0; l < 2; l++) {
        float after[B_H];
        sale_threshold_meta ma[B_H];
        cr_assert_eq(sale_thresholds_get(ctx, "kept", l, after, B_H, ma), SALE_OK, "%s", sale_last_error(ctx));
        for (int h = 0; h < B_H; h++) {
            cr_assert_eq(after[h], before[l][h]);
            cr_assert_eq(ma[h].samples, 3);
            cr_assert_eq(ma[h].created, 1700000000);
        }
    }
    sale_destroy(ctx);
}

Test(calibrate, a_good_input_directory_calibrates_and_replaces_the_rows)
{
    char d[600];
    snprintf(d, sizeof d, "%s/good", dir);
    mkdir(d, 0755);
    char p[700];
    snprintf(p, sizeof p, "%s/layer_003.safetensors", d);
    write_layer(p, NULL);
    cr_assert_eq(run("calibrate --model files --input %s --device cpu --budget-abs 0.5", d), 0, "%s", out);
    cr_assert(strstr(out, "layer 3 (1/1)"), "%s", out);
    sale_ctx *ctx = open_ctx();
    float tau[B_H];
    sale_threshold_meta m[B_H];
    cr_assert_eq(sale_thresholds_get(ctx, "files", 3, tau, B_H, m), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(m[0].budget_abs, 1);
    cr_assert_eq(m[0].samples, B_S);
    sale_destroy(ctx);
}

/* ------------------------------------------------------------ safetensors */

Test(calibrate, safetensors_round_trip_in_every_dtype)
{
    size_t n = 2 * 3 * 5 * 8;
    float *x = fill(n, 0.5f);
    uint16_t *h = malloc(n * 2), *b = malloc(n * 2);
    for (size_t i = 0; i < n; i++)
        h[i] = sale_f32_to_f16(x[i]), b[i] = sale_f32_to_bf16(x[i]);
    st_out t[3] = {{"a32", SALE_DTYPE_F32, 4, {2, 3, 5, 8}, x},
                   {"b16", SALE_DTYPE_F16, 4, {2, 3, 5, 8}, h},
                   {"c_bf", SALE_DTYPE_BF16, 2, {30, 8}, b}};
    char err[512];
    const char *p = in_dir("rt.safetensors");
    cr_assert_eq(st_write(p, t, 3, err, sizeof err), 0, "%s", err);
    st_file sf;
    cr_assert_eq(st_open(&sf, p, err, sizeof err), 0, "%s", err);
    cr_assert_eq(sf.n, 3);
    const st_tensor *a = st_find(&sf, "a32"), *c = st_find(&sf, "c_bf"), *bb = st_find(&sf, "b16");
    cr_assert(a && c && bb);
    cr_assert_eq(c->ndim, 2);
    cr_assert_eq(c->shape[0], 30);
    cr_assert_eq(st_find(&sf, "zzz"), NULL);
    float *y = malloc(n * sizeof *y);
    cr_assert_eq(st_read(&sf, a, SALE_DTYPE_F32, y, err, sizeof err), 0, "%s", err);
    cr_assert_eq(memcmp(x, y, n * 4), 0);
    uint16_t *z = malloc(n * 2);
    cr_assert_eq(st_read(&sf, bb, SALE_DTYPE_F16, z, err, sizeof err), 0, "%s", err);
    cr_assert_eq(memcmp(h, z, n * 2), 0);
    cr_assert_eq(st_read(&sf, c, SALE_DTYPE_BF16, z, err, sizeof err), 0, "%s", err);
    cr_assert_eq(memcmp(b, z, n * 2), 0);
    st_close(&sf);

    /* a header as other writers make it: metadata, whitespace, another dtype */
    const char *hdr = "{ \"__metadata__\": {\"format\": \"pt\"},\n \"ids\": {\"dtype\": \"I64\", \"shape\": [2], "
                      "\"data_offsets\": [0, 16]} }";
    const char *p2 = in_dir("other.safetensors");
    FILE *f = fopen(p2, "wb");
    uint64_t hl = strlen(hdr);
    unsigned char l8[8];
    for (int i = 0; i < 8; i++)
        l8[i] = (unsigned char)(hl >> (8 * i));
    fwrite(l8, 1, 8, f);
    fwrite(hdr, 1, hl, f);
    fwrite(x, 1, 16, f);
    fclose(f);
    cr_assert_eq(st_open(&sf, p2, err, sizeof err), 0, "%s", err);
    cr_assert_eq(st_read(&sf, st_find(&sf, "ids"), SALE_DTYPE_F32, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "tensor 'ids': dtype I64 is not supported"), "%s", err);
    st_close(&sf);

    /* shape and byte length that disagree */
    f = fopen(p2, "wb");
    hdr = "{\"q\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,16]}}";
    hl = strlen(hdr);
    for (int i = 0; i < 8; i++)
        l8[i] = (unsigned char)(hl >> (8 * i));
    fwrite(l8, 1, 8, f);
    fwrite(hdr, 1, hl, f);
    fwrite(x, 1, 16, f);
    fclose(f);
    cr_assert_eq(st_open(&sf, p2, err, sizeof err), -1);
    cr_assert(strstr(err, "tensor 'q': shape has 5 elements"), "%s", err);
    free(x), free(h), free(b), free(y), free(z);
}

/* ------------------------------------------------- args and the config */

Test(calibrate, attention_by_model_and_layer_uses_the_stored_taus_and_the_config_is_the_last_fallback)
{
    sale_ctx *ctx = open_ctx();
    float tau[2] = {0.002f, 0};
    cr_assert_eq(sale_thresholds_put(ctx, "m", 5, tau, 2, NULL), SALE_OK, "%s", sale_last_error(ctx));

    int N = 256, D = 64;
    size_t n = (size_t)2 * N * D;
    float *q = fill(n, 1), *k = fill(n, 2), *v = fill(n, 3), *o1 = malloc(n * 4), *o2 = malloc(n * 4);
    sale_attention_args a;
    sale_attention_args_init(&a);
    a.batch = 1, a.heads_q = 2, a.heads_kv = 2, a.seq_len = N, a.head_dim = D, a.dtype = SALE_DTYPE_F32;
    a.dense_below = -1;
    a.q = q, a.k = k, a.v = v, a.out = o1, a.tau = tau;
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_OK, "%s", sale_last_error(ctx));
    a.tau = NULL, a.model = "m", a.layer = 5, a.out = o2;
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(memcmp(o1, o2, n * 4), 0);
    a.layer = 6;
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_ERR_NOT_FOUND);
    cr_assert(strstr(sale_last_error(ctx), "model 'm' layer 6 head 0"), "%s", sale_last_error(ctx));

    /* the config's thresholds section, under the cache file */
    cfg_threshold th[3] = {{"m", 6, 0, 0.004f}, {"m", 6, 1, 0.001f}, {"m", 5, 0, 0.5f}};
    cr_assert_eq(thresholds_attach_config(ctx, th, 3), SALE_OK);
    float got[2];
    cr_assert_eq(sale_thresholds_get(ctx, "m", 6, got, 2, NULL), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(got[0], 0.004f);
    cr_assert_eq(got[1], 0.001f);
    cr_assert_eq(sale_thresholds_get(ctx, "m", 5, got, 2, NULL), SALE_OK);
    cr_assert_eq(got[0], 0.002f, "the cache file wins over the config");
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_OK, "%s", sale_last_error(ctx));
    sale_destroy(ctx);
    free(q), free(k), free(v), free(o1), free(o2);

    /* and through the CLI's config file, from Lua */
    FILE *f = fopen(in_dir("sale.lua"), "w");
    fputs("thresholds = { ['cfg-model'] = { [2] = {0.004, 0.002, 0.001} } }\n", f);
    fclose(f);
    f = fopen(in_dir("th.lua"), "w");
    fputs("local t = sale.thresholds('cfg-model', 2)\nprint(string.format('CFG %d %.6g %.6g %.6g', #t, t[1], t[2], "
          "t[3]))\n",
          f);
    fclose(f);
    cr_assert_eq(run("--config %s run %s", in_dir("sale.lua"), in_dir("th.lua")), 0, "%s", out);
    cr_assert(strstr(out, "CFG 3 0.004 0.002 0.001"), "%s", out);
}

/* sale_calibrate with thr fixed (CPU reference): the result and every stored
 * row say fixed, and an attention call naming the thresholds with thr 0 runs
 * fixed (its output equals an explicit fixed call with the stored taus, bit
 * for bit) while one asking for run is refused */
Test(calibrate, the_variant_calibrated_with_is_stored_and_runs_by_default)
{
    sale_ctx *ctx = open_ctx();
    sale_calibrate_options o;
    sale_calibrate_options_init(&o);
    o.model = "fixed-model";
    o.gen.layers = 1, o.gen.heads_q = 4, o.gen.heads_kv = 2, o.gen.seq_len = 2048, o.gen.head_dim = 128;
    o.gen.samples = 2, o.gen.seed = 5, o.gen.dtype = SALE_DTYPE_BF16;
    o.budget = 0.05;
    o.est_bits = 4;
    o.device = SALE_CALIBRATE_CPU;
    o.block_k = 16, o.block_seg = 64, o.local_window = 64; /* many segments a row: run and fixed differ */
    o.thr = SALE_THR_FIXED;
    o.dense_above = 0;
    sale_calibrate_result r;
    cr_assert_eq(sale_calibrate(ctx, &o, &r), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(r.thr, SALE_THR_FIXED);
    float tau[4];
    sale_threshold_meta m[4];
    cr_assert_eq(sale_thresholds_get(ctx, "fixed-model", r.layer_ids[0], tau, 4, m), SALE_OK, "%s",
                 sale_last_error(ctx));
    for (int h = 0; h < 4; h++)
        cr_assert_eq(m[h].thr, SALE_THR_FIXED, "head %d", h);

    const int N = 2048, D = 128;
    size_t nq = (size_t)4 * N * D, nk = (size_t)2 * N * D;
    uint16_t *q = malloc(nq * 2), *k = malloc(nk * 2), *v = malloc(nk * 2), *o1 = malloc(nq * 2),
             *o2 = malloc(nq * 2);
    sale_attention_args a;
    sale_attention_args_init(&a);
    a.batch = 1, a.heads_q = 4, a.heads_kv = 2, a.seq_len = N, a.head_dim = D, a.dtype = SALE_DTYPE_BF16;
    a.dense_below = -1, a.block_k = 16, a.block_seg = 64, a.local_window = 64, a.est_bits = 4;
    sale_gen_options g = {.seed = 91, .structured = 1, .needles = 4};
    cr_assert_eq(sale_generate_qkv(&a, &g, q, k, v, NULL, 0, NULL), SALE_OK);
    a.q = q, a.k = k, a.v = v;
    a.tau = tau, a.thr = SALE_THR_FIXED, a.out = o1;
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_OK, "%s", sale_last_error(ctx));
    a.thr = SALE_THR_RUN, a.out = o2;
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_OK, "%s", sale_last_error(ctx));
    fprintf(stderr, "calibrated fixed: tau %g %g %g %g\n", (double)tau[0], (double)tau[1], (double)tau[2],
            (double)tau[3]);
    cr_assert_neq(memcmp(o1, o2, nq * 2), 0, "run and fixed agree here: the test cannot tell them apart");
    a.tau = NULL, a.model = "fixed-model", a.layer = r.layer_ids[0], a.thr = 0, a.out = o2;
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(memcmp(o1, o2, nq * 2), 0, "thr 0 with thresholds calibrated for fixed is not fixed's output");
    a.thr = SALE_THR_RUN;
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_ERR_INVALID);
    sale_calibrate_result_free(&r);
    sale_destroy(ctx);
    free(q), free(k), free(v), free(o1), free(o2);
}

/* A stored row whose variant this library does not know (a damaged row, or
 * one written by a newer sale) is refused with the row named, never run as
 * some other variant; sale ls shows it as '?'. */
Test(calibrate, a_row_with_an_unknown_variant_is_refused_not_guessed)
{
    sale_ctx *ctx = open_ctx();
    float tau[2] = {0.004f, 0.002f};
    sale_threshold_meta m = {.budget = 0.02, .density = -1, .error = -1, .thr = SALE_THR_FIXED};
    cr_assert_eq(sale_thresholds_put(ctx, "odd-model", 3, tau, 2, &m), SALE_OK, "%s", sale_last_error(ctx));
    sale_destroy(ctx);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(in_dir("kernels.db"), &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "UPDATE thresholds SET thr = 7 WHERE model = 'odd-model' AND head = 1", NULL, NULL,
                              NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);

    ctx = open_ctx();
    float got[2];
    cr_assert_eq(sale_thresholds_get(ctx, "odd-model", 3, got, 2, NULL), SALE_ERR_CACHE);
    cr_assert(strstr(sale_last_error(ctx), "'odd-model' layer 3 head 1") &&
                  strstr(sale_last_error(ctx), "threshold variant 7"),
              "%s", sale_last_error(ctx));
    const int N = 256, D = 64;
    size_t n = (size_t)2 * N * D;
    float *q = fill(n, 1), *k = fill(n, 2), *v = fill(n, 3), *o = malloc(n * 4);
    sale_attention_args a;
    sale_attention_args_init(&a);
    a.batch = 1, a.heads_q = 2, a.heads_kv = 2, a.seq_len = N, a.head_dim = D, a.dtype = SALE_DTYPE_F32;
    a.dense_below = -1;
    a.q = q, a.k = k, a.v = v, a.out = o, a.model = "odd-model", a.layer = 3;
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_ERR_CACHE);
    cr_assert(strstr(sale_last_error(ctx), "threshold variant 7"), "%s", sale_last_error(ctx));
    sale_destroy(ctx);
    free(q), free(k), free(v), free(o);
    cr_assert_eq(run("ls --thresholds"), 0, "%s", out);
    cr_assert(strstr(out, " rel    ?     "), "the unknown variant listed as '?': %s", out);
}

/* Arguments that ran something else than asked: an empty --generate ran the
 * whole default generator and stored it, a second --budget won silently, an
 * odd dim failed with no reason, a long model name was told "required". */
Test(calibrate, cli_arguments_say_what_is_wrong_and_store_nothing)
{
    struct {
        const char *args, *want;
        int rc;
    } cases[] = {
        {"--generate ''", "--generate: empty", 2},
        /* commas alone, or an empty entry, were skipped: "," ran the default generator */
        {"--generate ,", "an empty entry", 2},
        {"--generate layers=1,,seq=64", "an empty entry", 2},
        {"--generate layers=1,seq=64,layers=2", "layers given twice", 2},
        {"--generate layers=1 --generate seq=64", "given twice", 2},
        {"--generate layers=1,seq=64 --budget 0.1 --budget 0.2", "one budget", 2},
        {"--generate layers=1,seq=64 --budget 0.1 --budget-abs 0.2", "one budget", 2},
        {"--generate layers=1,seq=64,dim=65", "dim must be even and at least 16", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_eq(run("calibrate -q --model args --device cpu %s", cases[i].args), cases[i].rc, "%s: %s",
                     cases[i].args, out);
        cr_assert(strstr(out, cases[i].want), "%s: '%s' not in %s", cases[i].args, cases[i].want, out);
    }
    char longname[301];
    memset(longname, 'x', 300);
    longname[300] = 0;
    cr_assert_eq(run("calibrate -q --model %s --device cpu --generate layers=1,seq=64", longname), 1, "%s", out);
    cr_assert(strstr(out, "300 bytes, longer than the 127"), "%s", out);
    cr_assert_eq(run("ls --thresholds"), 0, "%s", out);
    cr_assert(strstr(out, "0 thresholds"), "something was stored: %s", out);
}

/* An unknown device value (not AUTO, CPU or GPU) ran a full calibration as
 * if AUTO and stored the thresholds: it is refused, the message naming the
 * field and the accepted values, before any layer is evaluated. */
static void count_layers(void *user, const sale_calibrate_progress *p)
{
    (void)p;
    ++*(int *)user;
}

Test(calibrate, an_unknown_device_is_refused_before_any_work)
{
    sale_ctx *ctx = open_ctx();
    int layers = 0;
    const int bad[] = {7, -1, SALE_CALIBRATE_GPU + 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sale_calibrate_options o;
        sale_calibrate_options_init(&o);
        o.model = "dev";
        o.gen.layers = 1, o.gen.heads_q = 1, o.gen.seq_len = 64, o.gen.head_dim = 64, o.gen.samples = 1;
        o.device = (sale_calibrate_device)bad[i];
        o.progress = count_layers, o.progress_user = &layers;
        sale_calibrate_result r;
        cr_assert_eq(sale_calibrate(ctx, &o, &r), SALE_ERR_INVALID, "device %d accepted", bad[i]);
        const char *m = sale_last_error(ctx);
        cr_assert(strstr(m, "device") && strstr(m, "SALE_CALIBRATE_AUTO") && strstr(m, "SALE_CALIBRATE_CPU") &&
                      strstr(m, "SALE_CALIBRATE_GPU"),
                  "device %d: %s", bad[i], m);
        char num[16];
        snprintf(num, sizeof num, "%d", bad[i]);
        cr_assert(strstr(m, num), "the value given is named: %s", m);
        cr_assert_null(r.tau);
    }
    cr_assert_eq(layers, 0, "a layer was calibrated");
    float tau;
    cr_assert_eq(sale_thresholds_get(ctx, "dev", 0, &tau, 1, NULL), SALE_ERR_NOT_FOUND, "something was stored");
    sale_destroy(ctx);
}

/* sale.h said sale_cache_export refuses a dest that is not a regular file
 * "unless force", but force never overrides that refusal (the safer
 * behaviour, kept): the manual now says so. A directory, a FIFO and a
 * symbolic link are refused with force and left as they were; force
 * replaces a non-empty file that is not a sale cache, which is refused
 * without it; and the manual says "even with force" of the first case. */
Test(calibrate, export_refuses_a_non_regular_dest_even_with_force_as_the_manual_says)
{
    sale_ctx *ctx = open_ctx();
    float tau[2] = {0.01f, 0.02f};
    cr_assert_eq(sale_thresholds_put(ctx, "exp", 0, tau, 2, NULL), SALE_OK, "%s", sale_last_error(ctx));
    const char *d = in_dir("a_dir"), *fifo = in_dir("a_fifo"), *text = in_dir("text.txt"), *link = in_dir("a_link");
    cr_assert_eq(mkdir(d, 0755), 0);
    cr_assert_eq(mkfifo(fifo, 0644), 0);
    FILE *f = fopen(text, "w");
    cr_assert_not_null(f);
    fputs("not a cache\n", f);
    fclose(f);
    cr_assert_eq(symlink(text, link), 0);
    const char *nonreg[3] = {d, fifo, link};
    for (int i = 0; i < 3; i++) {
        int rows = -1;
        struct stat before, after;
        cr_assert_eq(lstat(nonreg[i], &before), 0);
        cr_assert_eq(sale_cache_export(ctx, nonreg[i], NULL, 0, 1, &rows), SALE_ERR_CACHE, "%s replaced",
                     nonreg[i]);
        cr_assert(strstr(sale_last_error(ctx), "not a regular file"), "%s", sale_last_error(ctx));
        cr_assert_eq(lstat(nonreg[i], &after), 0);
        cr_assert_eq(before.st_mode, after.st_mode, "%s changed", nonreg[i]);
    }
    int rows = -1;
    /* something to export (an empty export writes nothing at all) */
    const float one_tau = 0.004f;
    sale_threshold_meta one_meta = {.budget = 0.02, .samples = 1, .density = -1, .error = -1};
    cr_assert_eq(sale_thresholds_put(ctx, "m", 0, &one_tau, 1, &one_meta), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(sale_cache_export(ctx, text, NULL, 0, 0, &rows), SALE_ERR_CACHE, "a text file replaced without force");
    cr_assert_eq(sale_cache_export(ctx, text, NULL, 0, 1, &rows), SALE_OK, "%s", sale_last_error(ctx));
    sale_destroy(ctx);

    /* the manual: the sentence that names a non-regular dest says "even
     * with force", not "unless force" */
    char *h = manual_text();
    static char doc[1 << 14];
    char *b = strstr(h, "/* Write the kernels of the given archs"), *e = strstr(h, "sale_status sale_cache_export(");
    cr_assert(b && e && b < e, "the comment above sale_cache_export moved");
    size_t m = 0;
    for (const char *p = b + 2; p < e && m < sizeof doc - 1; p++) { /* one line: no comment stars, single spaces */
        char c = *p == '\n' || *p == '*' || *p == '/' ? ' ' : *p;
        if (c != ' ' || (m && doc[m - 1] != ' '))
            doc[m++] = c;
    }
    doc[m] = 0;
    char *nr = strstr(doc, "not a regular file");
    cr_assert_not_null(nr, "%s", doc);
    char *s0 = nr, *s1 = strstr(nr, ". ");
    while (s0 > doc && !(s0[-1] == ' ' && s0 - 1 > doc && s0[-2] == '.'))
        s0--;
    if (s1)
        *s1 = 0;
    cr_assert(strstr(s0, "even with force") && !strstr(s0, "unless force"),
              "the manual must say a non-regular dest is refused even with force: '%s'", s0);
    free(h);
}

/* sale_thresholds_put reads one meta for the layer (meta[0]), though its
 * manual ("one meta for every head") read as if it took meta[heads] like
 * sale_thresholds_get: a caller's per-head metas were silently replaced by
 * the first. The manual now says one meta describes the whole layer and
 * only meta[0] is read; a put of two different metas stores the first for
 * both heads, which get returns per head. */
Test(calibrate, thresholds_put_stores_one_meta_for_the_whole_layer_as_the_manual_says)
{
    sale_ctx *ctx = open_ctx();
    sale_threshold_meta mm[2] = {{0.02, 0, 3, 100, 0.25, 0.01, SALE_THR_RUN},
                                 {0.05, 1, 9, 200, 0.75, 0.04, SALE_THR_FIXED}};
    float tau[2] = {0.01f, 0.02f}, got[2];
    sale_threshold_meta gm[2];
    cr_assert_eq(sale_thresholds_put(ctx, "layer-meta", 0, tau, 2, mm), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(sale_thresholds_get(ctx, "layer-meta", 0, got, 2, gm), SALE_OK, "%s", sale_last_error(ctx));
    for (int h = 0; h < 2; h++) {
        cr_assert_eq(got[h], tau[h]);
        cr_assert_eq(gm[h].thr, SALE_THR_RUN, "head %d", h);
        cr_assert_eq(gm[h].budget, 0.02);
        cr_assert_eq(gm[h].samples, 3);
        cr_assert_eq(gm[h].density, 0.25);
        cr_assert_eq(gm[h].error, 0.01);
    }
    /* a single meta (not an array) is all put needs: a put never reads past it */
    sale_threshold_meta *one = malloc(sizeof *one);
    *one = mm[1];
    cr_assert_eq(sale_thresholds_put(ctx, "layer-meta", 1, tau, 2, one), SALE_OK, "%s", sale_last_error(ctx));
    free(one);
    cr_assert_eq(sale_thresholds_get(ctx, "layer-meta", 1, got, 2, gm), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert(gm[0].thr == SALE_THR_FIXED && gm[1].thr == SALE_THR_FIXED);
    sale_destroy(ctx);

    /* the manual says so */
    char *h = manual_text();
    char *e = strstr(h, "sale_status sale_thresholds_put(");
    cr_assert_not_null(e);
    *e = 0;
    char *b = strstr(h, "/* Store tau[0..heads) for (model, layer)");
    cr_assert_not_null(b, "the comment above sale_thresholds_put moved");
    cr_assert(strstr(b, "whole layer") && strstr(b, "only meta[0] is read"),
              "the manual must say one meta describes the layer and only meta[0] is read: %s", b);
    free(h);
}

/* The other options, refused before any work too: budget_abs 5 was taken
 * as 1; thr 7 and a block_seg of -32 were found only by the reference when
 * layer 0 ran. */
Test(calibrate, bad_options_are_refused_before_any_layer_runs)
{
    sale_ctx *ctx = open_ctx();
    int layers = 0;
    struct {
        int budget_abs, thr, block_seg, block_k, est_bits;
        const char *want;
    } bad[] = {
        {5, 0, 0, 0, 0, "budget_abs"},
        {-1, 0, 0, 0, 0, "budget_abs"},
        {0, 7, 0, 0, 0, "thr"},
        {0, 0, -32, 0, 0, "block_seg"},
        {0, 0, 48, 0, 0, "block_seg"},
        {0, 0, 0, 24, 0, "block_k"},
        {0, 0, 0, 0, 5, "est"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sale_calibrate_options o;
        sale_calibrate_options_init(&o);
        o.model = "opts";
        o.device = SALE_CALIBRATE_CPU;
        o.gen.layers = 1, o.gen.heads_q = 1, o.gen.seq_len = 64, o.gen.head_dim = 64, o.gen.samples = 1;
        o.budget_abs = bad[i].budget_abs, o.thr = bad[i].thr, o.block_seg = bad[i].block_seg;
        o.block_k = bad[i].block_k, o.est_bits = bad[i].est_bits;
        o.progress = count_layers, o.progress_user = &layers;
        cr_assert_eq(sale_calibrate(ctx, &o, NULL), SALE_ERR_INVALID, "case %zu accepted", i);
        cr_assert(strstr(sale_last_error(ctx), bad[i].want), "case %zu: %s", i, sale_last_error(ctx));
    }
    cr_assert_eq(layers, 0, "a layer ran before a bad option was refused");
    float tau;
    cr_assert_eq(sale_thresholds_get(ctx, "opts", 0, &tau, 1, NULL), SALE_ERR_NOT_FOUND, "something was stored");
    sale_destroy(ctx);
}
