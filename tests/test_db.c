/* test_db.c — the SQLite kernel cache: round trips, integrity checks, corrupt
 * and old/new schema files, the fleet layer, export/import and many
 * processes sharing one file. Each test works in its own mkdtemp directory. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "db.h"

/* ------------------------------------------------------------ fixtures */

static char g_dir[256];
static char g_err[1024];

typedef struct {
    int warnings;
    char text[8192];
} logcap;

static void capture(void *user, int level, const char *msg) {
    logcap *l = user;
    if (level >= 2) l->warnings++;
    size_t n = strlen(l->text);
    snprintf(l->text + n, sizeof l->text - n, "%s\n", msg);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) {
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static void setup_dir(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/sale_test_db_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
    g_err[0] = '\0';
}

static void teardown_dir(void) {
    if (g_dir[0]) nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(db, .init = setup_dir, .fini = teardown_dir, .timeout = 120);

static const char *in_dir(const char *name) {
    static char buf[4][512];
    static int i;
    char *b = buf[i++ & 3];
    snprintf(b, 512, "%s/%s", g_dir, name);
    return b;
}

/* in_dir's name kept in the caller's buffer (in_dir reuses four). */
#define PATH_IN(var, name)  \
    char var[600];          \
    snprintf(var, sizeof var, "%s/%s", g_dir, name)

/* A row with deterministic pseudo-random cubin bytes (seeded). */
static db_kernel_row make_row(const char *key, const char *arch, uint64_t src_hash, size_t bytes, unsigned seed) {
    db_kernel_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.key, sizeof r.key, "%s", key);
    snprintf(r.arch, sizeof r.arch, "%s", arch);
    snprintf(r.entry, sizeof r.entry, "sale_attend_kernel");
    r.src_hash = src_hash;
    r.registers = 96, r.smem_static = 1024, r.smem_dynamic = 49152, r.spill_stores = 4, r.spill_loads = 8;
    r.stack = 16, r.threads = 128, r.compile_ms = 123.5;
    r.cubin = malloc(bytes);
    r.cubin_bytes = bytes;
    unsigned x = seed * 2654435761u + 1;
    for (size_t i = 0; i < bytes; i++) {
        x = x * 1103515245u + 12345u;
        r.cubin[i] = (unsigned char)(x >> 16);
    }
    r.cubin_hash = db_fnv1a64(r.cubin, bytes, DB_FNV_SEED);
    return r;
}

static int g_open_flags; /* flags open_ok passes to db_open_ex */

static db *open_ok(const char *path, const char *fleet, logcap *l) {
    db *d = NULL;
    int r = db_open_ex(&d, path, fleet, g_open_flags, l ? capture : NULL, l, g_err, sizeof g_err);
    cr_assert_eq(r, 0, "db_open(%s): %s", path, g_err);
    cr_assert_not_null(d);
    return d;
}

static void put_ok(db *d, const db_kernel_row *r) {
    cr_assert_eq(db_kernel_put(d, r, g_err, sizeof g_err), 0, "db_kernel_put: %s", g_err);
}

static void put_n_ok(db *d, const char *key, const char *arch, uint64_t h, size_t bytes, unsigned seed) {
    db_kernel_row r = make_row(key, arch, h, bytes, seed);
    put_ok(d, &r);
    db_row_free(&r);
}

/* Raw SQLite access to poke at the file behind the library's back. */
static sqlite3 *raw_open(const char *path) {
    sqlite3 *c = NULL;
    cr_assert_eq(sqlite3_open(path, &c), SQLITE_OK);
    sqlite3_busy_timeout(c, 30000);
    return c;
}

static void raw_exec(sqlite3 *c, const char *sql) {
    char *msg = NULL;
    int rc = sqlite3_exec(c, sql, NULL, NULL, &msg);
    cr_assert_eq(rc, SQLITE_OK, "%s: %s", sql, msg ? msg : "");
}

static long long raw_int(const char *path, const char *sql) {
    sqlite3 *c = raw_open(path);
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_prepare_v2(c, sql, -1, &s, NULL), SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(c));
    int src = sqlite3_step(s);
    cr_assert_eq(src, SQLITE_ROW, "%s: %d %s", sql, src, sqlite3_errmsg(c));
    long long v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(c);
    return v;
}

static const char *raw_text(const char *path, const char *sql) {
    static char buf[512];
    sqlite3 *c = raw_open(path);
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_prepare_v2(c, sql, -1, &s, NULL), SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(c));
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
    snprintf(buf, sizeof buf, "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    sqlite3_close(c);
    return buf;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

/* 1 when some entry of g_dir has needle in its name. */
static int dir_has(const char *needle) {
    DIR *dir = opendir(g_dir);
    cr_assert_not_null(dir);
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(dir)) != NULL) found = strstr(e->d_name, needle) != NULL;
    closedir(dir);
    return found;
}

static int count_rows(void *user, const db_kernel_row *r) {
    (void)r;
    (*(int *)user)++;
    return 0;
}

static int list_count(db *d, int fleet) {
    int n = 0;
    cr_assert_eq(db_kernel_list(d, fleet, count_rows, &n, g_err, sizeof g_err), 0, "%s", g_err);
    return n;
}

/* A tuning winner of an H100 (sm_90) for bucket. */
static db_tuned_row tuned(const char *bucket, const char *winner, double ms) {
    db_tuned_row t;
    memset(&t, 0, sizeof t);
    snprintf(t.device, sizeof t.device, "NVIDIA H100 80GB HBM3");
    snprintf(t.arch, sizeof t.arch, "sm_90");
    t.sm_count = 132;
    t.driver_version = 12040;
    snprintf(t.key, sizeof t.key, "attend:hd=128:warps=*");
    snprintf(t.bucket, sizeof t.bucket, "%s", bucket);
    snprintf(t.winner, sizeof t.winner, "%s", winner);
    t.time_ms = ms, t.spread_pct = 1.5, t.tried = 12, t.created = 1700000001;
    return t;
}

static int count_tuned(void *u, const db_tuned_row *r) {
    (void)r;
    (*(int *)u)++;
    return 0;
}

/* ------------------------------------------------------------ round trips */

Test(db, kernel_round_trip_keeps_every_field) {
    logcap l = {0};
    db *d = open_ok(in_dir("kernels.db"), NULL, &l);
    db_kernel_row in = make_row("attend:hd=128:bq=64:bk=64", "sm_90a", 0xfedcba9876543210ULL, 70000, 1);
    in.created = 1700000000;
    put_ok(d, &in);
    db_kernel_row out;
    memset(&out, 0, sizeof out);
    cr_assert_eq(db_kernel_get(d, in.key, in.arch, in.src_hash, &out, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_str_eq(out.key, in.key);
    cr_assert_str_eq(out.arch, in.arch);
    cr_assert_str_eq(out.entry, in.entry);
    cr_assert_eq(out.src_hash, in.src_hash, "src_hash with the top bit set must survive the int64 cast");
    cr_assert_eq(out.registers, 96);
    cr_assert_eq(out.smem_static, 1024);
    cr_assert_eq(out.smem_dynamic, 49152);
    cr_assert_eq(out.spill_stores, 4);
    cr_assert_eq(out.spill_loads, 8);
    cr_assert_eq(out.stack, 16);
    cr_assert_eq(out.threads, 128);
    cr_assert_float_eq(out.compile_ms, 123.5, 1e-9);
    cr_assert_eq(out.cubin_bytes, in.cubin_bytes);
    cr_assert_eq(out.cubin_hash, in.cubin_hash);
    cr_assert_eq(memcmp(out.cubin, in.cubin, in.cubin_bytes), 0);
    cr_assert_eq(out.created, 1700000000);
    cr_assert_eq(out.hits, 1);
    cr_assert_eq(out.from_fleet, 0);
    db_row_free(&out);
    cr_assert_eq(db_kernel_get(d, in.key, in.arch, in.src_hash, &out, g_err, sizeof g_err), 1);
    cr_assert_eq(out.hits, 2, "hits are counted on every get");
    cr_assert_geq(out.last_used, out.created);
    db_row_free(&out);
    cr_assert_gt(db_file_bytes(d), 70000);
    cr_assert_eq(l.warnings, 0);
    db_row_free(&in);
    db_close(d);
}

Test(db, missing_key_is_a_miss) {
    db *d = open_ok(in_dir("kernels.db"), NULL, NULL);
    db_kernel_row out;
    memset(&out, 0, sizeof out);
    cr_assert_eq(db_kernel_get(d, "nope", "sm_80", 1, &out, g_err, sizeof g_err), 0);
    cr_assert_null(out.cubin);
    db_close(d);
}

Test(db, src_hash_or_arch_difference_misses) {
    db *d = open_ok(in_dir("kernels.db"), NULL, NULL);
    put_n_ok(d, "k", "sm_80", 42, 1000, 1);
    db_kernel_row out;
    cr_assert_eq(db_kernel_get(d, "k", "sm_80", 43, &out, g_err, sizeof g_err), 0);
    cr_assert_eq(db_kernel_get(d, "k", "sm_86", 42, &out, g_err, sizeof g_err), 0);
    cr_assert_eq(db_kernel_get(d, "k2", "sm_80", 42, &out, g_err, sizeof g_err), 0);
    cr_assert_eq(db_kernel_get(d, "k", "sm_80", 42, &out, g_err, sizeof g_err), 1);
    db_row_free(&out);
    db_close(d);
}

Test(db, second_put_keeps_the_first_row) {
    db *d = open_ok(in_dir("kernels.db"), NULL, NULL);
    db_kernel_row a = make_row("k", "sm_80", 7, 500, 1), b = make_row("k", "sm_80", 7, 600, 2), out;
    put_ok(d, &a);
    put_ok(d, &b);
    cr_assert_eq(db_kernel_get(d, "k", "sm_80", 7, &out, g_err, sizeof g_err), 1);
    cr_assert_eq(out.cubin_bytes, 500);
    cr_assert_eq(memcmp(out.cubin, a.cubin, 500), 0);
    cr_assert_eq(list_count(d, 0), 1);
    db_row_free(&out), db_row_free(&a), db_row_free(&b);
    db_close(d);
}

Test(db, put_rejects_inconsistent_rows) {
    db *d = open_ok(":memory:", NULL, NULL);
    db_kernel_row r = make_row("k", "sm_80", 7, 100, 1);
    r.cubin_hash ^= 1;
    cr_assert_eq(db_kernel_put(d, &r, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "db_kernel_put") != NULL, "%s", g_err);
    r.cubin_hash = 0; /* 0 means: compute it */
    put_ok(d, &r);
    db_row_free(&r);
    r = make_row("", "sm_80", 7, 100, 1);
    cr_assert_eq(db_kernel_put(d, &r, g_err, sizeof g_err), -1);
    db_row_free(&r);
    db_close(d);
}

Test(db, memory_cache_works_and_has_no_file) {
    db *d = open_ok(":memory:", NULL, NULL);
    put_n_ok(d, "k", "sm_80", 1, 100, 1);
    db_kernel_row out;
    cr_assert_eq(db_kernel_get(d, "k", "sm_80", 1, &out, g_err, sizeof g_err), 1);
    db_row_free(&out);
    cr_assert_eq(db_file_bytes(d), 0);
    cr_assert_str_eq(db_path(d), ":memory:");
    db_close(d);
}

Test(db, open_creates_missing_parent_directories) {
    const char *p = in_dir("a/b/c/kernels.db");
    db *d = open_ok(p, NULL, NULL);
    struct stat st;
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_eq(raw_int(p, "PRAGMA user_version"), DB_SCHEMA_VERSION);
    db_close(d);
}

Test(db, file_uses_wal_journal) {
    const char *p = in_dir("kernels.db");
    db *d = open_ok(p, NULL, NULL);
    cr_assert_str_eq(raw_text(p, "PRAGMA journal_mode"), "wal");
    db_close(d);
}

typedef struct {
    int n;
    char seen[8][300];
} seen_list;

static int collect(void *u, const db_kernel_row *r) {
    seen_list *acc = u;
    if (r->cubin) return 1; /* list must not hand out bytes */
    snprintf(acc->seen[acc->n++], sizeof acc->seen[0], "%s/%s", r->arch, r->key);
    return 0;
}

Test(db, list_is_ordered_by_arch_then_key_and_clear_empties) {
    db *d = open_ok(in_dir("kernels.db"), NULL, NULL);
    put_n_ok(d, "b", "sm_90", 1, 100, 1);
    put_n_ok(d, "a", "sm_90", 1, 100, 2);
    put_n_ok(d, "z", "sm_80", 1, 100, 3);
    seen_list acc = {0};
    cr_assert_eq(db_kernel_list(d, 0, collect, &acc, g_err, sizeof g_err), 0);
    cr_assert_eq(acc.n, 3);
    cr_assert_str_eq(acc.seen[0], "sm_80/z");
    cr_assert_str_eq(acc.seen[1], "sm_90/a");
    cr_assert_str_eq(acc.seen[2], "sm_90/b");
    cr_assert_eq(db_clear(d, g_err, sizeof g_err), 3);
    cr_assert_eq(list_count(d, 0), 0);
    db_close(d);
}


/* ------------------------------------------------------------ integrity */

Test(db, tampered_cubin_is_detected_and_deleted) {
    const char *p = in_dir("kernels.db");
    logcap l = {0};
    db *d = open_ok(p, NULL, &l);
    put_n_ok(d, "k", "sm_80", 5, 4000, 1);
    put_n_ok(d, "ok", "sm_80", 5, 4000, 2);
    sqlite3 *c = raw_open(p);
    /* Same length, different bytes: only the hash can tell. */
    raw_exec(c, "UPDATE kernels SET cubin = zeroblob(4000) WHERE key = 'k'");
    sqlite3_close(c);
    db_kernel_row out;
    memset(&out, 0, sizeof out);
    cr_assert_eq(db_kernel_get(d, "k", "sm_80", 5, &out, g_err, sizeof g_err), 0);
    cr_assert_null(out.cubin);
    cr_assert_eq(l.warnings, 1, "log: %s", l.text);
    cr_assert_eq(raw_int(p, "SELECT count(*) FROM kernels WHERE key = 'k'"), 0, "the bad row is deleted");
    cr_assert_eq(db_kernel_get(d, "ok", "sm_80", 5, &out, g_err, sizeof g_err), 1);
    db_row_free(&out);
    db_close(d);
}

Test(db, verify_counts_and_deletes_bad_rows) {
    const char *p = in_dir("kernels.db");
    logcap l = {0};
    db *d = open_ok(p, NULL, &l);
    for (int i = 0; i < 5; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        put_n_ok(d, k, "sm_80", 5, 300, (unsigned)i);
    }
    sqlite3 *c = raw_open(p);
    raw_exec(c, "UPDATE kernels SET cubin = x'0102' WHERE key IN ('k1', 'k3')");
    sqlite3_close(c);
    int checked = -1, bad = -1;
    cr_assert_eq(db_verify(d, &checked, &bad, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(checked, 5);
    cr_assert_eq(bad, 2);
    cr_assert_eq(list_count(d, 0), 3);
    cr_assert_eq(db_verify(d, &checked, &bad, g_err, sizeof g_err), 0);
    cr_assert_eq(bad, 0);
    db_close(d);
}

static void assert_moved_aside_and_usable(const char *p, logcap *l, const char *tag) {
    db *d = open_ok(p, NULL, l);
    cr_assert_eq(l->warnings, 1, "log: %s", l->text);
    cr_assert(strstr(l->text, p) != NULL, "warning names the file: %s", l->text);
    cr_assert(strstr(l->text, tag) != NULL, "warning names where it went: %s", l->text);
    cr_assert(dir_has(tag), "a %s file sits beside the cache", tag);
    put_n_ok(d, "k", "sm_80", 1, 2000, 9);
    db_kernel_row out;
    cr_assert_eq(db_kernel_get(d, "k", "sm_80", 1, &out, g_err, sizeof g_err), 1, "%s", g_err);
    db_row_free(&out);
    db_close(d);
    cr_assert_eq(raw_int(p, "PRAGMA user_version"), DB_SCHEMA_VERSION);
}

Test(db, cache_survives_corrupt_file) {
    const char *p = in_dir("kernels.db");
    char junk[8192];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)(i * 7 + 3);
    write_file(p, junk, sizeof junk);
    logcap l = {0};
    g_open_flags = DB_OPEN_DEFAULT_PATH; /* junk is moved aside only at the default location */
    assert_moved_aside_and_usable(p, &l, ".corrupt-");
}

Test(db, junk_file_away_from_the_default_location_is_refused_and_untouched) {
    const char *p = in_dir("README.md");
    write_file(p, "# readme\n", 9);
    db *d = NULL;
    cr_assert_eq(db_open(&d, p, NULL, NULL, NULL, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "not a sale cache") != NULL, "%s", g_err);
    cr_assert(!dir_has(".corrupt-"), "nothing moved aside");
    cr_assert(!dir_has("-journal") && !dir_has("-wal"), "nothing created beside it");
    FILE *f = fopen(p, "r");
    char buf[32] = "";
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(buf, sizeof buf, f));
    fclose(f);
    cr_assert_str_eq(buf, "# readme\n");
}

Test(db, cache_survives_truncated_file) {
    const char *p = in_dir("kernels.db");
    db *d = open_ok(p, NULL, NULL);
    for (int i = 0; i < 20; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        put_n_ok(d, k, "sm_80", 5, 20000, (unsigned)i);
    }
    db_close(d); /* checkpoints the WAL into the main file */
    struct stat st;
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_gt(st.st_size, 300000);
    cr_assert_eq(truncate(p, st.st_size / 3), 0);
    logcap l = {0};
    assert_moved_aside_and_usable(p, &l, ".corrupt-");
}

Test(db, cache_survives_damaged_page_with_intact_header) {
    const char *p = in_dir("kernels.db");
    db *d = open_ok(p, NULL, NULL);
    for (int i = 0; i < 20; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        put_n_ok(d, k, "sm_80", 5, 20000, (unsigned)i);
    }
    db_close(d);
    /* Scribble over b-tree pages past the schema page; only quick_check sees it. */
    int fd = open(p, O_WRONLY);
    cr_assert_geq(fd, 0);
    char junk[4096];
    memset(junk, 0x5a, sizeof junk);
    for (off_t off = 2 * 4096; off < 6 * 4096; off += 4096) cr_assert_eq(pwrite(fd, junk, sizeof junk, off), 4096);
    close(fd);
    logcap l = {0};
    assert_moved_aside_and_usable(p, &l, ".corrupt-");
}

Test(db, sqlite_file_of_another_program_is_refused_and_untouched) {
    const char *p = in_dir("photos.db");
    sqlite3 *c = raw_open(p);
    raw_exec(c, "CREATE TABLE photos(id INTEGER PRIMARY KEY, name TEXT); PRAGMA user_version = 2;"
                "INSERT INTO photos(name) VALUES ('cat');");
    sqlite3_close(c);
    db *d = NULL;
    cr_assert_eq(db_open(&d, p, NULL, NULL, NULL, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "not a sale cache") != NULL, "%s", g_err);
    cr_assert(!dir_has(".corrupt-"));
    cr_assert_eq(raw_int(p, "SELECT count(*) FROM photos"), 1, "the other program's data is intact");
}

/* At the default location too: $SALE_CACHE_DIR may be a folder another
 * program keeps its own kernels.db in. It was moved aside as a corrupt
 * cache, and the fourth such move deleted the oldest (the C API audit):
 * another program's data, lost. It is refused and left as it was. */
Test(db, sqlite_file_of_another_program_at_the_default_location_is_refused_and_untouched) {
    const char *p = in_dir("kernels.db");
    sqlite3 *c = raw_open(p);
    raw_exec(c, "CREATE TABLE photos(id INTEGER PRIMARY KEY, name TEXT); PRAGMA user_version = 2;"
                "INSERT INTO photos(name) VALUES ('cat');");
    sqlite3_close(c);
    for (int i = 0; i < 5; i++) {
        db *d = NULL;
        cr_assert_eq(db_open_ex(&d, p, NULL, DB_OPEN_DEFAULT_PATH, NULL, NULL, g_err, sizeof g_err), -1);
        cr_assert(strstr(g_err, "another program's SQLite database") != NULL, "%s", g_err);
        cr_assert(strstr(g_err, "SALE_CACHE_DIR") != NULL, "%s", g_err);
    }
    cr_assert(!dir_has(".corrupt-"), "moved aside");
    cr_assert(!dir_has("-wal") && !dir_has("-shm"), "files made beside it");
    cr_assert_eq(raw_int(p, "SELECT count(*) FROM photos"), 1, "the other program's data is intact");
}

/* Junk at the default location is moved aside and a cache made, as before;
 * but only copies that are damaged sale caches are ever deleted (the 3
 * newest kept): a moved-aside file with no trace of a sale cache stays. */
Test(db, only_damaged_sale_caches_moved_aside_are_ever_deleted) {
    const char *p = in_dir("kernels.db");
    char junk[8192];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)(i * 7 + 3);
    for (int round = 0; round < 5; round++) {
        write_file(p, junk, sizeof junk);
        db *d = NULL;
        cr_assert_eq(db_open_ex(&d, p, NULL, DB_OPEN_DEFAULT_PATH, NULL, NULL, g_err, sizeof g_err), 0, "%s", g_err);
        db_close(d);
        /* a distinct name each round: move_aside names copies by the second */
        DIR *dir = opendir(g_dir);
        struct dirent *e;
        while ((e = readdir(dir)) != NULL)
            if (strstr(e->d_name, ".corrupt-") && !strstr(e->d_name, "-wal") && !strstr(e->d_name, "-shm") &&
                !strstr(e->d_name, ".keep")) {
                char a[1024], b[1100];
                snprintf(a, sizeof a, "%s/%s", g_dir, e->d_name);
                snprintf(b, sizeof b, "%s.keep%d", a, round);
                cr_assert_eq(rename(a, b), 0);
            }
        closedir(dir);
    }
    int kept = 0;
    DIR *dir = opendir(g_dir);
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) kept += strstr(e->d_name, ".keep") != NULL;
    closedir(dir);
    cr_assert_eq(kept, 5, "a moved-aside file that is no sale cache was deleted");
}

/* Schema version 1, written by hand the way the first release did. */
static void make_v1(const char *p) {
    sqlite3 *c = raw_open(p);
    raw_exec(c, "CREATE TABLE kernels(key TEXT NOT NULL, arch TEXT NOT NULL, src_hash INTEGER NOT NULL,"
                " entry TEXT NOT NULL, registers INTEGER, smem_static INTEGER, spill_stores INTEGER,"
                " spill_loads INTEGER, compile_ms REAL, cubin BLOB NOT NULL, cubin_bytes INTEGER NOT NULL,"
                " cubin_hash INTEGER NOT NULL, created INTEGER, last_used INTEGER, hits INTEGER DEFAULT 0,"
                " PRIMARY KEY(key, arch, src_hash));"
                "PRAGMA user_version = 1;");
    db_kernel_row r = make_row("old", "sm_80", 0x8000000000000001ULL, 3000, 4);
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_prepare_v2(c,
                                    "INSERT INTO kernels VALUES (?1, ?2, ?3, 'old_entry', 64, 512, 0, 0, 9.5, ?4, "
                                    "?5, ?6, 1600000000, 1600000000, 3)",
                                    -1, &s, NULL),
                 SQLITE_OK);
    sqlite3_bind_text(s, 1, r.key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, r.arch, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)r.src_hash);
    sqlite3_bind_blob(s, 4, r.cubin, (int)r.cubin_bytes, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)r.cubin_bytes);
    sqlite3_bind_int64(s, 6, (sqlite3_int64)r.cubin_hash);
    cr_assert_eq(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
    sqlite3_close(c);
    db_row_free(&r);
}

Test(db, old_schema_v1_is_migrated_and_old_rows_stay_readable) {
    const char *p = in_dir("kernels.db");
    make_v1(p);
    logcap l = {0};
    db *d = open_ok(p, NULL, &l);
    cr_assert_eq(l.warnings, 0, "migration is not a warning: %s", l.text);
    cr_assert_eq(raw_int(p, "PRAGMA user_version"), DB_SCHEMA_VERSION);
    db_kernel_row ref = make_row("old", "sm_80", 0x8000000000000001ULL, 3000, 4), out;
    cr_assert_eq(db_kernel_get(d, "old", "sm_80", ref.src_hash, &out, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_str_eq(out.entry, "old_entry");
    cr_assert_eq(out.registers, 64);
    cr_assert_eq(out.smem_dynamic, 0);
    cr_assert_eq(out.stack, 0);
    cr_assert_eq(out.threads, 0);
    cr_assert_eq(out.hits, 4);
    cr_assert_eq(memcmp(out.cubin, ref.cubin, 3000), 0);
    db_row_free(&out);
    db_row_free(&ref);
    /* the new columns and tables work */
    put_n_ok(d, "new", "sm_90", 1, 100, 1);
    cr_assert_eq(db_kernel_get(d, "new", "sm_90", 1, &out, g_err, sizeof g_err), 1);
    cr_assert_eq(out.stack, 16);
    db_row_free(&out);
    cr_assert_eq(db_threshold_put(d, "m", 0, 0, 0.5, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(db_claim(d, "x", "sm_90", 1, 60, g_err, sizeof g_err), 1, "%s", g_err);
    db_close(d);
    /* reopening a migrated file is a no-op */
    d = open_ok(p, NULL, &l);
    cr_assert_eq(list_count(d, 0), 2);
    db_close(d);
}

Test(db, newer_schema_is_moved_aside) {
    const char *p = in_dir("kernels.db");
    sqlite3 *c = raw_open(p);
    raw_exec(c, "CREATE TABLE kernels(future BLOB); PRAGMA user_version = 99;");
    sqlite3_close(c);
    logcap l = {0};
    assert_moved_aside_and_usable(p, &l, ".newer-");
    cr_assert(!dir_has(".corrupt-"));
}

/* ------------------------------------------------------------ fleet layer */

Test(db, fleet_layer_serves_rows_under_the_writable_file) {
    const char *fp = in_dir("fleet.db"), *wp = in_dir("local/kernels.db");
    db *f = open_ok(fp, NULL, NULL);
    put_n_ok(f, "shared", "sm_90", 1, 1500, 1);
    put_n_ok(f, "both", "sm_90", 1, 1500, 2);
    db_tuned_row t;
    memset(&t, 0, sizeof t);
    snprintf(t.device, sizeof t.device, "H100"), snprintf(t.arch, sizeof t.arch, "sm_90");
    snprintf(t.key, sizeof t.key, "k"), snprintf(t.bucket, sizeof t.bucket, "n=1");
    snprintf(t.winner, sizeof t.winner, "w"), t.sm_count = 132;
    cr_assert_eq(db_tuned_put(f, &t, g_err, sizeof g_err), 0);
    db_close(f);

    db *d = open_ok(wp, fp, NULL);
    db_kernel_row local = make_row("both", "sm_90", 1, 700, 3), out;
    put_ok(d, &local);
    cr_assert_eq(db_kernel_get(d, "shared", "sm_90", 1, &out, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_eq(out.from_fleet, 1);
    cr_assert_eq(out.cubin_bytes, 1500);
    db_row_free(&out);
    cr_assert_eq(db_kernel_get(d, "both", "sm_90", 1, &out, g_err, sizeof g_err), 1);
    cr_assert_eq(out.from_fleet, 0, "the writable file wins");
    cr_assert_eq(out.cubin_bytes, 700);
    cr_assert_eq(memcmp(out.cubin, local.cubin, 700), 0);
    db_row_free(&out);
    cr_assert_eq(db_kernel_get(d, "none", "sm_90", 1, &out, g_err, sizeof g_err), 0);
    cr_assert_eq(list_count(d, 0), 1);
    cr_assert_eq(list_count(d, 1), 3);
    memset(t.winner, 0, sizeof t.winner);
    cr_assert_eq(db_tuned_get(d, &t, g_err, sizeof g_err), 1);
    cr_assert_str_eq(t.winner, "w");
    db_row_free(&local);
    db_close(d);
    cr_assert_eq(raw_int(fp, "SELECT max(hits) FROM kernels"), 0, "the fleet file is never written");
}

Test(db, invalid_fleet_file_fails_open_and_is_left_alone) {
    const char *fp = in_dir("fleet.db");
    write_file(fp, "this is not a database, not even close....", 42);
    db *d = (db *)1;
    cr_assert_eq(db_open(&d, in_dir("kernels.db"), fp, NULL, NULL, g_err, sizeof g_err), -1);
    cr_assert_null(d);
    cr_assert(strstr(g_err, "fleet") != NULL && strstr(g_err, fp) != NULL, "err: %s", g_err);
    struct stat st;
    cr_assert_eq(stat(fp, &st), 0, "not moved");
    cr_assert_eq(st.st_size, 42);
    cr_assert(!dir_has(".corrupt-"));
    cr_assert_eq(db_open(&d, in_dir("kernels.db"), in_dir("missing.db"), NULL, NULL, g_err, sizeof g_err), -1);
}

/* ------------------------------------------------------------ export / import */

Test(db, export_filters_by_arch_and_import_merges) {
    const char *src = in_dir("kernels.db"), *out = in_dir("ship/sm80.db"), *other = in_dir("other.db");
    db *d = open_ok(src, NULL, NULL);
    put_n_ok(d, "a", "sm_80", 1, 900, 1);
    put_n_ok(d, "b", "sm_80", 1, 900, 2);
    put_n_ok(d, "c", "sm_90", 1, 900, 3);
    put_n_ok(d, "d", "sm_800", 1, 900, 4); /* the arch or its 'a' variant: never another name it begins */
    const char *archs[] = {"sm_80"};
    cr_assert_eq(db_export(d, out, archs, 1, g_err, sizeof g_err), 2, "%s", g_err);
    cr_assert(!dir_has("sm80.db.tmp"));
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    cr_assert_neq(access(tmp, F_OK), 0);
    cr_assert_eq(raw_int(out, "PRAGMA user_version"), DB_SCHEMA_VERSION);
    cr_assert_eq(raw_int(out, "SELECT count(*) FROM kernels"), 2);
    cr_assert_eq(db_export(d, in_dir("all.db"), NULL, 0, g_err, sizeof g_err), 4, "%s", g_err);
    db_close(d);

    db *o = open_ok(other, NULL, NULL);
    put_n_ok(o, "a", "sm_80", 1, 50, 7); /* already present: kept */
    cr_assert_eq(db_import(o, out, g_err, sizeof g_err), 1, "%s", g_err);
    db_kernel_row r, ref = make_row("b", "sm_80", 1, 900, 2);
    cr_assert_eq(db_kernel_get(o, "b", "sm_80", 1, &r, g_err, sizeof g_err), 1);
    cr_assert_eq(memcmp(r.cubin, ref.cubin, 900), 0);
    db_row_free(&r), db_row_free(&ref);
    cr_assert_eq(db_kernel_get(o, "a", "sm_80", 1, &r, g_err, sizeof g_err), 1);
    cr_assert_eq(r.cubin_bytes, 50);
    db_row_free(&r);
    cr_assert_eq(db_kernel_get(o, "c", "sm_90", 1, &r, g_err, sizeof g_err), 0);
    cr_assert_eq(db_import(o, out, g_err, sizeof g_err), 0, "importing twice adds nothing");
    db_close(o);
}

Test(db, import_skips_bad_cubins) {
    const char *a = in_dir("a.db");
    db *d = open_ok(a, NULL, NULL);
    put_n_ok(d, "good", "sm_80", 1, 900, 1);
    put_n_ok(d, "bad", "sm_80", 1, 900, 2);
    db_close(d);
    sqlite3 *c = raw_open(a);
    raw_exec(c, "UPDATE kernels SET cubin = zeroblob(900) WHERE key = 'bad'");
    sqlite3_close(c);
    logcap l = {0};
    db *o = open_ok(in_dir("b.db"), NULL, &l);
    cr_assert_eq(db_import(o, a, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_eq(l.warnings, 1, "%s", l.text);
    db_close(o);
}

Test(db, import_rejects_files_that_are_not_sale_caches) {
    db *d = open_ok(in_dir("kernels.db"), NULL, NULL);
    const char *txt = in_dir("notes.txt"), *other = in_dir("other.sqlite");
    write_file(txt, "hello, I am plain text and not a database at all.....\n", 55);
    cr_assert_eq(db_import(d, txt, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "not a sale cache") != NULL, "%s", g_err);
    sqlite3 *c = raw_open(other);
    raw_exec(c, "CREATE TABLE photos(id INTEGER PRIMARY KEY);");
    sqlite3_close(c);
    cr_assert_eq(db_import(d, other, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "not a sale cache") != NULL, "%s", g_err);
    c = raw_open(other);
    raw_exec(c, "PRAGMA user_version = 1;");
    sqlite3_close(c);
    cr_assert_eq(db_import(d, other, g_err, sizeof g_err), -1, "versioned but no kernels table");
    cr_assert_eq(db_import(d, in_dir("absent.db"), g_err, sizeof g_err), -1);
    cr_assert_eq(list_count(d, 0), 0);
    db_close(d);
}

Test(db, import_reads_a_v1_cache) {
    const char *v1 = in_dir("v1.db");
    make_v1(v1);
    db *d = open_ok(in_dir("kernels.db"), NULL, NULL);
    cr_assert_eq(db_import(d, v1, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_eq(raw_int(v1, "PRAGMA user_version"), 1, "the source is not migrated");
    db_close(d);
}

/* `sale prewarm --arch sm_90` stores the wgmma kernels as sm_90a rows: they
 * run on sm_90 devices, so an export for sm_90 ships them too; sm_90a alone
 * is exact. The tuning winners of the exported archs travel with them. */
Test(db, export_of_a_base_arch_takes_its_arch_specific_variant_and_its_winners) {
    db *d = open_ok(in_dir("kernels.db"), NULL, NULL);
    put_n_ok(d, "quantize", "sm_90", 1, 300, 1);
    put_n_ok(d, "dense", "sm_90a", 1, 300, 2);
    put_n_ok(d, "quantize", "sm_80", 1, 300, 3);
    db_tuned_row t90 = tuned("n=4096", "attend:warps=4", 1.0), t90a = tuned("n=4096", "dense:warps=12", 2.0),
                 t80 = tuned("n=4096", "attend:warps=8", 3.0);
    snprintf(t90a.arch, sizeof t90a.arch, "sm_90a");
    snprintf(t80.arch, sizeof t80.arch, "sm_80");
    cr_assert_eq(db_tuned_put(d, &t90, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(db_tuned_put(d, &t90a, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(db_tuned_put(d, &t80, g_err, sizeof g_err), 0, "%s", g_err);
    const char *base[] = {"sm_90"}, *exact[] = {"sm_90a"}, *both[] = {"sm_90", "sm_90a"};
    PATH_IN(f90, "f90.db");
    PATH_IN(f90a, "f90a.db");
    PATH_IN(fboth, "fboth.db");
    cr_assert_eq(db_export(d, f90, base, 1, g_err, sizeof g_err), 2, "sm_90 brings sm_90a: %s", g_err);
    cr_assert_eq(raw_int(f90, "SELECT count(*) FROM kernels WHERE arch = 'sm_90a'"), 1);
    cr_assert_eq(raw_int(f90, "SELECT count(*) FROM tuned"), 2, "the winners of sm_90 and sm_90a, not sm_80's");
    cr_assert_eq(raw_int(f90, "SELECT count(*) FROM tuned WHERE arch = 'sm_80'"), 0);
    cr_assert_eq(db_export(d, f90a, exact, 1, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_eq(raw_int(f90a, "SELECT count(*) FROM kernels WHERE arch = 'sm_90'"), 0, "sm_90a is exact");
    cr_assert_eq(raw_int(f90a, "SELECT count(*) FROM tuned"), 1);
    cr_assert_eq(db_export(d, fboth, both, 2, g_err, sizeof g_err), 2, "each row once: %s", g_err);
    cr_assert_eq(db_export(d, in_dir("all.db"), NULL, 0, g_err, sizeof g_err), 3, "%s", g_err);
    cr_assert_eq(raw_int(in_dir("all.db"), "SELECT count(*) FROM tuned"), 3);
    db_close(d);
    /* the fleet file serves the winners under an empty cache */
    db *f = open_ok(in_dir("host.db"), f90, NULL);
    db_tuned_row q = tuned("n=4096", "", 0);
    cr_assert_eq(db_tuned_get(f, &q, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_str_eq(q.winner, "attend:warps=4");
    db_close(f);
}

static unsigned char *slurp_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    cr_assert_eq(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* `SALE_CACHE_DIR=X sale export X/kernels.db` replaced the live cache with
 * the export (the winners lost). The cache is refused under every name it
 * has, force or not, and stays as it was. */
Test(db, export_refuses_the_cache_itself_under_any_name) {
    PATH_IN(p, "kernels.db");
    PATH_IN(lnk, "link.db");
    PATH_IN(hard, "hard.db");
    PATH_IN(dotted, "./kernels.db");
    PATH_IN(wal, "kernels.db-wal");
    db *d = open_ok(p, NULL, NULL);
    put_n_ok(d, "a", "sm_80", 1, 500, 1);
    db_tuned_row t = tuned("n=4096", "attend:warps=4", 1.0);
    cr_assert_eq(db_tuned_put(d, &t, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(symlink("kernels.db", lnk), 0);
    cr_assert_eq(link(p, hard), 0);
    const char *names[] = {p, lnk, hard, dotted};
    size_t n0, n1;
    unsigned char *before = slurp_file(p, &n0);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        for (int force = 0; force < 2; force++) {
            cr_assert_eq(db_export_ex(d, names[i], NULL, 0, force ? DB_EXPORT_FORCE : 0, g_err, sizeof g_err), -1,
                         "%s (force %d) was replaced", names[i], force);
            cr_assert(strstr(g_err, "is the cache being exported") != NULL, "%s", g_err);
        }
    if (access(wal, F_OK) == 0) {
        cr_assert_eq(db_export_ex(d, wal, NULL, 0, DB_EXPORT_FORCE, g_err, sizeof g_err), -1, "its -wal replaced");
        cr_assert(strstr(g_err, "is the cache being exported") != NULL, "%s", g_err);
    }
    unsigned char *after = slurp_file(p, &n1);
    cr_assert(n0 == n1 && memcmp(before, after, n0) == 0, "the cache file changed");
    free(before), free(after);
    cr_assert(!dir_has(".tmp-"), "a temporary file was left");
    cr_assert_eq(list_count(d, 0), 1);
    int nt = 0;
    cr_assert_eq(db_tuned_list(d, count_tuned, &nt, g_err, sizeof g_err), 0);
    cr_assert_eq(nt, 1, "the winners are still there");
    db_close(d);
}

/* A valid WAL-mode cache in a directory the user cannot write was "not a
 * sale cache: attempt to write a readonly database": reading it needs a
 * -shm that cannot be made there. Root can write anywhere, so the -shm is
 * made impossible another way: a symlink to a directory that does not exist
 * (as a non-root user, the directory is also made read-only). */
Test(db, import_from_a_cache_whose_shm_cannot_be_created_works) {
    cr_assert_eq(mkdir(in_dir("src"), 0755), 0);
    PATH_IN(src, "src/kernels.db");
    db *s = open_ok(src, NULL, NULL);
    put_n_ok(s, "a", "sm_80", 1, 400, 1);
    put_n_ok(s, "b", "sm_90", 1, 400, 2);
    db_close(s); /* checkpointed: the file alone holds every row */
    size_t n0;
    unsigned char *hdr = slurp_file(src, &n0);
    cr_assert(n0 > 100 && hdr[18] == 2 && hdr[19] == 2, "a WAL-mode file");
    free(hdr);
    cr_assert_eq(access(in_dir("src/kernels.db-wal"), F_OK), -1);
    cr_assert_eq(symlink("/nonexistent/sale/dir/shm", in_dir("src/kernels.db-shm")), 0);
    if (geteuid() != 0) cr_assert_eq(chmod(in_dir("src"), 0555), 0);
    db *d = open_ok(in_dir("kernels.db"), NULL, NULL);
    int n = db_import(d, src, g_err, sizeof g_err);
    if (geteuid() != 0) chmod(in_dir("src"), 0755);
    cr_assert_eq(n, 2, "%s", g_err);
    cr_assert_eq(list_count(d, 0), 2);
    db_close(d);
}

/* A source whose log holds rows the file lacks, and whose -shm cannot be
 * made: the import fails with SQLite's reason, never "not a sale cache",
 * and never imports the file without its log. */
Test(db, import_that_cannot_read_a_source_reports_sqlites_reason) {
    cr_assert_eq(mkdir(in_dir("live"), 0755), 0);
    cr_assert_eq(mkdir(in_dir("copy"), 0755), 0);
    PATH_IN(live, "live/kernels.db");
    db *s = open_ok(live, NULL, NULL);
    put_n_ok(s, "a", "sm_80", 1, 400, 1);
    db_close(s);
    sqlite3 *w = raw_open(live); /* a writer whose rows sit in the log */
    raw_exec(w, "PRAGMA wal_autocheckpoint = 0");
    raw_exec(w, "UPDATE kernels SET hits = 7");
    size_t n;
    unsigned char *b = slurp_file(live, &n);
    write_file(in_dir("copy/kernels.db"), b, n);
    free(b);
    PATH_IN(walp, "live/kernels.db-wal");
    b = slurp_file(walp, &n);
    cr_assert_gt(n, 0, "the log holds the update");
    write_file(in_dir("copy/kernels.db-wal"), b, n);
    free(b);
    sqlite3_close(w);
    cr_assert_eq(symlink("/nonexistent/sale/dir/shm", in_dir("copy/kernels.db-shm")), 0);
    db *d = open_ok(in_dir("kernels.db"), NULL, NULL);
    cr_assert_eq(db_import(d, in_dir("copy/kernels.db"), g_err, sizeof g_err), -1, "imported without its log");
    cr_assert(strstr(g_err, "not a sale cache") == NULL, "%s", g_err);
    cr_assert(strstr(g_err, "unable to open") != NULL || strstr(g_err, "readonly") != NULL, "%s", g_err);
    cr_assert_eq(list_count(d, 0), 0);
    db_close(d);
}

/* A sale cache cut to 50 bytes keeps its WAL header: opening it, importing
 * it or exporting onto it made -wal and -shm beside it, though each then
 * refused it. Refused files are left as they were, alone. */
Test(db, a_file_refused_as_no_sale_cache_gets_nothing_beside_it) {
    char p[600], cut[600]; /* in_dir's buffers are reused */
    snprintf(p, sizeof p, "%s", in_dir("kernels.db"));
    snprintf(cut, sizeof cut, "%s", in_dir("cut.db"));
    db *d = open_ok(p, NULL, NULL);
    put_n_ok(d, "a", "sm_80", 1, 400, 1);
    db_close(d);
    size_t n;
    unsigned char *b = slurp_file(p, &n);
    write_file(cut, b, 50);
    free(b);
    db *x = NULL;
    cr_assert_eq(db_open(&x, cut, NULL, NULL, NULL, g_err, sizeof g_err), -1, "a cut file is no cache");
    cr_assert(strstr(g_err, "not a sale cache") != NULL, "%s", g_err);
    cr_assert(!dir_has("cut.db-"), "db_open left files beside it");
    d = open_ok(in_dir("other.db"), NULL, NULL);
    cr_assert_eq(db_import(d, cut, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "not a sale cache") != NULL, "%s", g_err);
    cr_assert(!dir_has("cut.db-"), "db_import left files beside it");
    put_n_ok(d, "b", "sm_80", 1, 400, 2);
    cr_assert_eq(db_export(d, cut, NULL, 0, g_err, sizeof g_err), -1);
    cr_assert(!dir_has("cut.db-"), "db_export left files beside it");
    /* what was there before stays */
    write_file(in_dir("cut.db-wal"), "mine", 4);
    cr_assert_eq(db_import(d, cut, g_err, sizeof g_err), -1);
    cr_assert_eq(access(in_dir("cut.db-wal"), F_OK), 0);
    cr_assert_eq(access(in_dir("cut.db-shm"), F_OK), -1);
    db_close(d);
    struct stat st;
    cr_assert_eq(stat(cut, &st), 0);
    cr_assert_eq(st.st_size, 50, "the file itself is untouched");
}

/* ------------------------------------------------------------ claims */

Test(db, claim_is_exclusive_until_released_or_stale) {
    const char *p = in_dir("kernels.db");
    db *d = open_ok(p, NULL, NULL);
    cr_assert_eq(db_claim(d, "k", "sm_80", 1, 60, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_eq(db_claim(d, "k", "sm_80", 1, 60, g_err, sizeof g_err), 1, "re-claiming our own claim");
    /* someone else, alive (pid 1 exists) and fresh */
    sqlite3 *c = raw_open(p);
    raw_exec(c, "UPDATE claims SET pid = 1, host = 'elsewhere'");
    cr_assert_eq(db_claim(d, "k", "sm_80", 1, 60, g_err, sizeof g_err), 0);
    cr_assert_eq(db_unclaim(d, "k", "sm_80", 1), 0);
    cr_assert_eq(raw_int(p, "SELECT count(*) FROM claims"), 1, "unclaim leaves others' claims");
    raw_exec(c, "UPDATE claims SET claimed_at = claimed_at - 1000");
    cr_assert_eq(db_claim(d, "k", "sm_80", 1, 60, g_err, sizeof g_err), 1, "stale claim taken over");
    cr_assert_eq(db_unclaim(d, "k", "sm_80", 1), 0);
    cr_assert_eq(raw_int(p, "SELECT count(*) FROM claims"), 0);
    sqlite3_close(c);
    db_close(d);
}

Test(db, claim_of_a_dead_process_is_taken_over) {
    const char *p = in_dir("kernels.db");
    pid_t child = fork();
    if (child == 0) {
        db *d = NULL;
        if (db_open(&d, p, NULL, NULL, NULL, NULL, 0) != 0) _exit(2);
        int r = db_claim(d, "k", "sm_80", 1, 3600, NULL, 0);
        db_close(d);
        _exit(r == 1 ? 0 : 1);
    }
    int st = 0;
    cr_assert_eq(waitpid(child, &st, 0), child);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    cr_assert_eq(raw_int(p, "SELECT pid FROM claims"), child);
    db *d = open_ok(p, NULL, NULL);
    cr_assert_eq(db_claim(d, "k", "sm_80", 1, 3600, g_err, sizeof g_err), 1, "owner is dead: %s", g_err);
    cr_assert_eq(raw_int(p, "SELECT pid FROM claims"), getpid());
    db_close(d);
}

/* ------------------------------------------------------------ many processes */

#ifndef NPROC
#define NPROC 10 /* at least 8 workers, as in a typical multi-GPU host */
#endif

static void wait_children(pid_t *pids, int n) {
    for (int i = 0; i < n; i++) {
        int st = 0;
        cr_assert_eq(waitpid(pids[i], &st, 0), pids[i]);
        cr_assert(WIFEXITED(st), "child %d died (signal %d)", i, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        cr_assert_eq(WEXITSTATUS(st), 0, "child %d failed with %d", i, WEXITSTATUS(st));
    }
}

/* NPROC processes that start together: each blocks on a gate the parent
 * opens once all are forked, runs child(path, i) and exits with its result;
 * every one must exit 0. */
static void run_gated(const char *path, int (*child)(const char *path, int idx)) {
    int gate[2];
    cr_assert_eq(pipe(gate), 0);
    pid_t pids[NPROC];
    for (int i = 0; i < NPROC; i++) {
        pids[i] = fork();
        cr_assert_geq(pids[i], 0);
        if (pids[i] == 0) {
            close(gate[1]);
            char b;
            if (read(gate[0], &b, 1) < 0) _exit(10); /* blocks until the parent opens the gate */
            _exit(child(path, i));
        }
    }
    close(gate[0]);
    close(gate[1]); /* every child's read returns now */
    wait_children(pids, NPROC);
}

/* One worker of the herd: find the kernel, or compile it once for everyone. */
static int herd_worker(const char *path, int idx) {
    db *d = NULL;
    char err[512];
    if (db_open(&d, path, NULL, NULL, NULL, err, sizeof err) != 0) return 11;
    db_kernel_row r;
    int got = db_kernel_get(d, "herd", "sm_90", 77, &r, err, sizeof err);
    if (got < 0) return 12;
    for (int tries = 0; !got && tries < 3000; tries++) {
        int c = db_claim(d, "herd", "sm_90", 77, 60, err, sizeof err);
        if (c < 0) return 13;
        if (c == 1) {
            /* double check: the winner may have finished between our get and our claim */
            got = db_kernel_get(d, "herd", "sm_90", 77, &r, err, sizeof err);
            if (got < 0) return 14;
            if (!got) {
                char mark[600];
                snprintf(mark, sizeof mark, "%s.compiled-%d", path, idx);
                close(open(mark, O_CREAT | O_WRONLY, 0644));
                usleep(300000); /* "compiling" */
                db_kernel_row mine = make_row("herd", "sm_90", 77, 50000, 1000u + (unsigned)idx);
                if (db_kernel_put(d, &mine, err, sizeof err) != 0) return 15;
                db_row_free(&mine);
            }
            db_unclaim(d, "herd", "sm_90", 77);
            if (!got) got = db_kernel_get(d, "herd", "sm_90", 77, &r, err, sizeof err);
        } else {
            usleep(20000);
            got = db_kernel_get(d, "herd", "sm_90", 77, &r, err, sizeof err);
        }
        if (got < 0) return 16;
    }
    if (got != 1) return 17;
    char out[600];
    snprintf(out, sizeof out, "%s.got-%d", path, idx);
    FILE *f = fopen(out, "w");
    if (!f) return 18;
    fprintf(f, "%zu %llu\n", r.cubin_bytes, (unsigned long long)db_fnv1a64(r.cubin, r.cubin_bytes, DB_FNV_SEED));
    fclose(f);
    db_row_free(&r);
    db_close(d);
    return 0;
}

Test(db, herd_of_processes_compiles_a_kernel_once) {
    const char *p = in_dir("kernels.db");
    run_gated(p, herd_worker);
    cr_assert_eq(raw_int(p, "SELECT count(*) FROM kernels"), 1);
    cr_assert_eq(raw_int(p, "SELECT count(*) FROM claims"), 0);
    int compiled = 0;
    char line0[128] = "";
    for (int i = 0; i < NPROC; i++) {
        char f[600], mark[600], line[128] = "";
        snprintf(mark, sizeof mark, "%s.compiled-%d", p, i);
        compiled += access(mark, F_OK) == 0;
        snprintf(f, sizeof f, "%s.got-%d", p, i);
        FILE *fp = fopen(f, "r");
        cr_assert_not_null(fp, "child %d wrote no result", i);
        cr_assert_not_null(fgets(line, sizeof line, fp));
        fclose(fp);
        if (i == 0) snprintf(line0, sizeof line0, "%s", line);
        cr_assert_str_eq(line, line0, "child %d got different bytes", i);
    }
    cr_assert_eq(compiled, 1, "exactly one process compiled");
    cr_assert_eq(raw_int(p, "SELECT hits FROM kernels"), NPROC);
}

/* a process of processes_inserting_different_keys_all_succeed: five keys of its own */
static int insert_worker(const char *p, int i) {
    db *d = NULL;
    if (db_open_ex(&d, p, NULL, DB_OPEN_DEFAULT_PATH, NULL, NULL, NULL, 0) != 0) return 11;
    for (int k = 0; k < 5; k++) {
        char key[32];
        snprintf(key, sizeof key, "p%d-k%d", i, k);
        db_kernel_row r = make_row(key, "sm_80", 3, 20000, (unsigned)(i * 10 + k));
        char err[256];
        if (db_kernel_put(d, &r, err, sizeof err) != 0) return 12;
        db_kernel_row g;
        if (db_kernel_get(d, key, "sm_80", 3, &g, err, sizeof err) != 1) return 13;
        int same = g.cubin_bytes == r.cubin_bytes && memcmp(g.cubin, r.cubin, r.cubin_bytes) == 0;
        db_row_free(&g);
        db_row_free(&r);
        if (!same) return 14;
    }
    db_close(d);
    return 0;
}

Test(db, processes_inserting_different_keys_all_succeed) {
    const char *p = in_dir("kernels.db");
    run_gated(p, insert_worker);
    cr_assert_eq(raw_int(p, "SELECT count(*) FROM kernels"), NPROC * 5);
    cr_assert_str_eq(raw_text(p, "PRAGMA quick_check"), "ok");
}

/* ------------------------------------------------------------ tuned / thresholds */

Test(db, tuned_rows_round_trip_and_replace) {
    db *d = open_ok(in_dir("kernels.db"), NULL, NULL);
    db_tuned_row a = tuned("n=4096", "attend:warps=4", 1.25), b = tuned("n=65536", "attend:warps=8", 9.5);
    cr_assert_eq(db_tuned_put(d, &a, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(db_tuned_put(d, &b, g_err, sizeof g_err), 0);
    db_tuned_row q = tuned("n=4096", "", 0);
    cr_assert_eq(db_tuned_get(d, &q, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_str_eq(q.winner, "attend:warps=4");
    cr_assert_float_eq(q.time_ms, 1.25, 1e-12);
    cr_assert_float_eq(q.spread_pct, 1.5, 1e-12);
    cr_assert_eq(q.tried, 12);
    cr_assert_eq(q.created, 1700000001);
    q = tuned("n=4096", "", 0);
    q.sm_count = 114; /* another device model must not get this winner */
    cr_assert_eq(db_tuned_get(d, &q, g_err, sizeof g_err), 0);
    db_tuned_row a2 = tuned("n=4096", "attend:warps=2", 1.0);
    cr_assert_eq(db_tuned_put(d, &a2, g_err, sizeof g_err), 0);
    q = tuned("n=4096", "", 0);
    cr_assert_eq(db_tuned_get(d, &q, g_err, sizeof g_err), 1);
    cr_assert_str_eq(q.winner, "attend:warps=2");
    int n = 0;
    cr_assert_eq(db_tuned_list(d, count_tuned, &n, g_err, sizeof g_err), 0);
    cr_assert_eq(n, 2);
    db_close(d);
}

static int count_thresholds(void *user, const db_threshold_row *r) {
    (void)r;
    ++*(int *)user;
    return 0;
}

Test(db, thresholds_round_trip_and_replace) {
    db *d = open_ok(in_dir("kernels.db"), NULL, NULL);
    double tau = -1;
    cr_assert_eq(db_threshold_get(d, "llama-3-8b", 3, 7, &tau, g_err, sizeof g_err), 0);
    cr_assert_eq(db_threshold_put(d, "llama-3-8b", 3, 7, 0.0125, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(db_threshold_put(d, "llama-3-8b", 3, 8, 0.5, g_err, sizeof g_err), 0);
    cr_assert_eq(db_threshold_get(d, "llama-3-8b", 3, 7, &tau, g_err, sizeof g_err), 1);
    cr_assert_float_eq(tau, 0.0125, 1e-15);
    cr_assert_eq(db_threshold_put(d, "llama-3-8b", 3, 7, 0.25, g_err, sizeof g_err), 0);
    cr_assert_eq(db_threshold_get(d, "llama-3-8b", 3, 7, &tau, g_err, sizeof g_err), 1);
    cr_assert_float_eq(tau, 0.25, 1e-15);
    cr_assert_eq(db_threshold_get(d, "llama-3-8b", 4, 7, &tau, g_err, sizeof g_err), 0);
    db_close(d);
}

static db_threshold_row th(const char *model, int layer, int head, double tau, double budget) {
    db_threshold_row r = {.layer = layer, .head = head, .tau = tau, .budget = budget, .samples = 2, .density = 0.5,
                          .error = 0.01, .thr = 1};
    snprintf(r.model, sizeof r.model, "%s", model);
    return r;
}

/* A calibration replaces its model's thresholds as a whole: a second one
 * over fewer layers leaves none of the first's rows for `tau=(model, layer)`
 * to find; other models are untouched; a bad row changes nothing. */
Test(db, replacing_a_models_thresholds_drops_the_earlier_calibration) {
    db *d = open_ok(in_dir("kernels.db"), NULL, NULL);
    db_threshold_row first[4] = {th("Z", 0, 0, 0.004, 0.05), th("Z", 0, 1, 0.002, 0.05), th("Z", 1, 0, 0.001, 0.05),
                                 th("Z", 1, 1, 0.003, 0.05)};
    db_threshold_row other = th("Y", 1, 0, 0.006, 0.02);
    int replaced = -1, dropped = -1;
    cr_assert_eq(db_thresholds_replace_model(d, "Z", first, 4, &replaced, &dropped, g_err, sizeof g_err), 0, "%s",
                 g_err);
    cr_assert_eq(replaced, 0);
    cr_assert_eq(dropped, 0);
    cr_assert_eq(db_thresholds_put(d, &other, 1, g_err, sizeof g_err), 0, "%s", g_err);
    db_threshold_row second[2] = {th("Z", 0, 0, 0.0005, 0.01), th("Z", 0, 1, 0, 0.01)};
    cr_assert_eq(db_thresholds_replace_model(d, "Z", second, 2, &replaced, &dropped, g_err, sizeof g_err), 0, "%s",
                 g_err);
    cr_assert_eq(replaced, 4);
    cr_assert_eq(dropped, 2, "layer 1 is not in the second calibration");
    db_threshold_row r;
    cr_assert_eq(db_threshold_get_row(d, "Z", 1, 0, &r, g_err, sizeof g_err), 0, "a stale row of the first");
    cr_assert_eq(db_threshold_get_row(d, "Z", 0, 0, &r, g_err, sizeof g_err), 1);
    cr_assert_float_eq(r.budget, 0.01, 1e-12);
    cr_assert_eq(db_threshold_get_row(d, "Y", 1, 0, &r, g_err, sizeof g_err), 1, "another model is untouched");
    int n = 0;
    cr_assert_eq(db_threshold_list(d, 0, count_thresholds, &n, g_err, sizeof g_err), 0);
    cr_assert_eq(n, 3);
    /* all or nothing: a bad row, or a row of another model, changes nothing */
    db_threshold_row bad[2] = {th("Z", 5, 0, 0.001, 0.02), th("Z", 5, 1, 2.0, 0.02)};
    cr_assert_eq(db_thresholds_replace_model(d, "Z", bad, 2, NULL, NULL, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "tau must be in [0, 1)") != NULL, "%s", g_err);
    bad[1] = th("Y", 5, 1, 0.001, 0.02);
    cr_assert_eq(db_thresholds_replace_model(d, "Z", bad, 2, NULL, NULL, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "model 'Y', not 'Z'") != NULL, "%s", g_err);
    n = 0;
    cr_assert_eq(db_threshold_list(d, 0, count_thresholds, &n, g_err, sizeof g_err), 0);
    cr_assert_eq(n, 3);
    cr_assert_eq(db_threshold_get_row(d, "Z", 0, 1, &r, g_err, sizeof g_err), 1);
    db_close(d);
}

/* Schema version 2, written by hand as that release created it, with one
 * kernel (through the v1 layout migrated) and one threshold row. */
static void make_v2(const char *p) {
    make_v1(p);
    sqlite3 *c = raw_open(p);
    raw_exec(c, "ALTER TABLE kernels ADD COLUMN smem_dynamic INTEGER NOT NULL DEFAULT 0;"
                "ALTER TABLE kernels ADD COLUMN stack INTEGER NOT NULL DEFAULT 0;"
                "ALTER TABLE kernels ADD COLUMN threads INTEGER NOT NULL DEFAULT 0;"
                "CREATE TABLE tuned(device TEXT NOT NULL, arch TEXT NOT NULL, sm_count INTEGER NOT NULL,"
                " driver_version INTEGER NOT NULL, key TEXT NOT NULL, bucket TEXT NOT NULL, winner TEXT NOT NULL,"
                " time_ms REAL, spread_pct REAL, tried INTEGER, created INTEGER,"
                " PRIMARY KEY(device, arch, sm_count, driver_version, key, bucket));"
                "CREATE TABLE thresholds(model TEXT NOT NULL, layer INTEGER NOT NULL, head INTEGER NOT NULL,"
                " tau REAL NOT NULL, PRIMARY KEY(model, layer, head));"
                "CREATE TABLE claims(key TEXT NOT NULL, arch TEXT NOT NULL, src_hash INTEGER NOT NULL,"
                " pid INTEGER NOT NULL, host TEXT NOT NULL, claimed_at INTEGER NOT NULL,"
                " PRIMARY KEY(key, arch, src_hash));"
                "INSERT INTO thresholds VALUES ('old-model', 2, 5, 0.003);"
                "PRAGMA user_version = 2;");
    sqlite3_close(c);
}

Test(db, old_schema_v2_is_migrated_and_thresholds_keep_their_tau) {
    const char *p = in_dir("kernels.db");
    make_v2(p);
    logcap l = {0};
    db *d = open_ok(p, NULL, &l);
    cr_assert_eq(l.warnings, 0, "migration is not a warning: %s", l.text);
    cr_assert_eq(raw_int(p, "PRAGMA user_version"), DB_SCHEMA_VERSION);
    cr_assert_eq(list_count(d, 0), 1, "the kernel row survives");
    db_threshold_row r;
    cr_assert_eq(db_threshold_get_row(d, "old-model", 2, 5, &r, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_float_eq(r.tau, 0.003, 1e-12);
    cr_assert_eq(r.samples, 0);
    cr_assert_float_eq(r.density, -1.0, 0);
    cr_assert_float_eq(r.error, -1.0, 0);
    cr_assert_eq(r.thr, 0, "an old row's variant is not recorded");
    db_threshold_row w = {.model = "new-model", .layer = 1, .head = 3, .tau = 0.002, .budget = 0.02,
                          .budget_abs = 1, .samples = 5, .created = 1700000000, .density = 0.25, .error = 0.015,
                          .thr = 2};
    cr_assert_eq(db_thresholds_put(d, &w, 1, g_err, sizeof g_err), 0, "%s", g_err);
    db_close(d);
    d = open_ok(p, NULL, &l); /* reopening a migrated file is a no-op */
    cr_assert_eq(db_threshold_get_row(d, "new-model", 1, 3, &r, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_float_eq(r.tau, 0.002, 1e-12);
    cr_assert_float_eq(r.budget, 0.02, 1e-12);
    cr_assert_eq(r.budget_abs, 1);
    cr_assert_eq(r.samples, 5);
    cr_assert_eq(r.created, 1700000000);
    cr_assert_float_eq(r.density, 0.25, 1e-12);
    cr_assert_float_eq(r.error, 0.015, 1e-12);
    cr_assert_eq(r.thr, 2, "the variant is stored");
    cr_assert_eq(r.from_fleet, 0);
    db_close(d);
}

/* Schema version 3, as that release left a migrated v2 file: the
 * calibration columns, no variant column; one calibrated row. */
static void make_v3(const char *p) {
    make_v2(p);
    sqlite3 *c = raw_open(p);
    raw_exec(c, "ALTER TABLE thresholds ADD COLUMN budget REAL NOT NULL DEFAULT 0;"
                "ALTER TABLE thresholds ADD COLUMN budget_abs INTEGER NOT NULL DEFAULT 0;"
                "ALTER TABLE thresholds ADD COLUMN samples INTEGER NOT NULL DEFAULT 0;"
                "ALTER TABLE thresholds ADD COLUMN created INTEGER NOT NULL DEFAULT 0;"
                "ALTER TABLE thresholds ADD COLUMN density REAL NOT NULL DEFAULT -1;"
                "ALTER TABLE thresholds ADD COLUMN error REAL NOT NULL DEFAULT -1;"
                "INSERT INTO thresholds VALUES ('v3-model', 0, 1, 0.0025, 0.05, 0, 2, 1700000001, 0.125, 0.03);"
                "PRAGMA user_version = 3;");
    sqlite3_close(c);
}

Test(db, old_schema_v3_is_migrated_and_its_rows_have_no_variant) {
    const char *p = in_dir("kernels.db"), *fl = in_dir("fleet_v3.db");
    make_v3(fl); /* a v3 fleet file is read as it is (read-only: not migrated) */
    make_v3(p);
    db *d = open_ok(p, NULL, NULL);
    cr_assert_eq(raw_int(p, "PRAGMA user_version"), DB_SCHEMA_VERSION);
    cr_assert_eq(raw_int(p, "SELECT count(*) FROM pragma_table_info('thresholds') WHERE name='thr'"), 1);
    db_threshold_row r;
    cr_assert_eq(db_threshold_get_row(d, "v3-model", 0, 1, &r, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_float_eq(r.tau, 0.0025, 1e-12);
    cr_assert_eq(r.samples, 2);
    cr_assert_float_eq(r.density, 0.125, 1e-12);
    cr_assert_eq(r.thr, 0);
    db_close(d);

    const char *empty = in_dir("empty.db");
    d = open_ok(empty, fl, NULL);
    cr_assert_eq(raw_int(fl, "PRAGMA user_version"), 3, "the fleet file is not migrated");
    cr_assert_eq(db_threshold_get_row(d, "v3-model", 0, 1, &r, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_eq(r.from_fleet, 1);
    cr_assert_float_eq(r.error, 0.03, 1e-12);
    cr_assert_eq(r.thr, 0);
    db_close(d);
}

/* Processes that open one v3 file at once: one migrates it (under the write
 * lock, the version read again there), the others find it migrated; every
 * open succeeds, the variant column is there once, the rows survive, and each
 * process can then store and read back a variant. */
/* a process of processes_opening_a_v3_file_at_once_migrate_it_once */
static int v3_open_worker(const char *p, int i) {
    db *d = NULL;
    char err[256];
    if (db_open_ex(&d, p, NULL, DB_OPEN_DEFAULT_PATH, NULL, NULL, err, sizeof err) != 0) return 11;
    db_threshold_row r;
    if (db_threshold_get_row(d, "v3-model", 0, 1, &r, err, sizeof err) != 1 || r.samples != 2 || r.thr != 0) return 12;
    db_threshold_row w = {.layer = i, .head = 0, .tau = 0.001 * (i + 1), .density = -1, .error = -1, .thr = 1 + i % 2};
    snprintf(w.model, sizeof w.model, "proc");
    if (db_thresholds_put(d, &w, 1, err, sizeof err) != 0) return 13;
    if (db_threshold_get_row(d, "proc", i, 0, &r, err, sizeof err) != 1 || r.thr != 1 + i % 2) return 14;
    db_close(d);
    return 0;
}

Test(db, processes_opening_a_v3_file_at_once_migrate_it_once) {
    const char *p = in_dir("kernels.db");
    make_v3(p);
    run_gated(p, v3_open_worker);
    cr_assert_eq(raw_int(p, "PRAGMA user_version"), DB_SCHEMA_VERSION);
    cr_assert_eq(raw_int(p, "SELECT count(*) FROM pragma_table_info('thresholds') WHERE name='thr'"), 1);
    cr_assert_eq(raw_int(p, "SELECT count(*) FROM thresholds WHERE model = 'proc'"), NPROC);
    cr_assert_eq(raw_int(p, "SELECT count(*) FROM thresholds WHERE model = 'proc' AND thr = 2"), NPROC / 2);
    cr_assert_str_eq(raw_text(p, "PRAGMA quick_check"), "ok");
}

Test(db, v1_file_is_migrated_through_v2_to_the_thresholds_columns) {
    const char *p = in_dir("kernels.db");
    make_v1(p);
    db *d = open_ok(p, NULL, NULL);
    cr_assert_eq(raw_int(p, "PRAGMA user_version"), DB_SCHEMA_VERSION);
    cr_assert_eq(raw_int(p, "SELECT count(*) FROM pragma_table_info('thresholds') WHERE name='density'"), 1);
    cr_assert_eq(raw_int(p, "SELECT count(*) FROM pragma_table_info('thresholds') WHERE name='thr'"), 1);
    db_close(d);
}

Test(db, thresholds_put_is_all_or_nothing) {
    db *d = open_ok(in_dir("kernels.db"), NULL, NULL);
    db_threshold_row rows[3] = {{.model = "m", .layer = 0, .head = 0, .tau = 0.004},
                                {.model = "m", .layer = 0, .head = 1, .tau = 0.002},
                                {.model = "m", .layer = 0, .head = 2, .tau = 1.5}};
    cr_assert_eq(db_thresholds_put(d, rows, 3, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "tau must be in [0, 1)") != NULL, "%s", g_err);
    cr_assert_eq(db_threshold_get(d, "m", 0, 0, NULL, g_err, sizeof g_err), 0, "nothing stored");
    rows[2].tau = 0;
    cr_assert_eq(db_thresholds_put(d, rows, 3, g_err, sizeof g_err), 0, "%s", g_err);
    int n = 0;
    cr_assert_eq(db_threshold_list(d, 1, count_thresholds, &n, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(n, 3);
    db_close(d);
}

Test(db, thresholds_travel_with_export_import_and_the_fleet_file) {
    const char *src = in_dir("kernels.db"), *ship = in_dir("fleet.db"), *other = in_dir("other.db");
    db *d = open_ok(src, NULL, NULL);
    put_n_ok(d, "a", "sm_80", 1, 100, 1);
    db_threshold_row w = {.model = "m", .layer = 4, .head = 1, .tau = 0.001, .budget = 0.05, .samples = 2,
                          .density = 0.5, .error = 0.04, .thr = 2};
    cr_assert_eq(db_thresholds_put(d, &w, 1, g_err, sizeof g_err), 0, "%s", g_err);
    const char *archs[] = {"sm_90"}; /* no kernel of that arch: thresholds travel anyway */
    cr_assert_eq(db_export(d, ship, archs, 1, g_err, sizeof g_err), 0, "%s", g_err);
    db_close(d);
    cr_assert_eq(raw_int(ship, "SELECT count(*) FROM thresholds"), 1);

    /* as the fleet file under an empty writable one */
    db *f = open_ok(other, ship, NULL);
    db_threshold_row r;
    cr_assert_eq(db_threshold_get_row(f, "m", 4, 1, &r, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_eq(r.from_fleet, 1);
    cr_assert_float_eq(r.error, 0.04, 1e-12);
    cr_assert_eq(r.thr, 2, "the variant travels with the row");
    /* the writable file wins over the fleet */
    cr_assert_eq(db_threshold_put(f, "m", 4, 1, 0.008, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(db_threshold_get_row(f, "m", 4, 1, &r, g_err, sizeof g_err), 1);
    cr_assert_float_eq(r.tau, 0.008, 1e-12);
    cr_assert_eq(r.from_fleet, 0);
    db_close(f);

    /* import keeps a model it has whole (its calibration; the other file's
     * rows of it are not taken: two calibrations never mix) and brings a
     * model it lacks whole, variant and all */
    db *o = open_ok(in_dir("third.db"), NULL, NULL);
    cr_assert_eq(db_threshold_put(o, "m", 4, 1, 0.004, g_err, sizeof g_err), 0, "%s", g_err);
    d = open_ok(src, NULL, NULL);
    cr_assert_eq(db_threshold_put(d, "m", 4, 2, 0.002, g_err, sizeof g_err), 0, "%s", g_err);
    db_threshold_row w2 = w;
    snprintf(w2.model, sizeof w2.model, "n");
    cr_assert_eq(db_thresholds_put(d, &w2, 1, g_err, sizeof g_err), 0, "%s", g_err);
    db_close(d);
    cr_assert_eq(db_import(o, src, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_eq(raw_int(in_dir("third.db"), "SELECT count(*) FROM thresholds WHERE model = 'm'"), 1);
    cr_assert_eq(db_threshold_get_row(o, "m", 4, 1, &r, g_err, sizeof g_err), 1);
    cr_assert_eq(r.thr, 0, "import keeps the existing row, variant and all");
    double tau = 0;
    cr_assert_eq(db_threshold_get(o, "m", 4, 1, &tau, g_err, sizeof g_err), 1);
    cr_assert_float_eq(tau, 0.004, 1e-12);
    cr_assert_eq(db_threshold_get(o, "m", 4, 2, &tau, g_err, sizeof g_err), 0, "another calibration's row mixed in");
    cr_assert_eq(db_threshold_get_row(o, "n", 4, 1, &r, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_eq(r.thr, 2, "a model this cache lacks comes over, variant and all");
    cr_assert_float_eq(r.tau, 0.001, 1e-12);
    db_close(o);
}

Test(db, errors_name_the_operation_and_sqlite_reason) {
    const char *p = in_dir("kernels.db");
    db *d = open_ok(p, NULL, NULL);
    sqlite3 *c = raw_open(p);
    raw_exec(c, "DROP TABLE kernels"); /* behind the library's back */
    sqlite3_close(c);
    db_kernel_row r = make_row("k", "sm_80", 1, 10, 1);
    cr_assert_eq(db_kernel_put(d, &r, g_err, sizeof g_err), -1);
    cr_assert(strstr(g_err, "db_kernel_put: insert: no such table: kernels") != NULL, "%s", g_err);
    db_row_free(&r);
    db_close(d);
}

/* a process of processes_opening_a_corrupt_file_at_once_move_it_aside_once */
static int corrupt_open_worker(const char *p, int i) {
    db *d = NULL;
    if (db_open_ex(&d, p, NULL, DB_OPEN_DEFAULT_PATH, NULL, NULL, NULL, 0) != 0) return 11;
    char key[32];
    snprintf(key, sizeof key, "p%d", i);
    db_kernel_row r = make_row(key, "sm_80", 3, 1000, (unsigned)i);
    int ok = db_kernel_put(d, &r, NULL, 0) == 0;
    db_row_free(&r);
    db_close(d);
    return ok ? 0 : 12;
}

Test(db, processes_opening_a_corrupt_file_at_once_move_it_aside_once) {
    const char *p = in_dir("kernels.db");
    char junk[8192];
    memset(junk, 0xa5, sizeof junk);
    write_file(p, junk, sizeof junk);
    run_gated(p, corrupt_open_worker);
    int aside = 0;
    DIR *dir = opendir(g_dir);
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) aside += strstr(e->d_name, ".corrupt-") && !strstr(e->d_name, "-wal") &&
                                                !strstr(e->d_name, "-shm") && !strstr(e->d_name, "-journal");
    closedir(dir);
    cr_assert_eq(aside, 1, "the corrupt file is moved aside exactly once");
    cr_assert_eq(raw_int(p, "SELECT count(*) FROM kernels"), NPROC, "no process lost its row to a second rebuild");
}

/* A process that holds the file's write lock for hold_ms: BEGIN IMMEDIATE,
 * one byte on the pipe once held, then COMMIT after hold_ms. */
static pid_t hold_lock(const char *p, int hold_ms) {
    int fd[2];
    cr_assert_eq(pipe(fd), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        close(fd[0]);
        sqlite3 *c = NULL;
        if (sqlite3_open(p, &c) != SQLITE_OK || sqlite3_exec(c, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
            _exit(3);
        if (write(fd[1], "x", 1) != 1) _exit(4);
        usleep((useconds_t)hold_ms * 1000);
        sqlite3_exec(c, "COMMIT", NULL, NULL, NULL);
        sqlite3_close(c);
        _exit(0);
    }
    close(fd[1]);
    char x;
    cr_assert_eq(read(fd[0], &x, 1), 1, "the lock holder did not start");
    close(fd[0]);
    return pid;
}

static double mono_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* A write behind another process's lock waits for it, and says once, naming
 * the file, that it is waiting (a command stuck behind a long write must not
 * look hung); the write then goes in. */
Test(db, a_write_behind_another_process_lock_waits_and_says_so) {
    const char *p = in_dir("kernels.db");
    logcap l = {0};
    db *d = open_ok(p, NULL, &l);
    pid_t pid = hold_lock(p, 1600);
    db_kernel_row r = make_row("k", "sm_80", 1, 100, 1);
    double t0 = mono_s();
    cr_assert_eq(db_kernel_put(d, &r, g_err, sizeof g_err), 0, "%s", g_err);
    double waited = mono_s() - t0;
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "holder status %d", status);
    cr_assert(waited > 1.0, "the put did not wait for the lock (%.2f s)", waited);
    cr_assert(strstr(l.text, "waiting for another process's lock") && strstr(l.text, p), "log: %s", l.text);
    cr_assert_eq(list_count(d, 0), 1);
    db_row_free(&r);
    db_close(d);
}

/* A lock held past the wait: one wait in all (the retries on BUSY used to
 * wait four times as long), and the error names the file that is held. */
Test(db, a_lock_held_past_the_wait_fails_once_naming_the_file, .timeout = 100) {
    const char *p = in_dir("kernels.db");
    db *d = open_ok(p, NULL, NULL);
    pid_t pid = hold_lock(p, 40000);
    db_kernel_row r = make_row("k", "sm_80", 1, 100, 1);
    double t0 = mono_s();
    cr_assert_eq(db_kernel_put(d, &r, g_err, sizeof g_err), -1);
    double waited = mono_s() - t0;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    cr_assert(waited > 25 && waited < 38, "waited %.1f s", waited);
    cr_assert(strstr(g_err, p) && strstr(g_err, "locked") && strstr(g_err, "another process"), "%s", g_err);
    db_row_free(&r);
    db_close(d);
}

/* An import brings the other file's tuning winners as well as its kernels
 * (a fleet file made by export carries them; a merge should not lose them),
 * and keeps this file's own winner where both have one. */
Test(db, import_brings_tuning_winners_and_keeps_its_own) {
    PATH_IN(src, "src.db");
    db *s = open_ok(src, NULL, NULL);
    put_n_ok(s, "quantize", "sm_90", 1, 300, 1);
    db_tuned_row a = tuned("n=4096", "attend:warps=4", 1.0), b = tuned("n=65536", "attend:warps=8", 2.0);
    cr_assert_eq(db_tuned_put(s, &a, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(db_tuned_put(s, &b, g_err, sizeof g_err), 0, "%s", g_err);
    db_close(s);
    db *d = open_ok(in_dir("kernels.db"), NULL, NULL);
    db_tuned_row own = tuned("n=4096", "attend:warps=12", 0.5); /* the same problem as a: kept */
    cr_assert_eq(db_tuned_put(d, &own, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(db_import(d, src, g_err, sizeof g_err), 1, "%s", g_err);
    db_tuned_row q = tuned("n=65536", "", 0);
    cr_assert_eq(db_tuned_get(d, &q, g_err, sizeof g_err), 1, "the other file's winner came with it: %s", g_err);
    cr_assert_str_eq(q.winner, "attend:warps=8");
    db_tuned_row q2 = tuned("n=4096", "", 0);
    cr_assert_eq(db_tuned_get(d, &q2, g_err, sizeof g_err), 1, "%s", g_err);
    cr_assert_str_eq(q2.winner, "attend:warps=12", "this file's own winner is kept");
    db_close(d);
}
