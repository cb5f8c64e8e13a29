/* test_host.c — the host path on CPU: the loaded-kernel table, the winner
 * memo (counted SQLite calls), per-thread error messages, the parameter
 * block that carries the thresholds, the rules that keep sale_attention
 * from waiting, dense_below's choice, and the layering of the folders
 * (src/ and db/ never include tuner/). The GPU half is in test_gpu.c. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "sale_abi.h"
#include "tune.h"

static sale_ctx *ctx;

static void setup(void)
{
    sale_options o = {0};
    o.cache_path = ":memory:";
    cr_assert_eq(sale_create(&ctx, &o), SALE_OK, "%s", sale_last_error(ctx));
}

static void teardown(void)
{
    sale_destroy(ctx);
}

TestSuite(host, .init = setup, .fini = teardown, .timeout = 300);

static sale_device_info h100(void)
{
    sale_device_info d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "NVIDIA H100 80GB HBM3");
    d.arch = 90;
    d.sm_count = 132;
    d.driver_version = 13000;
    d.smem_optin = 232448;
    return d;
}

/* ------------------------------------------------------ loaded-kernel table */

Test(host, kernel_table_hits_only_the_same_context_key_and_bucket)
{
    static char mods[2000];
    CUcontext c1 = (CUcontext)(uintptr_t)0x1000, c2 = (CUcontext)(uintptr_t)0x2000;
    sale_key k = sale_key_default(SALE_FAMILY_FUSED);
    k.warps = 4;
    k.stages = 2;
    pthread_mutex_lock(&ctx->lock);
    cr_assert_null(ctx_kt_find(ctx, c1, &k, 0, NULL), "empty table");
    cr_assert_eq(ctx_kt_put(ctx, c1, &k, 0, (kmod *)&mods[0], 1), 0);
    int df = -1;
    cr_assert_eq(ctx_kt_find(ctx, c1, &k, 0, &df), (kmod *)&mods[0]);
    cr_assert_eq(df, 1, "the default flag comes back with its module");
    cr_assert_null(ctx_kt_find(ctx, c2, &k, 0, NULL), "another CUDA context");
    cr_assert_null(ctx_kt_find(ctx, c1, &k, 16384, NULL), "another length bucket");
    sale_key k2 = k;
    k2.head_dim = 64;
    cr_assert_null(ctx_kt_find(ctx, c1, &k2, 0, NULL), "another key");
    /* many entries: the table grows and keeps every one */
    for (int i = 0; i < 1000; i++) {
        sale_key x = k;
        x.block_seg = 32 * (i % 40 + 1);
        x.local_window = 32 * (i / 40 + 1);
        cr_assert_eq(ctx_kt_put(ctx, i % 2 ? c2 : c1, &x, i % 3 ? 0 : 4096, (kmod *)&mods[i + 1], 0), 0);
    }
    for (int i = 0; i < 1000; i++) {
        sale_key x = k;
        x.block_seg = 32 * (i % 40 + 1);
        x.local_window = 32 * (i / 40 + 1);
        cr_assert_eq(ctx_kt_find(ctx, i % 2 ? c2 : c1, &x, i % 3 ? 0 : 4096, NULL), (kmod *)&mods[i + 1], "entry %d", i);
    }
    cr_assert_eq(ctx_kt_find(ctx, c1, &k, 0, NULL), (kmod *)&mods[0]);
    pthread_mutex_unlock(&ctx->lock);
}

Test(host, stored_winner_makes_open_tile_entries_stale_but_not_fixed_ones)
{
    static char m1, m2;
    CUcontext c = (CUcontext)(uintptr_t)0x1000;
    sale_key open = sale_key_default(SALE_FAMILY_DENSE), fixed = open;
    fixed.warps = 4;
    fixed.stages = 2;
    pthread_mutex_lock(&ctx->lock);
    ctx_kt_put(ctx, c, &open, 0, (kmod *)&m1, 0);
    ctx_kt_put(ctx, c, &fixed, 0, (kmod *)&m2, 0);
    pthread_mutex_unlock(&ctx->lock);
    sale_device_info d = h100();
    sale_key w = sale_key_default(SALE_FAMILY_DENSE);
    w.arch = 90;
    w.warps = 4;
    w.stages = 3;
    cr_assert_eq(win_save(ctx, &d, &open, 16384, &w, 1.0, 1.0, 2), SALE_OK, "%s", sale_last_error(ctx));
    pthread_mutex_lock(&ctx->lock);
    cr_assert_null(ctx_kt_find(ctx, c, &open, 0, NULL), "open tiles may resolve differently now");
    cr_assert_eq(ctx_kt_find(ctx, c, &fixed, 0, NULL), (kmod *)&m2, "fixed tiles do not depend on winners");
    pthread_mutex_unlock(&ctx->lock);
}

/* ------------------------------------------------------------ winner memo */

Test(host, repeated_winner_lookups_make_no_sqlite_calls)
{
    sale_device_info d = h100();
    sale_key open = sale_key_default(SALE_FAMILY_ATTEND), out;
    unsigned long n0 = db_op_count(ctx->db);
    cr_assert_eq(win_lookup(ctx, &d, &open, 16384, &out), 0, "nothing stored");
    unsigned long n1 = db_op_count(ctx->db);
    cr_assert_gt(n1, n0, "the first lookup asks SQLite");
    for (int i = 0; i < 100; i++)
        cr_assert_eq(win_lookup(ctx, &d, &open, 16384 - i, &out), 0);
    cr_assert_eq(db_op_count(ctx->db), n1, "\"no winner\" is remembered too");
    sale_key w = sale_key_default(SALE_FAMILY_ATTEND);
    w.arch = 90;
    w.warps = 2;
    w.stages = 3;
    cr_assert_eq(win_save(ctx, &d, &open, 16384, &w, 1.0, 1.0, 2), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(win_lookup(ctx, &d, &open, 16384, &out), 1, "a saved winner is seen at once");
    cr_assert_eq(out.warps, 2);
    unsigned long n2 = db_op_count(ctx->db);
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(win_lookup(ctx, &d, &open, 9000 + i, &out), 1);
        cr_assert_eq(out.warps, 2);
    }
    cr_assert_eq(db_op_count(ctx->db), n2, "a found winner is remembered");
    /* another device is another memo entry (and gets nothing) */
    sale_device_info x = d;
    x.sm_count = 114;
    cr_assert_eq(win_lookup(ctx, &x, &open, 16384, &out), 0);
    cr_assert_gt(db_op_count(ctx->db), n2);
}

Test(host, compile_is_cached_in_sqlite_and_counted)
{
    /* the counter sees the SQLite calls of the cold path: a resolved key
     * compiled once, then served by the cache (one lookup per call) */
    sale_key k = sale_key_default(SALE_FAMILY_DENSE);
    k.arch = 90;
    k.head_dim = 64;
    sale_kernel_info info;
    cr_assert_eq(sale_compile(ctx, &k, &info), SALE_OK, "%s", sale_last_error(ctx));
    unsigned long n0 = db_op_count(ctx->db);
    cr_assert_eq(sale_compile(ctx, &k, &info), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(info.from_cache, 1);
    cr_assert_eq(db_op_count(ctx->db) - n0, 1, "a cached kernel is one lookup");
}

/* ---------------------------------------------------------------- errors */

typedef struct err_job {
    sale_ctx *ctx;
    int id, bad;
} err_job;

static void *err_worker(void *p)
{
    err_job *j = p;
    char want[64];
    snprintf(want, sizeof want, "thread %d failed", j->id);
    for (int i = 0; i < 20000; i++) {
        sale_set_error(j->ctx, "thread %d failed", j->id);
        if (strcmp(sale_last_error(j->ctx), want))
            j->bad++;
    }
    return NULL;
}

Test(host, one_threads_error_never_overwrites_anothers)
{
    pthread_t th[4];
    err_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (err_job){ctx, i, 0};
        pthread_create(&th[i], NULL, err_worker, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(jobs[i].bad, 0, "thread %d read another thread's message", i);
    }
    cr_assert_str_eq(sale_last_error(ctx), "", "the main thread had no error");
}

Test(host, errors_belong_to_their_context)
{
    sale_ctx *other;
    sale_options o = {0};
    o.cache_path = ":memory:";
    cr_assert_eq(sale_create(&other, &o), SALE_OK);
    sale_set_error(ctx, "first");
    sale_set_error(other, "second");
    cr_assert_str_eq(sale_last_error(ctx), "first");
    cr_assert_str_eq(sale_last_error(other), "second");
    /* an argument may be the current message itself */
    sale_set_error(ctx, "%s, again", sale_last_error(ctx));
    cr_assert_str_eq(sale_last_error(ctx), "first, again");
    sale_destroy(other);
    cr_assert_eq(sale_create(&other, &o), SALE_OK);
    cr_assert_str_eq(sale_last_error(other), "", "a new context (maybe at the same address) starts clean");
    sale_destroy(other);
}

/* ---------------------------------------------------- parameters, no sync */

Test(host, thresholds_fit_the_parameter_block)
{
    cr_assert_leq(sizeof(sale_params), 4096, "kernel parameter space is 4 KB on every driver");
    cr_assert_eq(offsetof(sale_params, tau_inline) % 8, 0);
    cr_assert_geq(SALE_TAU_INLINE, 128, "Llama-405B and DeepSeek have 128 query heads");
}

static char *slurp(const char *rel)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", SALE_SOURCE_DIR, rel);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

static int count(const char *s, const char *what)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

Test(host, attention_waits_only_where_the_caller_asked_for_host_results)
{
    char *s = slurp("src/attention.c");
    /* stats (read_stats) is the only stream sync; phase_ms the only event
     * sync besides a workspace that must grow; no pageable copy to the
     * device, no allocation of device memory outside ws_acquire */
    cr_assert_eq(count(s, "StreamSynchronize("), 1, "one stream sync: read_stats");
    cr_assert_eq(count(s, "CtxSynchronize("), 0);
    cr_assert_eq(count(s, "MemcpyHtoD"), 0, "thresholds travel in the parameter block");
    cr_assert_eq(count(s, "EventSynchronize("), 2, "phase_ms, and growing a workspace");
    cr_assert_eq(count(s, "MemAlloc("), 2, "ws_acquire: grow and new");
    const char *rs = strstr(s, "static sale_status read_stats(");
    const char *sync = strstr(s, "StreamSynchronize(");
    const char *next = rs ? strstr(rs + 1, "\nstatic ") : NULL;
    cr_assert(rs && sync > rs && (!next || sync < next), "the stream sync is inside read_stats");
    free(s);
}

/* ------------------------------------------------------------ dense_below */

Test(host, dense_below_is_where_sale_starts_to_pay)
{
    int lens[5] = {1024, 2048, 4096, 8192, 16384};
    double ms[5][3] = {{0.3, 0.35, 0.1}, {0.5, 0.45, 0.3}, {0.7, 0.8, 0.9}, {1.5, 1.4, 3.0}, {4, 3.5, 11}};
    cr_assert_eq(tune_pick_dense_below(lens, 5, ms), 4096);
    double never[5][3] = {{1, 1, 0.5}, {1, 1, 0.5}, {1, 1, 0.5}, {1, 1, 0.5}, {1, 1, 0.5}};
    cr_assert_eq(tune_pick_dense_below(lens, 5, never), 32768);
    double always[5][3] = {{0.1, 1, 0.5}, {0.1, 1, 0.5}, {0.1, 1, 0.5}, {0.1, 1, 0.5}, {0.1, 1, 0.5}};
    cr_assert_eq(tune_pick_dense_below(lens, 5, always), 1024, "unmeasured below the smallest length: dense");
    /* a dip in the middle does not count: SALE must pay from there on */
    double dip[5][3] = {{0.1, 1, 0.5}, {1, 1, 0.5}, {0.1, 1, 0.5}, {0.1, 1, 0.5}, {0.1, 1, 0.5}};
    cr_assert_eq(tune_pick_dense_below(lens, 5, dip), 4096);
    for (int a = 80; a <= 89; a++)
        if (a == 80 || a == 86 || a == 89)
            cr_assert_eq(win_dense_below_default(a), 1024, "unmeasured archs keep 1024 (sm_%d)", a);
    /* measured on the H200 with the rows attend kernel: two-pass even with dense at 16K, ahead above */
    cr_assert_eq(win_dense_below_default(90), 16384);
    cr_assert_eq(win_dense_below_default(SALE_ARCH_SM90A), 16384);
}

Test(host, stored_dense_below_is_a_winner_row)
{
    sale_device_info d = h100();
    cr_assert_eq(win_dense_below_save(ctx, &d, 4096, 0), SALE_OK, "%s", sale_last_error(ctx));
    db_tuned_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.device, sizeof r.device, "%s", d.name);
    snprintf(r.arch, sizeof r.arch, "sm_90");
    r.sm_count = d.sm_count;
    r.driver_version = d.driver_version;
    snprintf(r.key, sizeof r.key, "%s", WIN_DENSE_BELOW_KEY);
    snprintf(r.bucket, sizeof r.bucket, "all");
    cr_assert_eq(db_tuned_get(ctx->db, &r, NULL, 0), 1);
    cr_assert_str_eq(r.winner, "4096");
    /* and it never disturbs the tile winners' nearest-bucket search */
    sale_key open = sale_key_default(SALE_FAMILY_FUSED), out;
    cr_assert_eq(win_lookup(ctx, &d, &open, 16384, &out), 0);
}

/* ---------------------------------------------------------------- layers */

static void no_tuner_includes_in(const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", SALE_SOURCE_DIR, dir);
    DIR *dp = opendir(path);
    cr_assert_not_null(dp, "%s", path);
    struct dirent *e;
    while ((e = readdir(dp))) {
        size_t n = strlen(e->d_name);
        if (n < 3 || (strcmp(e->d_name + n - 2, ".c") && strcmp(e->d_name + n - 2, ".h")))
            continue;
        if (!strcmp(dir, "src") && !strncmp(e->d_name, "cli_", 4))
            continue; /* the CLI sits on top of everything */
        if (!strcmp(dir, "src") && !strcmp(e->d_name, "main.c"))
            continue;
        char rel[512];
        snprintf(rel, sizeof rel, "%s/%s", dir, e->d_name);
        char *s = slurp(rel);
        cr_expect_eq(strstr(s, "#include \"tune.h\""), NULL, "%s includes tuner/tune.h: the tuner sits on top", rel);
        free(s);
    }
    closedir(dp);
}

Test(host, library_folders_never_include_the_tuner)
{
    no_tuner_includes_in("src");
    no_tuner_includes_in("db");
}

/* The CLI (src/main.c, src/cli_*.c) reads and changes the cache through the
 * public API (src/cache.c), never through the context's db handle. */
Test(host, cli_reaches_the_cache_only_through_the_library)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/src", SALE_SOURCE_DIR);
    DIR *dp = opendir(path);
    cr_assert_not_null(dp, "%s", path);
    struct dirent *e;
    int files = 0;
    while ((e = readdir(dp))) {
        size_t n = strlen(e->d_name);
        if (n < 3 || strcmp(e->d_name + n - 2, ".c"))
            continue;
        if (strcmp(e->d_name, "main.c") && strncmp(e->d_name, "cli_", 4))
            continue;
        char rel[512];
        snprintf(rel, sizeof rel, "src/%s", e->d_name);
        char *s = slurp(rel);
        files++;
        cr_expect_eq(strstr(s, "ctx->db"), NULL, "%s reaches into ctx->db: use the sale_cache_* functions", rel);
        cr_expect_eq(strstr(s, "#include \"db.h\""), NULL, "%s includes db/db.h: the CLI sits on the library", rel);
        cr_expect_eq(strstr(s, "#include \"internal.h\""), NULL, "%s includes src/internal.h", rel);
        free(s);
    }
    closedir(dp);
    cr_expect_geq(files, 2, "main.c and cli_tune.c at least");
}

/* An attention call naming (model, layer) reads the stored thresholds once per
 * context; storing new ones through the context is seen by the next call. */
Test(host, named_thresholds_are_read_once_and_follow_a_store)
{
    float put[4] = {0.001f, 0.002f, 0.0f, 0.008f}, got[4];
    cr_assert_eq(sale_thresholds_put(ctx, "memo-model", 3, put, 4, NULL), SALE_OK, "%s", sale_last_error(ctx));
    sale_attention_args a;
    sale_attention_args_init(&a);
    a.heads_q = 4;
    a.model = "memo-model";
    a.layer = 3;
    cr_assert_eq(thresholds_resolve(ctx, &a, got, NULL), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert(memcmp(got, put, sizeof put) == 0);
    unsigned long n0 = db_op_count(ctx->db);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(thresholds_resolve(ctx, &a, got, NULL), SALE_OK);
    cr_assert_eq(db_op_count(ctx->db), n0, "a warm (model, layer) lookup makes no SQLite call");
    cr_assert(memcmp(got, put, sizeof put) == 0);
    put[1] = 0.004f;
    cr_assert_eq(sale_thresholds_put(ctx, "memo-model", 3, put, 4, NULL), SALE_OK);
    cr_assert_eq(thresholds_resolve(ctx, &a, got, NULL), SALE_OK);
    cr_assert_float_eq(got[1], 0.004f, 0, "a store through the context is seen at once");
    a.layer = 4;
    cr_assert_eq(thresholds_resolve(ctx, &a, got, NULL), SALE_ERR_NOT_FOUND, "a missing layer is still an error");
}

/* sale_attention refuses a call whose thr is not the variant its stored
 * thresholds were calibrated with before it looks for a device (so the
 * refusal is the same with and without a GPU, and nothing is launched: the
 * pointers here are never dereferenced). */
Test(host, attention_refuses_a_variant_its_thresholds_were_not_calibrated_with)
{
    float tau[2] = {0.004f, 0.002f};
    sale_threshold_meta m = {.budget = 0.02, .samples = 2, .density = -1, .error = -1, .thr = SALE_THR_FIXED};
    cr_assert_eq(sale_thresholds_put(ctx, "variant-model", 0, tau, 2, &m), SALE_OK, "%s", sale_last_error(ctx));
    sale_attention_args a;
    sale_attention_args_init(&a);
    a.batch = 1, a.heads_q = 2, a.heads_kv = 1, a.seq_len = 4096, a.head_dim = 128, a.dtype = SALE_DTYPE_BF16;
    a.q = a.k = a.v = (void *)(uintptr_t)0x1000, a.out = (void *)(uintptr_t)0x2000;
    a.model = "variant-model", a.layer = 0, a.thr = SALE_THR_RUN;
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "calibrated with thr=fixed and this call asks for thr=run"), "%s",
              sale_last_error(ctx));
    int thr = -1;
    a.thr = 0;
    float got[2] = {-1.f, -1.f};
    cr_assert_eq(thresholds_variant(ctx, &a, &thr, got), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(thr, SALE_THR_FIXED, "thr 0 takes the stored variant");
    cr_assert(got[0] == tau[0] && got[1] == tau[1], "the resolved taus come back: %g %g", got[0], got[1]);
    cr_assert_eq(thresholds_variant(ctx, &a, &thr, NULL), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(thr, SALE_THR_FIXED);
    a.tau = tau; /* explicit taus: the stored ones (and their variant) are not consulted */
    got[0] = got[1] = -1.f;
    cr_assert_eq(thresholds_variant(ctx, &a, &thr, got), SALE_OK);
    cr_assert_eq(thr, 0);
    cr_assert(got[0] == -1.f && got[1] == -1.f, "explicit taus: the buffer is left as it was");
    a.tau = NULL, a.layer = 1; /* no thresholds for the layer: NOT_FOUND, also before any device */
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_NOT_FOUND);
}

/* Past 256 query heads sale_attention reads the stored thresholds into a heap
 * buffer (the call's taus, read once): the variant check and a missing layer
 * behave as for few heads, before any device, and thresholds_variant hands
 * back every head's tau. */
Test(host, attention_with_more_than_256_heads_reads_stored_thresholds_once)
{
    enum { H = 300 };
    float tau[H], got[H];
    for (int h = 0; h < H; h++)
        tau[h] = 0.001f * (float)(1 + h % 7), got[h] = -1.f;
    sale_threshold_meta m = {.budget = 0.02, .samples = 2, .density = -1, .error = -1, .thr = SALE_THR_FIXED};
    cr_assert_eq(sale_thresholds_put(ctx, "wide-model", 0, tau, H, &m), SALE_OK, "%s", sale_last_error(ctx));
    sale_attention_args a;
    sale_attention_args_init(&a);
    a.batch = 1, a.heads_q = H, a.heads_kv = 4, a.seq_len = 4096, a.head_dim = 128, a.dtype = SALE_DTYPE_BF16;
    a.q = a.k = a.v = (void *)(uintptr_t)0x1000, a.out = (void *)(uintptr_t)0x2000;
    a.model = "wide-model", a.layer = 0, a.thr = SALE_THR_RUN;
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "calibrated with thr=fixed"), "%s", sale_last_error(ctx));
    int thr = -1;
    a.thr = 0;
    cr_assert_eq(thresholds_variant(ctx, &a, &thr, got), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(thr, SALE_THR_FIXED);
    for (int h = 0; h < H; h++)
        cr_assert(got[h] == tau[h], "head %d: %g, stored %g", h, got[h], tau[h]);
    a.layer = 1; /* no thresholds for the layer */
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_NOT_FOUND);
}
