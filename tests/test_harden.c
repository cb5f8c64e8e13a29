/* test_harden.c — issue 12: wrong data never served silently, the user's
 * files never harmed, sandbox limits that cannot be escaped, and the small
 * argument checks. Each test failed on the code before the fix. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "internal.h"
#include "safetensors.h"
#include "sale.h"

static char g_dir[256];
static char g_err[1024];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) {
    (void)st, (void)flag, (void)f;
    return remove(p);
}
static void setup_dir(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/sale_test_harden_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}
static void teardown_dir(void) { nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }
TestSuite(harden, .init = setup_dir, .fini = teardown_dir, .timeout = 240);

static const char *in_dir(const char *name) {
    static char buf[8][512];
    static int i;
    char *b = buf[i++ % 8];
    snprintf(b, 512, "%s/%s", g_dir, name);
    return b;
}

static db_kernel_row mkrow(const char *key, uint64_t h, size_t bytes, unsigned seed) {
    db_kernel_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.key, sizeof r.key, "%s", key);
    snprintf(r.arch, sizeof r.arch, "sm_80");
    snprintf(r.entry, sizeof r.entry, "e");
    r.src_hash = h;
    r.registers = 32;
    r.threads = 128;
    r.cubin = malloc(bytes);
    r.cubin_bytes = bytes;
    for (size_t i = 0; i < bytes; i++) r.cubin[i] = (unsigned char)(seed * 31 + i * 7);
    return r;
}

static void put(db *d, const char *key, uint64_t h, size_t bytes, unsigned seed) {
    db_kernel_row r = mkrow(key, h, bytes, seed);
    cr_assert_eq(db_kernel_put(d, &r, g_err, sizeof g_err), 0, "%s", g_err);
    db_row_free(&r);
}

static unsigned char *slurp(const char *p, size_t *n) {
    FILE *f = fopen(p, "rb");
    cr_assert_not_null(f, "%s", p);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz);
    cr_assert_eq(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static void spit(const char *p, const void *b, size_t n) {
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

static int logged;
static void count_log(void *u, int level, const char *msg) {
    (void)u;
    if (level >= 2) logged++, fprintf(stderr, "log: %s\n", msg);
}

/* ------------------------------------------------ 1. wrong row served */

/* The index entry of keyAAAA is made to point at keyBBBB's rowid. */
Test(harden, damaged_key_index_never_serves_another_keys_row) {
    const char *p = in_dir("k.db");
    db *d = NULL;
    cr_assert_eq(db_open(&d, p, NULL, NULL, NULL, g_err, sizeof g_err), 0, "%s", g_err);
    put(d, "dummy", 5, 300, 1);   /* rowid 1 */
    put(d, "keyAAAA", 5, 300, 2); /* rowid 2 */
    put(d, "keyBBBB", 5, 300, 3); /* rowid 3 */
    db_close(d);
    size_t n;
    unsigned char *img = slurp(p, &n);
    /* index record: key text, arch text, src_hash (1 byte), rowid (1 byte) */
    static const char pat[] = "keyAAAAsm_80\x05\x02";
    int planted = 0;
    for (size_t i = 0; i + sizeof pat - 1 <= n; i++)
        if (memcmp(img + i, pat, sizeof pat - 1) == 0) {
            img[i + sizeof pat - 2] = 3;
            planted++;
        }
    cr_assert_eq(planted, 1, "the index entry of keyAAAA was found once");
    spit(p, img, n);
    free(img);
    logged = 0;
    cr_assert_eq(db_open(&d, p, NULL, count_log, NULL, g_err, sizeof g_err), 0, "quick_check passes: %s", g_err);
    db_kernel_row out;
    memset(&out, 0, sizeof out);
    int r = db_kernel_get(d, "keyAAAA", "sm_80", 5, &out, g_err, sizeof g_err);
    if (r == 1) {
        cr_assert_str_eq(out.key, "keyAAAA", "the wrong kernel was served");
        db_kernel_row want = mkrow("keyAAAA", 5, 300, 2);
        cr_assert_eq(memcmp(out.cubin, want.cubin, 300), 0, "the cubin of another key was served");
        db_row_free(&want);
        db_row_free(&out);
    }
    cr_assert_geq(logged, 1, "the damage is reported through the log");
    int rb = db_kernel_get(d, "keyBBBB", "sm_80", 5, &out, g_err, sizeof g_err);
    cr_assert_eq(rb, 1, "r=%d rb=%d %s", r, rb, g_err);
    cr_assert_str_eq(out.key, "keyBBBB");
    db_row_free(&out);
    db_close(d);
}

Test(harden, verify_runs_integrity_check_and_finds_a_damaged_index) {
    const char *p = in_dir("k.db");
    db *d = NULL;
    cr_assert_eq(db_open(&d, p, NULL, NULL, NULL, g_err, sizeof g_err), 0);
    put(d, "dummy", 5, 300, 1);
    put(d, "keyAAAA", 5, 300, 2);
    put(d, "keyBBBB", 5, 300, 3);
    db_close(d);
    size_t n;
    unsigned char *img = slurp(p, &n);
    static const char pat[] = "keyAAAAsm_80\x05\x02";
    for (size_t i = 0; i + sizeof pat - 1 <= n; i++)
        if (memcmp(img + i, pat, sizeof pat - 1) == 0) img[i + sizeof pat - 2] = 3;
    spit(p, img, n);
    free(img);
    cr_assert_eq(db_open(&d, p, NULL, NULL, NULL, g_err, sizeof g_err), 0);
    int checked = 0, bad = 0;
    cr_assert_eq(db_verify(d, &checked, &bad, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_gt(bad, 0, "verify says %d bad of %d", bad, checked);
    cr_assert_eq(db_verify(d, &checked, &bad, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(bad, 0, "the index was rebuilt");
    db_close(d);
}

/* A flipped metadata bit (threads) is caught by the row hash. */
Test(harden, flipped_metadata_is_never_served) {
    const char *p = in_dir("k.db");
    db *d = NULL;
    cr_assert_eq(db_open(&d, p, NULL, NULL, NULL, g_err, sizeof g_err), 0);
    put(d, "k", 5, 300, 2);
    sqlite3 *c;
    cr_assert_eq(sqlite3_open(p, &c), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(c, "UPDATE kernels SET threads = 129", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(c);
    db_kernel_row out;
    memset(&out, 0, sizeof out);
    cr_assert_eq(db_kernel_get(d, "k", "sm_80", 5, &out, g_err, sizeof g_err), 0);
    db_close(d);
}

/* Every bit of the index page and of a table page, flipped in turn: no
 * lookup ever returns a row whose key (or bytes) differ from the request. */
Test(harden, every_bit_flip_of_a_page_never_serves_a_wrong_kernel, .timeout = 600) {
    char p[600];
    snprintf(p, sizeof p, "%s", in_dir("k.db"));
    sqlite3 *c;
    cr_assert_eq(sqlite3_open(p, &c), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(c, "PRAGMA page_size=512; VACUUM;", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(c);
    db *d = NULL;
    cr_assert_eq(db_open(&d, p, NULL, NULL, NULL, g_err, sizeof g_err), 0, "%s", g_err);
    const char *keys[] = {"kA", "kB", "kC"};
    for (int i = 0; i < 3; i++) put(d, keys[i], 5, 40, (unsigned)i + 1);
    db_close(d);
    cr_assert_eq(sqlite3_open(p, &c), SQLITE_OK);
    int pages[2] = {0, 0};
    sqlite3_stmt *s;
    cr_assert_eq(sqlite3_prepare_v2(c, "SELECT rootpage FROM sqlite_master WHERE name IN "
                                       "('sqlite_autoindex_kernels_1', 'kernels') ORDER BY name",
                                    -1, &s, NULL),
                 SQLITE_OK);
    for (int i = 0; i < 2 && sqlite3_step(s) == SQLITE_ROW; i++) pages[i] = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(c);
    size_t n;
    unsigned char *img = slurp(p, &n);
    long flips = 0, served = 0, misses = 0, errors = 0, refused = 0, wrong = 0;
    for (int pg = 0; pg < 2; pg++) {
        cr_assert_gt(pages[pg], 1);
        size_t off = (size_t)(pages[pg] - 1) * 512;
        cr_assert_leq(off + 512, n);
        for (size_t bit = 0; bit < 512 * 8; bit++) {
            img[off + bit / 8] ^= (unsigned char)(1u << (bit % 8));
            spit(p, img, n);
            img[off + bit / 8] ^= (unsigned char)(1u << (bit % 8));
            flips++;
            if (db_open(&d, p, NULL, NULL, NULL, g_err, sizeof g_err) != 0) {
                if (refused++ < 3) printf("refused: %s\n", g_err);
                continue;
            }
            for (int k = 0; k < 3; k++) {
                db_kernel_row out;
                memset(&out, 0, sizeof out);
                int r = db_kernel_get(d, keys[k], "sm_80", 5, &out, g_err, sizeof g_err);
                if (r == 1) {
                    served++;
                    db_kernel_row want = mkrow(keys[k], 5, 40, (unsigned)k + 1);
                    if (strcmp(out.key, keys[k]) || out.cubin_bytes != 40 || memcmp(out.cubin, want.cubin, 40) ||
                        out.threads != 128 || out.registers != 32 || strcmp(out.entry, "e"))
                        wrong++;
                    db_row_free(&want);
                    db_row_free(&out);
                } else if (r == 0) {
                    misses++;
                } else {
                    errors++;
                }
            }
            db_close(d);
            /* anything moved aside or rebuilt goes before the next flip */
            DIR *dh = opendir(g_dir);
            struct dirent *e;
            while (dh && (e = readdir(dh)))
                if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "k.db"))
                    unlink(in_dir(e->d_name));
            if (dh) closedir(dh);
        }
    }
    free(img);
    printf("bit flips: %ld tried (index page %d, table page %d of 512 B); opens refused %ld; lookups: %ld served "
           "(all checked), %ld missed, %ld errors; wrong kernels served: %ld\n",
           flips, pages[0], pages[1], refused, served, misses, errors, wrong);
    fflush(stdout);
    cr_assert_eq(wrong, 0, "%ld wrong kernels served", wrong);
    cr_assert_eq(flips, 2 * 512 * 8);
}

/* ------------------------------------------------ 2. overflow */

static sale_ctx *mem_ctx(void) {
    sale_options o;
    memset(&o, 0, sizeof o);
    o.cache_path = ":memory:";
    sale_ctx *ctx = NULL;
    cr_assert_eq(sale_create(&ctx, &o), SALE_OK);
    return ctx;
}

Test(harden, reference_refuses_shapes_whose_task_count_overflows) {
    sale_ctx *ctx = mem_ctx();
    sale_attention_args a;
    sale_attention_args_init(&a);
    static float dummy[16];
    a.batch = 65536, a.heads_q = 65537, a.heads_kv = 1, a.seq_len = 16, a.head_dim = 64;
    a.dtype = SALE_DTYPE_F32;
    a.q = a.k = a.v = a.out = dummy;
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "overflow") != NULL, "%s", sale_last_error(ctx));
    sale_destroy(ctx);
}

Test(harden, block_counts_and_workspace_size_do_not_wrap) {
    sale_attention_args a;
    sale_attention_args_init(&a);
    a.seq_len = INT_MAX;
    cr_assert_gt(sale_num_qblocks(&a), 0);
    cr_assert_gt(sale_num_kblocks(&a), 0);
    sale_ctx *ctx = mem_ctx();
    a.batch = 1 << 20, a.heads_q = 1 << 10, a.heads_kv = 1, a.head_dim = 128, a.dtype = SALE_DTYPE_BF16;
    size_t bytes = 1;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &bytes), SALE_ERR_INVALID);
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, NULL), SALE_ERR_INVALID);
    sale_destroy(ctx);
}

/* ------------------------------------------------ 3, 4. the user's files */

Test(harden, export_refuses_a_device_or_a_foreign_file_and_deletes_nothing_beside_it) {
    db *d = NULL;
    cr_assert_eq(db_open(&d, in_dir("k.db"), NULL, NULL, NULL, g_err, sizeof g_err), 0);
    put(d, "k", 5, 100, 1);
    cr_assert_eq(db_export(d, "/dev/null", NULL, 0, g_err, sizeof g_err), -1);
    struct stat st;
    cr_assert_eq(stat("/dev/null", &st), 0);
    cr_assert(S_ISCHR(st.st_mode), "/dev/null is still a device");
    const char *notes = in_dir("notes.txt");
    spit(notes, "mine\n", 5);
    spit(in_dir("notes.txt-wal"), "also mine\n", 10);
    spit(in_dir("notes.txt.tmp"), "mine too\n", 9);
    cr_assert_eq(db_export(d, notes, NULL, 0, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "not a sale cache") != NULL, "%s", g_err);
    cr_assert_eq(access(in_dir("notes.txt-wal"), F_OK), 0);
    cr_assert_eq(access(in_dir("notes.txt.tmp"), F_OK), 0);
    size_t n;
    unsigned char *b = slurp(notes, &n);
    cr_assert_eq(n, 5);
    free(b);
    cr_assert_eq(db_export_ex(d, notes, NULL, 0, DB_EXPORT_FORCE, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_eq(access(in_dir("notes.txt.tmp"), F_OK), 0, "a dest.tmp we did not create is left alone");
    cr_assert_eq(db_export(d, in_dir("fleet.db"), NULL, 0, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_eq(db_export(d, in_dir("fleet.db"), NULL, 0, g_err, sizeof g_err), 1, "a sale cache is replaced: %s",
                 g_err);
    db_close(d);
}

Test(harden, open_refuses_a_device_node_and_creates_nothing) {
    db *d = NULL;
    cr_assert_eq(db_open(&d, "/dev/null", NULL, NULL, NULL, g_err, sizeof g_err), -1);
    cr_assert_neq(access("/dev/null-journal", F_OK), 0);
    char p[600];
    snprintf(p, sizeof p, "%s/deep/dir/k.db", g_dir);
    cr_assert_eq(db_open_ex(&d, p, NULL, DB_OPEN_NO_CREATE, NULL, NULL, g_err, sizeof g_err), -1);
    cr_assert_neq(access(in_dir("deep"), F_OK), 0, "no directory made");
}

/* (only copies that are sale caches are ever deleted: db.c's prune; a copy
 * that shows no trace of one is kept, test_db) */
Test(harden, moved_aside_copies_are_pruned_to_the_three_newest) {
    const char *p = in_dir("kernels.db");
    /* the copies: a real (empty) sale cache's bytes */
    const char *tpl = in_dir("template.db");
    db *t = NULL;
    cr_assert_eq(db_open(&t, tpl, NULL, NULL, NULL, g_err, sizeof g_err), 0, "%s", g_err);
    db_close(t);
    FILE *tf = fopen(tpl, "rb");
    cr_assert_not_null(tf);
    static char cache_bytes[1 << 20];
    size_t nb = fread(cache_bytes, 1, sizeof cache_bytes, tf);
    fclose(tf);
    cr_assert_gt(nb, 0);
    for (int i = 0; i < 5; i++) {
        char q[600];
        snprintf(q, sizeof q, "%s.corrupt-%d", p, 1000 + i);
        spit(q, cache_bytes, nb);
        struct timespec ts[2] = {{1000 + i, 0}, {1000 + i, 0}};
        utimensat(AT_FDCWD, q, ts, 0);
    }
    spit(p, "junk junk junk junk", 19);
    db *d = NULL;
    cr_assert_eq(db_open_ex(&d, p, NULL, DB_OPEN_DEFAULT_PATH, NULL, NULL, g_err, sizeof g_err), 0, "%s", g_err);
    db_close(d);
    int n = 0;
    DIR *dh = opendir(g_dir);
    struct dirent *e;
    while ((e = readdir(dh))) n += strstr(e->d_name, ".corrupt-") && !strstr(e->d_name, "-wal") && !strstr(e->d_name, "-shm");
    closedir(dh);
    /* the three newest sale copies, and the junk just moved aside (no sale cache: never deleted) */
    cr_assert_eq(n, 4, "%d copies kept", n);
    char q[600];
    snprintf(q, sizeof q, "%s.corrupt-1000", p);
    cr_assert_neq(access(q, F_OK), 0, "the oldest copies go");
    snprintf(q, sizeof q, "%s.corrupt-1001", p);
    cr_assert_neq(access(q, F_OK), 0, "the oldest copies go");
    snprintf(q, sizeof q, "%s.corrupt-1002", p);
    cr_assert_eq(access(q, F_OK), 0, "the three newest stay");
    snprintf(q, sizeof q, "%s.corrupt-1004", p);
    cr_assert_eq(access(q, F_OK), 0, "the newest old copy stays");
}

/* ------------------------------------------------ 5, 6. Lua sandbox */

static sale_status load_cfg(const char *text, double *secs) {
    sale_config cfg;
    cfg_defaults_init(&cfg);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sale_status st = cfg_load_string("t.lua", text, &cfg, g_err, sizeof g_err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (secs) *secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    cfg_free(&cfg);
    return st;
}

Test(harden, pcall_cannot_catch_the_time_limit, .timeout = 60) {
    double t;
    sale_status st = load_cfg("for i=1,1e12 do pcall(function() while true do end end) end", &t);
    cr_assert_neq(st, SALE_OK);
    cr_assert(strstr(g_err, "limit exceeded") != NULL, "%s", g_err);
    st = load_cfg("for i=1,1e12 do xpcall(function() while true do end end, function(e) return e end) end", &t);
    cr_assert_neq(st, SALE_OK);
    cr_assert(strstr(g_err, "limit exceeded") != NULL, "%s", g_err);
    cr_assert_lt(t, 30);
}

Test(harden, pathological_patterns_are_refused, .timeout = 60) {
    double t;
    sale_status st = load_cfg("local x = string.rep('a', 3000):find('.-.-.-.-b')", &t);
    cr_assert_neq(st, SALE_OK);
    cr_assert(strstr(g_err, "limit exceeded") != NULL, "%s", g_err);
    st = load_cfg("local x = ('a'):rep(3000):match('.-.-.-.-b')", &t);
    cr_assert_neq(st, SALE_OK);
    cr_assert_lt(t, 10);
    /* ordinary use still works */
    cr_assert_eq(load_cfg("local s = ('  x  '):match('^%s*(.-)%s*$'); assert(s == 'x')\n"
                          "assert(('a.b'):find('.', 1, true) == 2)",
                          NULL),
                 SALE_OK, "%s", g_err);
}

/* C calls that would never return: no hook fires inside them, so each is
 * bounded before it starts or refused (before: each ran for hours). */
Test(harden, c_calls_that_would_never_return_end_at_once, .timeout = 120) {
    static const char *const shapes[] = {
        "local t = setmetatable({}, {__index = table.concat}); local s = table.concat(t, '', 1, 2^40)",
        "table.move({}, 1, 2^40, 1, {})",
        "local t = setmetatable({}, {__len = function() return 2^40 end}); table.insert(t, 1, 0)",
        "local t = setmetatable({}, {__len = function() return 2^40 end}); table.remove(t, 1)",
        "table.sort(setmetatable({}, {__len = function() return 2^31 - 2 end, __index = rawlen, __newindex = rawequal}))",
        "setmetatable({}, {__gc = function() while true do end end})", /* finalizers run with hooks off */
        "local co = coroutine.wrap(function() return table.move({}, 1, 2^50, 1) end); co()",
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        double t;
        cr_assert_neq(load_cfg(shapes[i], &t), SALE_OK, "%s", shapes[i]);
        cr_assert(strstr(g_err, "limit exceeded") || strstr(g_err, "not available in the config sandbox"), "%s: %s",
                  shapes[i], g_err);
        cr_assert_lt(t, 3, "%s: %.1f s", shapes[i], t);
    }
    /* ("").rep(2^60) is "", at once */
    double t;
    cr_assert_eq(load_cfg("assert(string.rep('', 2^60) == '' and (''):rep(2^60, '') == '')", &t), SALE_OK, "%s", g_err);
    cr_assert_lt(t, 3);
    /* the wrapped functions still do their work */
    cr_assert_eq(load_cfg("local t = {3, 1, 2}; table.sort(t); table.insert(t, 4); table.insert(t, 1, 0)\n"
                          "assert(table.remove(t) == 4 and table.remove(t, 1) == 0)\n"
                          "assert(table.concat(t, ',') == '1,2,3' and table.concat(t, ',', 2, 3) == '2,3')\n"
                          "assert(table.move(t, 1, 3, 2, {})[4] == 3 and table.move(t, 1, 3, 1, {})[3] == 3)\n"
                          "assert(('ab'):rep(3, '-') == 'ab-ab-ab')",
                          NULL),
                 SALE_OK, "%s", g_err);
}

/* Memory-heavy C calls stop at the allocator's cap. */
Test(harden, memory_heavy_c_calls_hit_the_memory_limit, .timeout = 60) {
    static const char *const shapes[] = {
        "local s = string.rep('x', 2^30)",
        "local s = ('x'):rep(1e9)",
        "local t = {} for i = 1, 3e6 do t[i] = 'x' end local s = table.concat(t)",
        "local s = string.format('%s', ('x'):rep(1e9))",
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        double t;
        cr_assert_neq(load_cfg(shapes[i], &t), SALE_OK, "%s", shapes[i]);
        cr_assert(strstr(g_err, "memory limit exceeded") != NULL, "%s: %s", shapes[i], g_err);
        cr_assert_lt(t, 5, "%s: %.1f s", shapes[i], t);
    }
}

/* Time burnt inside C calls that do return (through C metamethods, C
 * comparators, big string work, long pattern scans, inside a coroutine):
 * the wall clock stops each at about 5 s. Before: the clock was read only
 * every 1000 VM instructions, minutes or hours apart here. */
static void expect_wall_clock(const char *text) {
    double t;
    cr_assert_neq(load_cfg(text, &t), SALE_OK, "%s", text);
    cr_assert(strstr(g_err, "t.lua") == g_err && strstr(g_err, "limit exceeded: wall-clock 5 s") != NULL, "%s: %s",
              text, g_err);
    cr_assert_lt(t, 9, "%s: %.1f s", text, t);
    cr_assert_gt(t, 4.5, "%s: %.1f s", text, t);
}
Test(harden, wall_clock_covers_c_metamethod_calls, .timeout = 60) {
    expect_wall_clock("local t = setmetatable({}, {__index = table.concat})\n"
                      "for i = 1, 1e9 do table.concat(t, '', 1, 4e6) end");
}
Test(harden, wall_clock_covers_c_comparators, .timeout = 60) {
    expect_wall_clock("local t = {} for i = 1, 1e6 do t[i] = (i * 7919) % 1000003 end\n"
                      "for k = 1, 1e9 do table.sort(t, math.ult) end");
}
Test(harden, wall_clock_covers_big_string_work, .timeout = 60) {
    expect_wall_clock("for i = 1, 1e9 do local s = ('x'):rep(2e7):upper() end");
}
Test(harden, wall_clock_covers_long_pattern_scans, .timeout = 60) {
    expect_wall_clock("local s = ('x'):rep(6000)\nfor i = 1, 1e9 do local a = s:find('.-y') end");
}
Test(harden, wall_clock_covers_coroutines_and_pcall, .timeout = 60) {
    expect_wall_clock("local t = setmetatable({}, {__index = table.concat})\n"
                      "for i = 1, 1e9 do pcall(coroutine.wrap(function() table.concat(t, '', 1, 4e6) end)) end");
}

Test(harden, returned_table_is_read_as_the_settings) {
    sale_config cfg;
    cfg_defaults_init(&cfg);
    cr_assert_eq(cfg_load_string("t.lua", "return { defaults = { block_q = 128 } }", &cfg, g_err, sizeof g_err),
                 SALE_OK, "%s", g_err);
    cr_assert_eq(cfg.defaults.block_q, 128);
    cfg_free(&cfg);
    cfg_defaults_init(&cfg);
    cr_assert_neq(cfg_load_string("t.lua", "return { bogus = 1 }", &cfg, g_err, sizeof g_err), SALE_OK);
    cr_assert_neq(cfg_load_string("t.lua", "return 42", &cfg, g_err, sizeof g_err), SALE_OK);
    cfg_free(&cfg);
}

Test(harden, environment_metatable_and_rawset_cannot_bypass_the_checks) {
    cr_assert_neq(load_cfg("setmetatable(_G, {})", NULL), SALE_OK);
    cr_assert_neq(load_cfg("rawset(_G, 'fleet', { archs = { 'sm_90' } })", NULL), SALE_OK);
    cr_assert(strstr(g_err, "rawset") != NULL, "%s", g_err);
    cr_assert_neq(load_cfg("rawset(_G, 'bogus', 1)", NULL), SALE_OK);
    cr_assert_eq(load_cfg("local t = {}; rawset(t, 'a', 1)", NULL), SALE_OK, "%s", g_err);
}

/* ------------------------------------------------ 7. duplicates */

Test(harden, fleet_lists_are_deduplicated_and_bounded) {
    cfg_fleet f;
    memset(&f, 0, sizeof f);
    for (int i = 0; i < 16; i++) f.archs[i] = 90, f.head_dims[i] = 128;
    f.n_archs = f.n_head_dims = 16;
    f.families[0] = SALE_FAMILY_FUSED, f.n_families = 1;
    f.dtypes[0] = SALE_DTYPE_BF16, f.n_dtypes = 1;
    f.block_qs[0] = 64, f.n_block_qs = 1;
    f.block_ks[0] = 32, f.n_block_ks = 1;
    f.block_segs[0] = 128, f.n_block_segs = 1;
    f.local_windows[0] = 128, f.n_local_windows = 1;
    cr_assert_eq(cfg_fleet_normalize(&f, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(f.n_archs, 1);
    cr_assert_eq(f.n_head_dims, 1);
    for (int i = 0; i < 16; i++) f.block_qs[i] = 16 * (i + 1), f.block_ks[i] = 16 * (i + 1),
                                 f.block_segs[i] = 16 * (i + 1), f.local_windows[i] = 16 * (i + 1);
    f.n_block_qs = f.n_block_ks = f.n_block_segs = f.n_local_windows = 16;
    cr_assert_eq(cfg_fleet_normalize(&f, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "combinations") != NULL, "%s", g_err);
}

/* ------------------------------------------------ 9. claims */

Test(harden, future_dated_claim_is_stale) {
    const char *p = in_dir("k.db");
    db *d = NULL;
    cr_assert_eq(db_open(&d, p, NULL, NULL, NULL, g_err, sizeof g_err), 0);
    sqlite3 *c;
    cr_assert_eq(sqlite3_open(p, &c), SQLITE_OK);
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO claims VALUES ('k', 'sm_80', 5, 1, 'another-host', %lld)",
             (long long)time(NULL) + 100000);
    cr_assert_eq(sqlite3_exec(c, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(c);
    cr_assert_eq(db_claim(d, "k", "sm_80", 5, DB_CLAIM_STALE_S, g_err, sizeof g_err), 1, "%s", g_err);
    db_close(d);
}

/* A live-looking claim held elsewhere: the waiter says what it waits for
 * and whom, and waits as long as a claim takes to turn stale (one number,
 * $SALE_CLAIM_STALE_S here), then takes it over and compiles. Before: 60 s
 * of silence against a 300 s staleness. */
static char g_log[8192];
static void collect_log(void *user, sale_log_level level, const char *msg) {
    (void)user, (void)level;
    size_t n = strlen(g_log);
    snprintf(g_log + n, sizeof g_log - n, "%s\n", msg);
}
Test(harden, claim_wait_is_logged_and_ends_when_the_claim_turns_stale, .timeout = 120) {
    setenv("SALE_CLAIM_STALE_S", "2", 1);
    cr_assert_eq(db_claim_stale_s(), 2);
    const char *p = in_dir("claims.db");
    sale_options o = {.cache_path = p, .log = collect_log};
    sale_ctx *ctx = NULL;
    cr_assert_eq(sale_create(&ctx, &o), SALE_OK, "%s", ctx ? sale_last_error(ctx) : "");
    sale_key k;
    char e[256], text[256];
    cr_assert_eq(sale_key_parse("quantize:d=64,dt=bf16,arch=sm_90", &k, e, sizeof e), SALE_OK, "%s", e);
    sale_key r = k;
    cr_assert_eq(sale_key_resolve(&r, e, sizeof e), SALE_OK, "%s", e);
    sale_key_format(&r, text, sizeof text);
    char *src = jit_build_source(&r);
    cr_assert_not_null(src);
    uint64_t h = jit_source_hash(&r, src);
    free(src);
    sqlite3 *c;
    cr_assert_eq(sqlite3_open(p, &c), SQLITE_OK);
    char sql[512];
    snprintf(sql, sizeof sql, "INSERT INTO claims VALUES ('%s', 'sm_90', %lld, 4242, 'another-host', %lld)", text,
             (long long)h, (long long)time(NULL));
    cr_assert_eq(sqlite3_exec(c, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(c));
    sqlite3_close(c);
    g_log[0] = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sale_kernel_info info;
    cr_assert_eq(sale_compile(ctx, &k, &info), SALE_OK, "%s", sale_last_error(ctx));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double t = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    cr_assert_eq(info.from_cache, 0);
    cr_assert(strstr(g_log, "waiting (up to 2 s)") && strstr(g_log, text) && strstr(g_log, "pid 4242@another-host"),
              "%s", g_log);
    cr_assert(strstr(g_log, "taking over a stale claim") != NULL, "%s", g_log);
    cr_assert_gt(t, 1.5, "%.1f s", t);
    cr_assert_lt(t, 30, "%.1f s", t);
    /* the waiting line is said once, not every poll */
    cr_assert_eq(strstr(strstr(g_log, "waiting (up to") + 1, "waiting (up to"), NULL, "%s", g_log);
    sale_destroy(ctx);
    unsetenv("SALE_CLAIM_STALE_S");
    cr_assert_eq(db_claim_stale_s(), DB_CLAIM_STALE_S);
}

/* ------------------------------------------------ 10. arguments */

Test(harden, null_out_pointers_return_a_status) {
    cr_assert_eq(sale_create(NULL, NULL), SALE_ERR_INVALID);
    cr_assert_eq(sale_nvrtc_version(NULL), SALE_ERR_INVALID);
}

Test(harden, keys_refuse_duplicate_fields_and_zero) {
    sale_key k;
    char e[256];
    cr_assert_eq(sale_key_parse("fused:d=64,d=128", &k, e, sizeof e), SALE_ERR_INVALID);
    cr_assert(strstr(e, "twice") != NULL, "%s", e);
    cr_assert_eq(sale_key_parse("fused:d=64,head_dim=128", &k, e, sizeof e), SALE_ERR_INVALID);
    cr_assert_eq(sale_key_parse("fused:d=0", &k, e, sizeof e), SALE_ERR_INVALID);
    cr_assert_eq(sale_key_parse("fused:d=*", &k, e, sizeof e), SALE_OK, "%s", e);
    cr_assert_eq(sale_key_parse("fused:d=128,bq=64", &k, e, sizeof e), SALE_OK, "%s", e);
}

Test(harden, reference_and_gpu_path_agree_on_tau_and_validate_before_the_device) {
    sale_ctx *ctx = mem_ctx();
    sale_attention_args a;
    sale_attention_args_init(&a);
    static float q[64 * 64], o[64 * 64];
    a.batch = 1, a.heads_q = 1, a.heads_kv = 1, a.seq_len = 64, a.head_dim = 64, a.dtype = SALE_DTYPE_F32;
    a.q = a.k = a.v = q;
    a.out = o;
    a.tau_default = 5;
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_ERR_INVALID);
    a.tau_default = 0.004f;
    a.dtype = SALE_DTYPE_BF16;
    a.block_q = 24; /* not a multiple of 16 */
    a.seq_len = 4096;
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    sale_destroy(ctx);
}

/* ------------------------------------------------ hostile-input audit */

/* Runs a Lua script (text) with `sale run` semantics; g_err gets the error. */
static sale_status run_lua(const char *text) {
    const char *p = in_dir("s.lua");
    spit(p, text, strlen(text));
    sale_ctx *ctx = mem_ctx();
    g_err[0] = 0;
    sale_status st = lsale_run_script(ctx, p, 0, NULL, g_err, sizeof g_err);
    sale_destroy(ctx);
    return st;
}

/* A tensor whose byte size wrapped size_t got a small buffer that t:get and
 * the reference indexed past (SEGV); N = 2^32 + 64 became 64, a mask index
 * 2^32 became 0, layer 2^32 read layer 0, and B * Hq * needles overflowed. */
Test(harden, lua_sizes_and_indices_beyond_int_are_refused_not_wrapped) {
    cr_assert_eq(run_lua("local ok, e = pcall(sale.tensor_zeros,\n"
                         "  {B = 65536, H = 65536, N = 65536, D = 65536, dtype = 'f32'})\n"
                         "assert(not ok and e:find('too large'), tostring(e))\n"
                         "ok, e = pcall(sale.tensor_random, {N = 4294967360, D = 64})\n"
                         "assert(not ok and e:find('N: 4294967360 is out of range'), tostring(e))\n"
                         "ok, e = pcall(sale.tensor_zeros, {N = 1e300, D = 64})\n"
                         "assert(not ok and e:find('out of range'), tostring(e))\n"
                         "local q, k, v = sale.generate{N = 128, D = 64, Hq = 1, Hkv = 1, dtype = 'f32'}\n"
                         "local _, _, m = sale.reference{q = q, k = k, v = v}\n"
                         "assert(m:kept(0, 0, 0, 0))\n"
                         "ok, e = pcall(m.kept, m, 4294967296, 0, 0, 0)\n"
                         "assert(not ok and e:find('out of range'), tostring(e))\n"
                         "ok, e = pcall(sale.thresholds, 'm', 4294967296)\n"
                         "assert(not ok and e:find('out of range'), tostring(e))\n"
                         "ok, e = pcall(sale.generate,\n"
                         "  {B = 2048, Hq = 2048, Hkv = 2048, N = 1, D = 1, needles = 1048576})\n"
                         "assert(not ok and e:find('too large'), tostring(e))\n"),
                 SALE_OK, "%s", g_err);
}

/* S x Hq x N x D x 4 wrapped size_t (2^74 -> 0): the layer buffers were
 * malloc(0) and the generator wrote into them. */
Test(harden, calibrate_refuses_a_shape_whose_buffers_overflow) {
    sale_ctx *ctx = mem_ctx();
    sale_calibrate_options o;
    sale_calibrate_options_init(&o);
    o.model = "m";
    o.device = SALE_CALIBRATE_CPU;
    o.dry_run = 1;
    o.gen.layers = 1, o.gen.samples = 1 << 20, o.gen.heads_q = 4096, o.gen.heads_kv = 4096;
    o.gen.seq_len = 1 << 20, o.gen.head_dim = 1 << 20;
    sale_calibrate_result r;
    cr_assert_eq(sale_calibrate(ctx, &o, &r), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "too large") != NULL, "%s", sale_last_error(ctx));
    sale_destroy(ctx);
}

static void st_raw(const char *path, const char *header, size_t data_bytes) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    uint64_t hl = strlen(header);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hl >> (8 * i));
    cr_assert_eq(fwrite(len8, 1, 8, f), 8);
    cr_assert_eq(fwrite(header, 1, hl, f), hl);
    for (size_t i = 0; i < data_bytes; i++) fputc(0, f);
    fclose(f);
}

/* q, k and v over one byte range were read as three tensors (calibrated on
 * nonsense, silently); a field given twice was taken as its last value. */
Test(harden, safetensors_overlapping_tensors_and_repeated_fields_are_refused) {
    const char *p = in_dir("layer_000.safetensors");
    st_file sf;
    st_raw(p, "{\"q\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"k\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16);
    cr_assert_eq(st_open(&sf, p, g_err, sizeof g_err), -1, "overlap accepted");
    cr_assert(strstr(g_err, "overlap") != NULL, "%s", g_err);
    st_raw(p, "{\"q\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"k\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24);
    cr_assert_eq(st_open(&sf, p, g_err, sizeof g_err), -1, "partial overlap accepted");
    cr_assert(strstr(g_err, "overlap") != NULL, "%s", g_err);
    st_raw(p, "{\"q\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16],\"dtype\":\"I32\"}}", 16);
    cr_assert_eq(st_open(&sf, p, g_err, sizeof g_err), -1, "repeated dtype accepted");
    cr_assert(strstr(g_err, "'dtype' appears twice") != NULL, "%s", g_err);
    st_raw(p, "{\"__metadata__\":{},\"__metadata__\":{}}", 0);
    cr_assert_eq(st_open(&sf, p, g_err, sizeof g_err), -1, "repeated __metadata__ accepted");
    st_raw(p, "{\"q\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"q\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    cr_assert_eq(st_open(&sf, p, g_err, sizeof g_err), -1, "repeated name accepted");
    cr_assert(strstr(g_err, "'q' appears twice") != NULL, "%s", g_err);
    /* adjacent tensors, empty ones anywhere: fine */
    st_raw(p, "{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
              "\"q\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"k\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
    cr_assert_eq(st_open(&sf, p, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(sf.n, 3);
    st_close(&sf);
}

/* Names were checked pairwise while parsing: a 6 MB header of 100000 empty
 * tensors took about 35 s (the format allows 100 MB: hours). */
Test(harden, safetensors_header_of_many_tensors_parses_in_linear_time, .timeout = 120) {
    enum { N = 100000 };
    char *h = malloc((size_t)N * 64 + 16);
    cr_assert_not_null(h);
    size_t o = 0;
    h[o++] = '{';
    for (int i = 0; i < N; i++)
        o += (size_t)sprintf(h + o, "%s\"t%07d\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}",
                             i ? "," : "", i);
    h[o++] = '}';
    h[o] = 0;
    const char *p = in_dir("many.safetensors");
    st_raw(p, h, 0);
    free(h);
    st_file sf;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(st_open(&sf, p, g_err, sizeof g_err), 0, "%s", g_err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double t = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    cr_assert_eq(sf.n, N);
    st_close(&sf);
    cr_assert_lt(t, 5, "%.1f s", t);
}

/* A FIFO as the fleet file or the import source blocked the open forever;
 * a directory read as "disk I/O error". */
Test(harden, fleet_or_import_source_that_is_no_file_is_refused_at_once, .timeout = 60) {
    const char *fifo = in_dir("fifo");
    cr_assert_eq(mkfifo(fifo, 0644), 0);
    db *d = NULL;
    cr_assert_eq(db_open(&d, in_dir("k.db"), fifo, NULL, NULL, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "not a regular file") && strstr(g_err, fifo), "%s", g_err);
    cr_assert_eq(db_open(&d, in_dir("k.db"), g_dir, NULL, NULL, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "not a regular file") != NULL, "%s", g_err);
    cr_assert_eq(db_open(&d, in_dir("k.db"), NULL, NULL, NULL, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(db_import(d, fifo, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "not a regular file") != NULL, "%s", g_err);
    cr_assert_eq(db_import(d, g_dir, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "not a regular file") != NULL, "%s", g_err);
    db_close(d);
}

/* sale_thresholds_put stored any meta: a NaN budget, a negative sample
 * count, a density of 7 read back by `sale ls --thresholds` as measured. */
Test(harden, thresholds_put_refuses_meta_that_is_not_a_measurement) {
    const char *p = in_dir("m.db");
    sale_options o = {.cache_path = p};
    sale_ctx *ctx = NULL;
    cr_assert_eq(sale_create(&ctx, &o), SALE_OK);
    const float tau[2] = {0.004f, 0.002f};
    const sale_threshold_meta good = {.budget = 0.02, .samples = 3, .created = 1700000000, .density = -1, .error = -1,
                                      .thr = SALE_THR_FIXED};
    cr_assert_eq(sale_thresholds_put(ctx, "m", 0, tau, 2, &good), SALE_OK, "%s", sale_last_error(ctx));
    sale_threshold_meta bad[6];
    for (int i = 0; i < 6; i++)
        bad[i] = good;
    bad[0].budget = NAN;
    bad[1].samples = -1;
    bad[2].density = 7;
    bad[3].error = INFINITY;
    bad[4].budget_abs = 2;
    bad[5].created = -5;
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(sale_thresholds_put(ctx, "m", 1, tau, 2, &bad[i]), SALE_ERR_INVALID, "meta %d accepted", i);
        cr_assert(strstr(sale_last_error(ctx), "meta:") != NULL, "%s", sale_last_error(ctx));
    }
    float back[2];
    cr_assert_eq(sale_thresholds_get(ctx, "m", 1, back, 2, NULL), SALE_ERR_NOT_FOUND, "a refused put stored layer 1");
    sale_destroy(ctx);
}

/* A fleet file that cannot be opened is named as the fault, not the
 * writable cache beside it ("cannot open the kernel cache k.db: ... fleet"). */
Test(harden, a_bad_fleet_file_is_named_as_the_fault) {
    const char *junk = in_dir("fleet.db");
    spit(junk, "not a database at all, just text", 32);
    sale_options o = {.cache_path = in_dir("k.db"), .fleet_path = junk};
    sale_ctx *ctx = NULL;
    cr_assert_eq(sale_create(&ctx, &o), SALE_ERR_CACHE);
    cr_assert_not_null(ctx);
    const char *e = sale_last_error(ctx);
    cr_assert(strstr(e, "cannot open the fleet file") == e && strstr(e, junk), "%s", e);
    cr_assert(strstr(e, "k.db") == NULL, "%s", e);
    sale_destroy(ctx);
}

/* Config: layer [2^32] was stored as layer 0; error({}) gave "(error object
 * is not a string)" without the file; a directory as --config said "Illegal
 * seek" (a stale errno). */
Test(harden, config_layer_beyond_int_error_objects_and_directories_are_named) {
    cr_assert_neq(load_cfg("thresholds = { m = { [4294967296] = { 0.1 } } }", NULL), SALE_OK);
    cr_assert(strstr(g_err, "layers must be integers") != NULL, "%s", g_err);
    cr_assert_neq(load_cfg("error({})", NULL), SALE_OK);
    cr_assert(strstr(g_err, "t.lua") == g_err && strstr(g_err, "table"), "%s", g_err);
    char path[1024];
    errno = ESPIPE;
    cr_assert_eq(cfg_find(g_dir, path, sizeof path, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "directory") != NULL, "%s", g_err);
    const char *fifo = in_dir("cfg.fifo");
    cr_assert_eq(mkfifo(fifo, 0644), 0);
    errno = ESPIPE;
    cr_assert_eq(cfg_find(fifo, path, sizeof path, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "not a regular file") != NULL, "%s", g_err);
}

/* ------------------------------------------------ public API audit (no GPU) */

static sale_attention_args small_args(void) {
    sale_attention_args a;
    sale_attention_args_init(&a);
    a.batch = 1, a.heads_q = 2, a.heads_kv = 1, a.seq_len = 256, a.head_dim = 64, a.dtype = SALE_DTYPE_BF16;
    return a;
}

/* The kept-block mask [B][Hq][nqb][nkw] grows with seq_len squared; the
 * shape check bounded only the linear sizes, so at B 512, Hq 1024, N 2^30 the
 * mask's 2^65 bytes wrapped and the workspace size came back as 1.5e17: a
 * caller's workspace of that size passed the size check and the select would
 * write past it. */
Test(harden, workspace_size_refuses_a_mask_that_wraps_size_t) {
    sale_ctx *ctx = mem_ctx();
    sale_attention_args a = small_args();
    a.batch = 512, a.heads_q = 1024, a.heads_kv = 1024, a.seq_len = 1 << 30;
    size_t bytes = 1;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &bytes), SALE_ERR_INVALID, "%zu bytes", bytes);
    cr_assert(strstr(sale_last_error(ctx), "mask") != NULL, "%s", sale_last_error(ctx));
    cr_assert_eq(bytes, 0);
    static char buf[64] __attribute__((aligned(16)));
    a.q = a.k = a.v = a.out = buf;
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "mask") != NULL, "%s", sale_last_error(ctx));
    /* a shape that fits still has its size */
    a = small_args();
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &bytes), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_gt(bytes, 0);
    sale_destroy(ctx);
}

/* seq_len near INT_MAX: block and chunk counts (N + 255 in
 * sale_layout_mean_chunks, N + block_q - 1 in the reference) overflowed int
 * (UBSan) and a size came back; sale_attention said NO_DEVICE. */
Test(harden, seq_len_whose_block_counts_wrap_int_is_refused) {
    sale_ctx *ctx = mem_ctx();
    sale_attention_args a = small_args();
    a.heads_q = 1, a.seq_len = INT_MAX;
    size_t bytes = 1;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &bytes), SALE_ERR_INVALID, "%zu bytes", bytes);
    cr_assert(strstr(sale_last_error(ctx), "seq_len") != NULL, "%s", sale_last_error(ctx));
    static char buf[64] __attribute__((aligned(16)));
    a.q = a.k = a.v = a.out = buf;
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "seq_len") != NULL, "%s", sale_last_error(ctx));
    static float f[256 * 64];
    a.dtype = SALE_DTYPE_F32;
    a.q = a.k = a.v = a.out = f;
    a.seq_len = INT_MAX - 10;
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "seq_len") != NULL, "%s", sale_last_error(ctx));
    /* the reference takes any multiple of 16 as block_k: N + block_k wrapped too */
    a.seq_len = 64;
    a.block_k = a.block_seg = a.local_window = INT_MAX - 15;
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "seq_len") != NULL, "%s", sale_last_error(ctx));
    sale_destroy(ctx);
}

/* Strides whose offsets pass int64: the reference computed N * row stride
 * (UBSan: signed overflow) and, with batch stride 2^62 in f32, read batch 1
 * at q + 2^64 bytes = q (batch 0's data, silently, SALE_OK); sale_attention
 * took them and said NO_DEVICE. */
Test(harden, strides_past_64_bit_offsets_are_refused_naming_the_tensor) {
    sale_ctx *ctx = mem_ctx();
    static float f[2 * 2 * 256 * 64];
    sale_attention_args a = small_args();
    a.dtype = SALE_DTYPE_F32;
    a.batch = 2;
    a.q = a.k = a.v = a.out = f;
    a.q_stride[0] = (int64_t)1 << 62;
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "q_stride") != NULL && strstr(sale_last_error(ctx), "64-bit"), "%s",
              sale_last_error(ctx));
    a.q_stride[0] = 0;
    a.v_stride[2] = (int64_t)1 << 60; /* the head stride N * 2^60 wraps */
    cr_assert_eq(sale_reference_attention(ctx, &a), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "v_stride") != NULL && strstr(sale_last_error(ctx), "64-bit"), "%s",
              sale_last_error(ctx));
    static char buf[64] __attribute__((aligned(16)));
    a = small_args();
    a.q = a.k = a.v = a.out = buf;
    a.batch = 2;
    a.o_stride[0] = (int64_t)1 << 62;
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "o_stride") != NULL, "%s", sale_last_error(ctx));
    a.o_stride[0] = 0;
    a.k_stride[2] = (int64_t)1 << 60;
    size_t bytes;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &bytes), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "k_stride") != NULL, "%s", sale_last_error(ctx));
    /* a legal non-contiguous layout ([B, N, H, D] through strides) still passes the checks */
    a.k_stride[2] = 0;
    a.q_stride[0] = 256 * 2 * 64, a.q_stride[1] = 64, a.q_stride[2] = 2 * 64;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &bytes), SALE_OK, "%s", sale_last_error(ctx));
    sale_destroy(ctx);
}

/* sale_attention_workspace_size checked the shape but not the keys: block_q
 * 7, est_bits 3 or tile_warps 1000 got a size (SALE_OK) that sale_attention
 * then refused. */
Test(harden, workspace_size_checks_the_keys_as_attention_does) {
    sale_ctx *ctx = mem_ctx();
    size_t bytes = 1;
    sale_attention_args a = small_args();
    a.block_q = 7;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &bytes), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "block_q") != NULL, "%s", sale_last_error(ctx));
    a = small_args();
    a.est_bits = 3;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &bytes), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "est_bits") != NULL, "%s", sale_last_error(ctx));
    a = small_args();
    a.mode = SALE_MODE_FUSED, a.dense_below = -1, a.tile_warps = 1000;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &bytes), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "warps") != NULL, "%s", sale_last_error(ctx));
    a = small_args();
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &bytes), SALE_OK, "%s", sale_last_error(ctx));
    sale_destroy(ctx);
}

/* A workspace, mask or lse pointer the kernels cannot store through (odd
 * addresses) went to the device (NO_DEVICE here; a misaligned-address fault
 * there). */
Test(harden, misaligned_workspace_mask_and_lse_are_refused_before_the_device) {
    sale_ctx *ctx = mem_ctx();
    static char buf[64] __attribute__((aligned(16)));
    sale_attention_args a = small_args();
    a.q = a.k = a.v = a.out = buf;
    a.workspace = buf + 8, a.workspace_bytes = 1 << 30;
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "workspace") != NULL, "%s", sale_last_error(ctx));
    a.workspace = NULL, a.workspace_bytes = 0;
    a.mask = (uint32_t *)(void *)(buf + 2);
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "mask") != NULL, "%s", sale_last_error(ctx));
    a.mask = NULL;
    a.lse = (float *)(void *)(buf + 1);
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "lse") != NULL, "%s", sale_last_error(ctx));
    sale_destroy(ctx);
}

/* NULL out-parameters of the device calls: device_count, event_create and
 * kernel_function_named wrote through them (SEGV, no GPU needed); the others
 * looked for the driver first (NO_DEVICE here, a write through NULL with a
 * GPU). */
Test(harden, null_out_pointers_of_device_calls_are_refused_before_the_driver) {
    sale_ctx *ctx = mem_ctx();
    cr_assert_eq(sale_device_count(ctx, NULL), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "count") != NULL, "%s", sale_last_error(ctx));
    cr_assert_eq(sale_event_create(ctx, NULL), SALE_ERR_INVALID);
    cr_assert_eq(sale_kernel_function_named(ctx, NULL, "x", NULL), SALE_ERR_INVALID);
    cr_assert_eq(sale_device_info_get(ctx, 0, NULL), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "info") != NULL, "%s", sale_last_error(ctx));
    cr_assert_eq(sale_dev_alloc(ctx, 16, NULL), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "dptr") != NULL, "%s", sale_last_error(ctx));
    cr_assert_eq(sale_event_record(ctx, NULL, NULL), SALE_ERR_INVALID);
    cr_assert_eq(sale_event_elapsed(ctx, NULL, NULL, NULL), SALE_ERR_INVALID);
    float ms;
    cr_assert_eq(sale_event_elapsed(NULL, NULL, NULL, &ms), SALE_ERR_INVALID, "no context either");
    sale_destroy(ctx);
}

/* sale_get_kernel looked for the device before the key: arch 9999 or
 * block_q 7 said NO_DEVICE (here) instead of naming the field. */
Test(harden, get_kernel_names_a_bad_key_before_looking_for_a_device) {
    sale_ctx *ctx = mem_ctx();
    sale_kernel *k = (sale_kernel *)1;
    sale_key key = sale_key_default(SALE_FAMILY_FUSED);
    key.arch = 9999;
    cr_assert_eq(sale_get_kernel(ctx, &key, &k), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "arch") != NULL, "%s", sale_last_error(ctx));
    cr_assert_null(k);
    key = sale_key_default(SALE_FAMILY_FUSED);
    key.block_q = 7;
    cr_assert_eq(sale_get_kernel(ctx, &key, &k), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "block_q") != NULL, "%s", sale_last_error(ctx));
    int n = 0;
    if (sale_device_count(ctx, &n) != SALE_OK || n == 0) {
        key = sale_key_default(SALE_FAMILY_FUSED); /* open, arch current: valid */
        cr_assert_eq(sale_get_kernel(ctx, &key, &k), SALE_ERR_NO_DEVICE, "%s", sale_last_error(ctx));
    }
    sale_destroy(ctx);
}

/* A fleet_path of 1024 bytes or more was cut to 1023 (cache_path is
 * refused): the error named a path the caller never gave ("cannot open the
 * fleet file <first 1023 bytes>", SALE_ERR_CACHE) and, where the file system
 * and SQLite take such paths, the context would read another file. */
Test(harden, an_over_long_fleet_path_is_refused_not_cut_short) {
    char longer[1500];
    int n = snprintf(longer, sizeof longer, "%s/", g_dir);
    memset(longer + n, 'f', sizeof longer - 1 - (size_t)n);
    longer[sizeof longer - 1] = 0;
    sale_options o = {.cache_path = ":memory:", .fleet_path = longer};
    sale_ctx *ctx = NULL;
    cr_assert_eq(sale_create(&ctx, &o), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "fleet_path") != NULL, "%s", sale_last_error(ctx));
    sale_destroy(ctx);
}

/* An out whose rows or heads share addresses (o_stride[1] = 8 with head_dim
 * 64) was accepted on the GPU path: the CTAs of two heads would write over
 * each other, a race and a wrong result served silently. Legal layouts,
 * [B, N, H, D] through strides included, still pass. */
Test(harden, an_out_whose_elements_share_addresses_is_refused) {
    sale_ctx *ctx = mem_ctx();
    sale_attention_args a = small_args();
    size_t bytes;
    a.batch = 2;
    const int64_t bad[][3] = {
        {0, 8, 0},                /* heads 8 elements apart, rows of 64 */
        {0, 64, 64},              /* heads and rows on one step */
        {0, 0, 0},                /* (contiguous: fine, checked below) */
        {64 * 256, 64 * 256, 0},  /* batch on the head step */
        {0, 256 * 64, 128},       /* rows 128 apart: head 0's row 128 is head 1's row 0... */
    };
    const int want_bad[] = {1, 1, 0, 1, 1};
    for (int i = 0; i < 5; i++) {
        memcpy(a.o_stride, bad[i], sizeof a.o_stride);
        sale_status st = sale_attention_workspace_size(ctx, &a, &bytes);
        if (want_bad[i]) {
            cr_assert_eq(st, SALE_ERR_INVALID, "o_stride %d accepted", i);
            cr_assert(strstr(sale_last_error(ctx), "o_stride") && strstr(sale_last_error(ctx), "one address"), "%s",
                      sale_last_error(ctx));
        } else
            cr_assert_eq(st, SALE_OK, "%s", sale_last_error(ctx));
    }
    /* [B, N, H, D] and a padded row: distinct, accepted */
    const int64_t good[][3] = {{256 * 2 * 64, 64, 2 * 64}, {2 * 256 * 72, 256 * 72, 72}, {0, 0, 64}};
    for (int i = 0; i < 3; i++) {
        memcpy(a.o_stride, good[i], sizeof a.o_stride);
        cr_assert_eq(sale_attention_workspace_size(ctx, &a, &bytes), SALE_OK, "layout %d: %s", i,
                     sale_last_error(ctx));
    }
    sale_destroy(ctx);
}

/* A negative layer is no layer: sale_thresholds_put refused it (INVALID),
 * sale_thresholds_get and sale_attention answered NOT_FOUND, a miss. */
Test(harden, a_negative_layer_is_invalid_for_get_as_for_put) {
    sale_ctx *ctx = mem_ctx();
    float tau[2];
    cr_assert_eq(sale_thresholds_get(ctx, "m", -1, tau, 2, NULL), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "layer") != NULL, "%s", sale_last_error(ctx));
    sale_attention_args a = small_args();
    a.model = "m", a.layer = -3;
    size_t bytes;
    cr_assert_eq(sale_attention_workspace_size(ctx, &a, &bytes), SALE_OK, "%s", sale_last_error(ctx));
    static char buf[256 * 2 * 64 * 2] __attribute__((aligned(16)));
    a.q = a.k = a.v = buf;
    a.out = buf; /* the refusal comes before anything is read or written */
    cr_assert_eq(sale_attention(ctx, &a, NULL), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "layer -3") != NULL, "%s", sale_last_error(ctx));
    sale_destroy(ctx);
}

/* An empty cache_path came back as SALE_ERR_CACHE ("db_open: no path
 * given"): it is the caller's field, named and INVALID. */
Test(harden, an_empty_cache_path_is_invalid_and_named) {
    sale_options o = {.cache_path = ""};
    sale_ctx *ctx = NULL;
    cr_assert_eq(sale_create(&ctx, &o), SALE_ERR_INVALID);
    cr_assert_not_null(ctx);
    cr_assert(strstr(sale_last_error(ctx), "cache_path: empty") != NULL, "%s", sale_last_error(ctx));
    sale_destroy(ctx);
}

/* Finite inputs whose scores overflow float32 (q = k ~ 1e19): the dense
 * output every error is judged against was NaN, NaN / NaN scored as error
 * 0, and calibrate stored a tau that "met" the budget. Now the layer is
 * refused, saying why, and nothing is stored. */
Test(harden, calibrate_refuses_a_layer_whose_dense_output_is_not_finite) {
    enum { S = 1, H = 2, N = 256, D = 64 };
    static float q[S * H * N * D], v[S * H * N * D];
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < S * H * N * D; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        q[i] = (float)((double)(x >> 11) / 9007199254740992.0 - 0.5) * 4e19f;
        v[i] = (float)((double)(x >> 13) / 2251799813685248.0 - 0.5);
    }
    char d[600];
    snprintf(d, sizeof d, "%s/nan_in", g_dir);
    cr_assert_eq(mkdir(d, 0755), 0);
    char path[700], err[512];
    snprintf(path, sizeof path, "%s/layer_000.safetensors", d);
    st_out t[3] = {{"q", SALE_DTYPE_F32, 4, {S, H, N, D}, q},
                   {"k", SALE_DTYPE_F32, 4, {S, H, N, D}, q},
                   {"v", SALE_DTYPE_F32, 4, {S, H, N, D}, v}};
    cr_assert_eq(st_write(path, t, 3, err, sizeof err), 0, "%s", err);
    sale_ctx *ctx = mem_ctx();
    sale_calibrate_options o;
    sale_calibrate_options_init(&o);
    o.model = "overflow";
    o.device = SALE_CALIBRATE_CPU;
    o.input_dir = d;
    sale_calibrate_result r;
    cr_assert_eq(sale_calibrate(ctx, &o, &r), SALE_ERR_INVALID, "%s", sale_last_error(ctx));
    cr_assert(strstr(sale_last_error(ctx), "not finite") && strstr(sale_last_error(ctx), "layer 0"), "%s",
              sale_last_error(ctx));
    float tau = -1;
    cr_assert_eq(sale_thresholds_get(ctx, "overflow", 0, &tau, 1, NULL), SALE_ERR_NOT_FOUND, "a tau was stored: %g", tau);
    sale_destroy(ctx);
}

/* sale_last_error is "valid until this thread's next call on the context",
 * for any number of contexts. Each thread kept 8 (context, message) slots
 * and evicted one when a 9th context failed: the evicted context's message
 * was lost and a pointer its caller held was freed (ASan: heap-use-after-
 * free). Here 40 contexts fail in turn, and every message, read through the
 * pointer taken right after its failure, is still its own at the end; then
 * contexts made, failed and destroyed 2,000 times leave the live ones'
 * messages alone, and a new context starts with no message. */
Test(harden, every_context_keeps_its_last_error_however_many_fail) {
    enum { NC = 40 };
    sale_ctx *c[NC];
    const char *held[NC];
    sale_options o = {.cache_path = ":memory:"};
    for (int i = 0; i < NC; i++)
        cr_assert_eq(sale_create(&c[i], &o), SALE_OK);
    for (int i = 0; i < NC; i++) {
        char model[32];
        snprintf(model, sizeof model, "model-%d", i);
        float t;
        cr_assert_eq(sale_thresholds_get(c[i], model, i, &t, 1, NULL), SALE_ERR_NOT_FOUND);
        held[i] = sale_last_error(c[i]);
        cr_assert(strstr(held[i], model) != NULL, "%s", held[i]);
    }
    for (int r = 0; r < 2000; r++) {
        sale_ctx *x;
        cr_assert_eq(sale_create(&x, &o), SALE_OK);
        cr_assert_str_empty(sale_last_error(x), "a new context sees an old message");
        float t;
        cr_assert_eq(sale_thresholds_get(x, "transient", 0, &t, 1, NULL), SALE_ERR_NOT_FOUND);
        sale_destroy(x);
    }
    for (int i = 0; i < NC; i++) {
        char model[32];
        snprintf(model, sizeof model, "model-%d", i);
        cr_assert_eq(sale_last_error(c[i]), held[i], "context %d's message moved", i);
        cr_assert(strstr(held[i], model) != NULL, "context %d: %s", i, held[i]);
        cr_assert(strstr(sale_last_error(c[i]), model) != NULL, "context %d: %s", i, sale_last_error(c[i]));
    }
    for (int i = 0; i < NC; i++)
        sale_destroy(c[i]);
}

/* A context whose sale_create failed (a directory as its cache) answered
 * later calls with internals ("db_kernel_get: missing argument"), a miss
 * ("looked in /tmp") or "the context has no cache file" (the C API audit).
 * Each now says sale_create failed on it, with that failure's reason. */
Test(harden, a_context_whose_create_failed_says_so_on_every_call) {
    sale_options o = {.cache_path = g_dir};
    sale_ctx *c = NULL;
    cr_assert_eq(sale_create(&c, &o), SALE_ERR_CACHE);
    cr_assert_not_null(c);
    char first[1024];
    snprintf(first, sizeof first, "%s", sale_last_error(c));
    cr_assert(strstr(first, "not a regular file") != NULL, "%s", first);
    sale_key k = sale_key_default(SALE_FAMILY_QUANTIZE);
    k.arch = 80;
    float t;
    int rows;
    sale_kernel *kern;
    const sale_status st[] = {sale_compile(c, &k, NULL), sale_thresholds_get(c, "m", 0, &t, 1, NULL),
                              sale_cache_clear(c, &rows), sale_get_kernel(c, &k, &kern)};
    const char *what[] = {"sale_compile", "sale_thresholds_get", "clear", "sale_get_kernel"};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(st[i], SALE_ERR_CACHE, "%s: %d", what[i], st[i]);
    }
    /* the last call's message (sale_get_kernel), and each call's in turn */
    cr_assert_eq(sale_thresholds_get(c, "m", 0, &t, 1, NULL), SALE_ERR_CACHE);
    const char *e = sale_last_error(c);
    cr_assert(strstr(e, "sale_create failed") && strstr(e, "not a regular file") && strstr(e, "sale_destroy"), "%s", e);
    cr_assert_eq(sale_compile(c, &k, NULL), SALE_ERR_CACHE);
    e = sale_last_error(c);
    cr_assert(strstr(e, "sale_compile") && strstr(e, "sale_create failed") && !strstr(e, "db_kernel_get"), "%s", e);
    sale_destroy(c);
}

/* An over-long $SALE_CACHE_DIR was reported as "no $SALE_CACHE_DIR,
 * $XDG_CACHE_HOME or $HOME" (it is set); and a cache path near the 1023-byte
 * limit cut SQLite's reason off the end of the message (the C API audit). */
Test(harden, long_cache_paths_are_named_and_their_reasons_kept) {
    char *old = getenv("SALE_CACHE_DIR") ? strdup(getenv("SALE_CACHE_DIR")) : NULL;
    char longdir[1200];
    memset(longdir, 'x', sizeof longdir - 1);
    longdir[0] = '/';
    longdir[sizeof longdir - 1] = 0;
    setenv("SALE_CACHE_DIR", longdir, 1);
    sale_ctx *c = NULL;
    cr_assert_eq(sale_create(&c, NULL), SALE_ERR_INVALID);
    const char *e = sale_last_error(c);
    cr_assert(strstr(e, "$SALE_CACHE_DIR") && strstr(e, "longer than") && !strstr(e, "no $SALE_CACHE_DIR"), "%s", e);
    sale_destroy(c);
    if (old) {
        setenv("SALE_CACHE_DIR", old, 1);
        free(old);
    } else {
        unsetenv("SALE_CACHE_DIR");
    }
    /* a 1023-byte path in a folder that does not exist under a file: the reason is at the end, whole */
    spit(in_dir("afile"), "x", 1);
    char p[1024];
    int n = snprintf(p, sizeof p, "%s/afile/", g_dir);
    memset(p + n, 'k', sizeof p - 1 - (size_t)n);
    p[sizeof p - 1] = 0;
    sale_options o = {.cache_path = p};
    cr_assert_neq(sale_create(&c, &o), SALE_OK);
    e = sale_last_error(c);
    const char *tail = e + (strlen(e) > 120 ? strlen(e) - 120 : 0);
    cr_assert((strstr(tail, "unable to open") || strstr(tail, "Not a directory")) && e[strlen(e) - 1] != 'k',
              "the reason was cut: ...%s", tail);
    sale_destroy(c);
}
