/* db.c — the SQLite kernel cache behind db.h: schema + migrations, corrupt
 * and newer files moved aside, a read-only fleet file under the writable one,
 * compile claims for the thundering herd, export/import. Many processes may
 * share one file: every write is one BEGIN IMMEDIATE transaction in WAL mode. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "db.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DB_BUSY_MS 30000
#define DB_HIT_BUSY_MS 1000 /* hit counting is best effort: never stall a lookup for it */

struct db {
    sqlite3 *w;    /* writable cache */
    sqlite3 *f;    /* read-only fleet file, or NULL */
    int fleet_uv;  /* schema version of the fleet file */
    int memory;    /* path is ":memory:" */
    int flags;     /* DB_OPEN_* */
    int readonly;  /* the file or its directory is not writable: opened read-only */
    char *path;
    char *fleet_path;
    int sib_had;   /* which of path's -wal/-shm/-journal existed before we opened it (siblings_present) */
    int refused;   /* the file is refused as no usable sale cache: what opening it created goes again */
    int no_hit;    /* under the lock, db_kernel_get_ex(count 0): a read that is no request served */
    db_log_fn log;
    void *log_user;
    pthread_mutex_t mu; /* one connection, multi-statement transactions: serialise callers */
    unsigned long ops;  /* calls that reached SQLite (db_op_count: tests of the warm paths) */
    int busy_limit_ms;  /* how long a statement waits for another process's lock (on_busy) */
    int64_t busy_since; /* the monotonic ms at which the current wait began */
    int busy_told;      /* the current wait has been logged */
};

/* Column lists shared by every reader and writer; never rely on `*` because a
 * migrated table has the v2 columns at its end. */
#define KCOLS_COMMON "key, arch, src_hash, entry, registers, smem_static, spill_stores, spill_loads, compile_ms, " \
                     "cubin_bytes, cubin_hash, created, last_used, hits"
#define KCOLS_V2 KCOLS_COMMON ", smem_dynamic, stack, threads"
#define KCOLS_V1 KCOLS_COMMON ", 0, 0, 0"
#define KCOL_CUBIN 17 /* index of the cubin column appended after the lists above */
/* the thresholds' columns (schema 4; also the insert list), and what a select
 * of an older file reads in their place */
#define THCOLS_V4 "model, layer, head, tau, budget, budget_abs, samples, created, density, error, thr"
#define THCOLS_V3 "model, layer, head, tau, budget, budget_abs, samples, created, density, error, 0"
#define THCOLS_V2 "model, layer, head, tau, 0, 0, 0, 0, -1, -1, 0"
#define THCOLS_FOR(uv) ((uv) >= 4 ? THCOLS_V4 : (uv) >= 3 ? THCOLS_V3 : THCOLS_V2)
#define TH_INSERT_VALUES "VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"
#define TCOLS "device, arch, sm_count, driver_version, key, bucket, winner, time_ms, spread_pct, tried, created"
/* An arch filter (?1): the arch itself and its arch-specific variant. A base
 * arch names the devices, and on sm_90 devices sale runs sm_90a cubins (the
 * wgmma kernels): "sm_90" without them would ship half of what Hopper needs.
 * "sm_90a" matches only itself. */
#define ARCH_FILTER "(arch = ?1 OR arch = ?1 || 'a')"

/* Schema version 2, frozen: a fresh file is created as v2 and migrated, so
 * every file takes the same path to the current version. */
#define SCHEMA_V2_SQL \
    "CREATE TABLE IF NOT EXISTS kernels(" \
    " key TEXT NOT NULL, arch TEXT NOT NULL, src_hash INTEGER NOT NULL, entry TEXT NOT NULL," \
    " registers INTEGER NOT NULL DEFAULT 0, smem_static INTEGER NOT NULL DEFAULT 0," \
    " smem_dynamic INTEGER NOT NULL DEFAULT 0, spill_stores INTEGER NOT NULL DEFAULT 0," \
    " spill_loads INTEGER NOT NULL DEFAULT 0, stack INTEGER NOT NULL DEFAULT 0," \
    " threads INTEGER NOT NULL DEFAULT 0, compile_ms REAL NOT NULL DEFAULT 0," \
    " cubin BLOB NOT NULL, cubin_bytes INTEGER NOT NULL, cubin_hash INTEGER NOT NULL," \
    " created INTEGER NOT NULL, last_used INTEGER NOT NULL, hits INTEGER NOT NULL DEFAULT 0," \
    " PRIMARY KEY(key, arch, src_hash));" \
    "CREATE TABLE IF NOT EXISTS tuned(" \
    " device TEXT NOT NULL, arch TEXT NOT NULL, sm_count INTEGER NOT NULL, driver_version INTEGER NOT NULL," \
    " key TEXT NOT NULL, bucket TEXT NOT NULL, winner TEXT NOT NULL, time_ms REAL, spread_pct REAL," \
    " tried INTEGER, created INTEGER," \
    " PRIMARY KEY(device, arch, sm_count, driver_version, key, bucket));" \
    "CREATE TABLE IF NOT EXISTS thresholds(" \
    " model TEXT NOT NULL, layer INTEGER NOT NULL, head INTEGER NOT NULL, tau REAL NOT NULL," \
    " PRIMARY KEY(model, layer, head));" \
    "CREATE TABLE IF NOT EXISTS claims(" \
    " key TEXT NOT NULL, arch TEXT NOT NULL, src_hash INTEGER NOT NULL, pid INTEGER NOT NULL," \
    " host TEXT NOT NULL, claimed_at INTEGER NOT NULL, PRIMARY KEY(key, arch, src_hash));" \
    "PRAGMA user_version = 2;"

/* Version 3: how each threshold was chosen (sale calibrate). */
#define MIGRATE_2_3_SQL \
    "ALTER TABLE thresholds ADD COLUMN budget REAL NOT NULL DEFAULT 0;" \
    "ALTER TABLE thresholds ADD COLUMN budget_abs INTEGER NOT NULL DEFAULT 0;" \
    "ALTER TABLE thresholds ADD COLUMN samples INTEGER NOT NULL DEFAULT 0;" \
    "ALTER TABLE thresholds ADD COLUMN created INTEGER NOT NULL DEFAULT 0;" \
    "ALTER TABLE thresholds ADD COLUMN density REAL NOT NULL DEFAULT -1;" \
    "ALTER TABLE thresholds ADD COLUMN error REAL NOT NULL DEFAULT -1;" \
    "PRAGMA user_version = 3;"

/* Version 4: the threshold variant each threshold was calibrated with
 * (0: not recorded, as every row of an older file). */
#define MIGRATE_3_4_SQL \
    "ALTER TABLE thresholds ADD COLUMN thr INTEGER NOT NULL DEFAULT 0;" \
    "PRAGMA user_version = 4;"

static const char SCHEMA_V2[] = SCHEMA_V2_SQL;
static const char MIGRATE_2_3[] = MIGRATE_2_3_SQL;
static const char MIGRATE_3_4[] = MIGRATE_3_4_SQL;
static const char SCHEMA_CURRENT[] = SCHEMA_V2_SQL MIGRATE_2_3_SQL MIGRATE_3_4_SQL;

/* Version 1 had no smem_dynamic/stack/threads and no tuned/thresholds/claims. */
static const char MIGRATE_1_2[] = "ALTER TABLE kernels ADD COLUMN smem_dynamic INTEGER NOT NULL DEFAULT 0;"
                                  "ALTER TABLE kernels ADD COLUMN stack INTEGER NOT NULL DEFAULT 0;"
                                  "ALTER TABLE kernels ADD COLUMN threads INTEGER NOT NULL DEFAULT 0;";

/* ------------------------------------------------------------ helpers */

static void read_threshold(sqlite3_stmt *s, db_threshold_row *r, int fleet);
static int bind_threshold(sqlite3_stmt *s, const db_threshold_row *r, int64_t created);

static void set_err(char *err, size_t n, const char *fmt, ...) {
    if (!err || !n) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

static int is_busy_rc(int rc);

/* "what: sqlite message"; returns -1 so callers can `return sql_fail(...)`.
 * A lock held past the wait names the file, so that the user knows which
 * file another process holds ("database is locked" alone does not say). */
static int sql_fail(char *err, size_t n, sqlite3 *c, const char *what) {
    const char *file = c ? sqlite3_db_filename(c, "main") : NULL;
    if (c && is_busy_rc(sqlite3_extended_errcode(c)) && file && file[0])
        set_err(err, n, "%s: %s: %s (another process holds its lock; waited %d s)", what, file, sqlite3_errmsg(c),
                DB_BUSY_MS / 1000);
    else
        set_err(err, n, "%s: %s", what, c ? sqlite3_errmsg(c) : "out of memory");
    return -1;
}

static void dlog(const db *d, int level, const char *fmt, ...) {
    if (!d || !d->log) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    d->log(d->log_user, level, msg);
}

static int64_t mono_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* SQLite's busy handler for the cache's connection: waits up to
 * busy_limit_ms for another process's lock, and says once (after a second)
 * that it is waiting and for which file, so that a command stuck behind
 * another process's long write does not look hung. 0 gives up (SQLITE_BUSY). */
static int on_busy(void *arg, int count) {
    db *d = arg;
    int64_t now = mono_ms();
    if (count == 0) d->busy_since = now, d->busy_told = 0;
    int64_t waited = now - d->busy_since;
    if (waited >= d->busy_limit_ms) return 0;
    if (!d->busy_told && waited >= 1000) {
        d->busy_told = 1;
        dlog(d, 1, "sale cache %s: waiting for another process's lock on it (up to %d s)", d->path,
             d->busy_limit_ms / 1000);
    }
    sqlite3_sleep(count < 6 ? 1 << count : 50);
    return 1;
}

/* The cache connection's wait for a lock: on_busy with limit ms. */
static void set_busy(db *d, int ms) {
    d->busy_limit_ms = ms;
    if (d->w) sqlite3_busy_handler(d->w, on_busy, d);
}

static void lock(db *d) { pthread_mutex_lock(&d->mu); d->ops++; }
static void unlock(db *d) { pthread_mutex_unlock(&d->mu); }

static int is_corrupt_rc(int rc) {
    rc &= 0xff;
    return rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT;
}

static int is_busy_rc(int rc) {
    rc &= 0xff;
    return rc == SQLITE_BUSY || rc == SQLITE_LOCKED;
}

static void copy_text(char *dst, size_t n, sqlite3_stmt *s, int col) {
    const unsigned char *t = sqlite3_column_text(s, col);
    snprintf(dst, n, "%s", t ? (const char *)t : "");
}

/* The busy handler already waits DB_BUSY_MS; a few retries on top cover the
 * cases where SQLite reports BUSY without invoking it. */
static int begin_immediate(sqlite3 *c) {
    int rc = SQLITE_BUSY;
    const int64_t t0 = mono_ms();
    for (int i = 0; i < 4; i++) {
        rc = sqlite3_exec(c, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (!is_busy_rc(rc) || mono_ms() - t0 >= DB_BUSY_MS) return rc; /* one wait in all, not four */
        usleep(10000 + (useconds_t)(rand() % 40000));
    }
    return rc;
}

static void rollback(sqlite3 *c) {
    if (!sqlite3_get_autocommit(c)) sqlite3_exec(c, "ROLLBACK", NULL, NULL, NULL);
}

static int commit(sqlite3 *c, char *err, size_t n, const char *what) {
    int rc = sqlite3_exec(c, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        char w[160];
        snprintf(w, sizeof w, "%s: commit", what);
        sql_fail(err, n, c, w);
        rollback(c);
        return -1;
    }
    return 0;
}

/* One prepared write in its own IMMEDIATE transaction: 0, or -1 with err. */
static int step_in_transaction(db *d, sqlite3_stmt *s, const char *what, char *err, size_t errlen) {
    char where[96];
    if (begin_immediate(d->w) != SQLITE_OK) {
        snprintf(where, sizeof where, "%s: begin", what);
        sql_fail(err, errlen, d->w, where);
        return -1;
    }
    if (sqlite3_step(s) != SQLITE_DONE) {
        snprintf(where, sizeof where, "%s: insert", what);
        sql_fail(err, errlen, d->w, where);
        rollback(d->w);
        return -1;
    }
    return commit(d->w, err, errlen, what);
}

static int64_t now_s(void) { return (int64_t)time(NULL); }

static int get_int(sqlite3 *c, const char *sql, int *v) {
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(c, sql, -1, &s, NULL);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *v = sqlite3_column_int(s, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        *v = 0;
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc;
}

/* *ok = 1 when `PRAGMA quick_check` says "ok"; otherwise why holds its first complaint. */
static int quick_check(sqlite3 *c, int *ok, char *why, size_t n) {
    sqlite3_stmt *s = NULL;
    *ok = 0;
    int rc = sqlite3_prepare_v2(c, "PRAGMA quick_check(1)", -1, &s, NULL);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(s, 0);
        *ok = t && strcmp((const char *)t, "ok") == 0;
        if (!*ok) set_err(why, n, "quick_check: %s", t ? (const char *)t : "(null)");
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
        set_err(why, n, "quick_check returned nothing");
    }
    sqlite3_finalize(s);
    return rc;
}

/* 1 when every table and column of schema version uv is there, 0 when
 * something is missing, or a (corrupt/busy/...) SQLite code > 1 -> returned negated. */
static int has_tables(sqlite3 *c, int uv, int *rc_out) {
    static const char *v2[] = {
        "SELECT " KCOLS_V2 ", cubin FROM kernels LIMIT 0",
        "SELECT device, arch, sm_count, driver_version, key, bucket, winner, time_ms, spread_pct, tried, created "
        "FROM tuned LIMIT 0",
        "SELECT model, layer, head, tau FROM thresholds LIMIT 0",
        "SELECT key, arch, src_hash, pid, host, claimed_at FROM claims LIMIT 0",
    };
    static const char *v1[] = {"SELECT " KCOLS_COMMON ", cubin FROM kernels LIMIT 0"};
    char v3_thresholds[256]; /* the threshold columns of versions 3 and 4 */
    snprintf(v3_thresholds, sizeof v3_thresholds, "SELECT %s FROM thresholds LIMIT 0", THCOLS_FOR(uv));
    const char **q = uv >= 2 ? v2 : v1;
    int nq = uv >= 2 ? 4 : 1;
    if (uv >= 3) {
        sqlite3_stmt *s = NULL;
        int rc = sqlite3_prepare_v2(c, v3_thresholds, -1, &s, NULL);
        sqlite3_finalize(s);
        if (rc == SQLITE_ERROR) return 0;
        if (rc != SQLITE_OK) {
            *rc_out = rc;
            return 0;
        }
    }
    *rc_out = SQLITE_OK;
    for (int i = 0; i < nq; i++) {
        sqlite3_stmt *s = NULL;
        int rc = sqlite3_prepare_v2(c, q[i], -1, &s, NULL);
        sqlite3_finalize(s);
        if (rc == SQLITE_ERROR) return 0; /* no such table / column */
        if (rc != SQLITE_OK) {
            *rc_out = rc;
            return 0;
        }
    }
    return 1;
}

static int mkdir_p_parent(const char *path, char *err, size_t n) {
    char *p = strdup(path);
    if (!p) return set_err(err, n, "db_open: out of memory"), -1;
    char *slash = strrchr(p, '/');
    if (!slash || slash == p) {
        free(p);
        return 0;
    }
    *slash = '\0';
    for (char *q = p + 1;; q++) {
        if (*q == '/' || *q == '\0') {
            char c = *q;
            *q = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                set_err(err, n, "db_open: mkdir %s: %s", p, strerror(errno));
                free(p);
                return -1;
            }
            *q = c;
            if (c == '\0') break;
        }
    }
    free(p);
    return 0;
}

static char *str_cat(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }
    return s;
}

/* SQLite's files beside a database: opening a WAL-mode file (even a
 * read-only open, even of a file it then finds unusable) creates them. */
static const char *const sib_sfx[] = {"-wal", "-shm", "-journal"};

/* Which of path's siblings exist: bit i for sib_sfx[i]. */
static int siblings_present(const char *path) {
    int had = 0;
    for (int i = 0; i < 3; i++) {
        char p[4200];
        struct stat st;
        snprintf(p, sizeof p, "%s%s", path, sib_sfx[i]);
        if (lstat(p, &st) == 0) had |= 1 << i;
    }
    return had;
}

/* Delete the siblings of path that were not there before (had, from
 * siblings_present): what opening a file we then refused left beside it.
 * Only plain files; never one that was there before. */
static void siblings_remove_new(const char *path, int had) {
    for (int i = 0; i < 3; i++) {
        char p[4200];
        struct stat st;
        snprintf(p, sizeof p, "%s%s", path, sib_sfx[i]);
        if (!(had & (1 << i)) && lstat(p, &st) == 0 && S_ISREG(st.st_mode)) unlink(p);
    }
}

/* 1 when path's write-ahead log holds frames: committed rows that only a
 * reader of the log sees (an immutable open reads the main file alone). */
static int wal_pending(const char *path) {
    char p[4200];
    struct stat st;
    snprintf(p, sizeof p, "%s-wal", path);
    return stat(p, &st) == 0 && st.st_size > 0;
}

#define DB_KEEP_ASIDE 3 /* moved-aside copies kept per tag; older ones are deleted */

static int cmp_mtime_desc(const void *a, const void *b) {
    const struct {
        char *p;
        time_t t;
    } *x = a, *y = b;
    return x->t < y->t ? 1 : x->t > y->t ? -1 : strcmp(y->p, x->p);
}

/* Keep the DB_KEEP_ASIDE newest "<path>.<tag>-*" files (and their -wal/-shm/
 * -journal); delete older ones so they do not pile up forever. */
static int is_sale_file(const char *path);

static void prune_aside(db *d, const char *path, const char *tag) {
    char *dir = strdup(path), *base = NULL;
    if (!dir) return;
    char *sl = strrchr(dir, '/');
    if (sl) {
        *sl = '\0';
        base = sl + 1;
    } else {
        base = dir;
    }
    const char *dname = sl ? (dir[0] ? dir : "/") : ".";
    char prefix[1024];
    snprintf(prefix, sizeof prefix, "%s.%s-", base, tag);
    DIR *dh = opendir(dname);
    struct {
        char *p;
        time_t t;
    } *v = NULL;
    size_t nv = 0, cap = 0;
    struct dirent *e;
    while (dh && (e = readdir(dh))) {
        size_t lp = strlen(prefix);
        if (strncmp(e->d_name, prefix, lp) != 0) continue;
        if (strstr(e->d_name + lp, "-wal") || strstr(e->d_name + lp, "-shm") || strstr(e->d_name + lp, "-journal"))
            continue;
        char full[4200];
        snprintf(full, sizeof full, "%s/%s", dname, e->d_name);
        struct stat st;
        if (lstat(full, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        /* only damaged sale caches are ever deleted: a file moved aside from
         * the default location that shows no trace of one is kept */
        if (!is_sale_file(full)) continue;
        if (nv == cap) {
            cap = cap ? 2 * cap : 8;
            void *t = realloc(v, cap * sizeof *v);
            if (!t) break;
            v = t;
        }
        v[nv].p = strdup(full);
        v[nv].t = st.st_mtime;
        if (v[nv].p) nv++;
    }
    if (dh) closedir(dh);
    if (nv > DB_KEEP_ASIDE) qsort(v, nv, sizeof *v, cmp_mtime_desc);
    for (size_t i = 0; i < nv; i++) {
        if (i >= DB_KEEP_ASIDE) {
            static const char *sfx[] = {"", "-wal", "-shm", "-journal"};
            for (int k = 0; k < 4; k++) {
                char q[4300];
                snprintf(q, sizeof q, "%s%s", v[i].p, sfx[k]);
                unlink(q);
            }
            dlog(d, 1, "sale cache: deleted the old copy %s (keeping the %d newest)", v[i].p, DB_KEEP_ASIDE);
        }
        free(v[i].p);
    }
    free(v);
    free(dir);
}

/* Rename path (and its -wal/-shm) to "<path>.<tag>-<unix time>"; dest gets the new name. */
static int move_aside(const char *path, const char *tag, char *dest, size_t destn, char *err, size_t n) {
    long long t = (long long)now_s();
    snprintf(dest, destn, "%s.%s-%lld", path, tag, t);
    if (access(dest, F_OK) == 0) snprintf(dest, destn, "%s.%s-%lld-%d", path, tag, t, (int)getpid());
    /* The siblings first: once path itself is gone, another process may
     * create a fresh cache there, and its -journal/-wal/-shm are not ours. */
    static const char *sib[] = {"-wal", "-shm", "-journal"};
    for (int i = 0; i < 3; i++) {
        char a[4096], b[4200];
        snprintf(a, sizeof a, "%s%s", path, sib[i]);
        snprintf(b, sizeof b, "%s%s", dest, sib[i]);
        if (rename(a, b) != 0 && errno != ENOENT) unlink(a);
    }
    if (rename(path, dest) != 0 && errno != ENOENT) {
        set_err(err, n, "db_open: move %s aside to %s: %s", path, dest, strerror(errno));
        return -1;
    }
    return 0;
}

static int open_conn(sqlite3 **out, const char *name, int flags, char *err, size_t n, const char *what) {
    sqlite3 *c = NULL;
    int rc = sqlite3_open_v2(name, &c, flags, NULL);
    if (rc != SQLITE_OK) {
        set_err(err, n, "%s: open %s: %s", what, name, c ? sqlite3_errmsg(c) : sqlite3_errstr(rc));
        sqlite3_close(c);
        *out = NULL;
        return -1;
    }
    sqlite3_busy_timeout(c, DB_BUSY_MS);
    *out = c;
    return 0;
}

static char *fleet_uri(const char *path);
/* PF_REFUSE: a PF_ERR for a file that is no usable cache (err says why),
 * not one that could not be read; open_writable turns it into PF_ERR. */
enum { PF_ERR = -1, PF_OK = 0, PF_CORRUPT = 1, PF_NEWER = 2, PF_REFUSE = 3 };

/* Bring an opened writable connection to the current schema, or say why it
 * cannot be trusted (PF_CORRUPT / PF_NEWER with why filled). */
static int prepare_file(sqlite3 *c, int memory, char *why, size_t whyn, char *err, size_t n) {
    int uv = 0, rc, ok, trc;
    rc = get_int(c, "PRAGMA user_version", &uv);
    if (is_corrupt_rc(rc)) return set_err(why, whyn, "%s", sqlite3_errmsg(c)), PF_CORRUPT;
    if (rc != SQLITE_OK) return sql_fail(err, n, c, "db_open: read schema version"), PF_ERR;
    if (uv > DB_SCHEMA_VERSION) {
        set_err(why, whyn, "schema version %d is newer than this library's %d", uv, DB_SCHEMA_VERSION);
        return PF_NEWER;
    }
    /* Another application's database is recognised before anything is
     * written to it (journal_mode=WAL rewrites the header and leaves -wal
     * and -shm beside it). */
    if (uv == 0) {
        int nobj = 0;
        rc = get_int(c, "SELECT count(*) FROM sqlite_master", &nobj);
        if (is_corrupt_rc(rc)) return set_err(why, whyn, "%s", sqlite3_errmsg(c)), PF_CORRUPT;
        if (rc != SQLITE_OK) return sql_fail(err, n, c, "db_open: read schema"), PF_ERR;
        if (nobj > 0) {
            set_err(why, whyn, "a database with %d objects but no sale schema version", nobj);
            return PF_CORRUPT;
        }
    }
    if (!memory) {
        for (int i = 0; i < 20; i++) {
            rc = sqlite3_exec(c, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
            if (!is_busy_rc(rc)) break;
            usleep(20000);
        }
        if (is_corrupt_rc(rc)) return set_err(why, whyn, "%s", sqlite3_errmsg(c)), PF_CORRUPT;
        if (rc != SQLITE_OK) return sql_fail(err, n, c, "db_open: journal_mode=WAL"), PF_ERR;
    }
    rc = sqlite3_exec(c, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    if (rc != SQLITE_OK) return sql_fail(err, n, c, "db_open: synchronous=NORMAL"), PF_ERR;
    rc = quick_check(c, &ok, why, whyn);
    if (is_corrupt_rc(rc)) return set_err(why, whyn, "%s", sqlite3_errmsg(c)), PF_CORRUPT;
    if (rc != SQLITE_OK) return sql_fail(err, n, c, "db_open: quick_check"), PF_ERR;
    if (!ok) return PF_CORRUPT;

    if (uv >= 1 && uv <= DB_SCHEMA_VERSION) {
        if (!has_tables(c, uv, &trc)) {
            if (trc != SQLITE_OK && !is_corrupt_rc(trc)) return sql_fail(err, n, c, "db_open: check tables"), PF_ERR;
            set_err(why, whyn, "schema version %d but the expected tables are missing", uv);
            return PF_CORRUPT;
        }
        if (uv == DB_SCHEMA_VERSION) return PF_OK;
    }

    /* Create or migrate; re-read the version under the write lock because
     * another process may have done it meanwhile. */
    rc = begin_immediate(c);
    if (rc != SQLITE_OK) return sql_fail(err, n, c, "db_open: begin"), PF_ERR;
    rc = get_int(c, "PRAGMA user_version", &uv);
    if (rc != SQLITE_OK) {
        sql_fail(err, n, c, "db_open: read schema version");
        rollback(c);
        return PF_ERR;
    }
    const char *sql = NULL, *what = NULL;
    if (uv == 0) {
        int nobj = 0;
        rc = get_int(c, "SELECT count(*) FROM sqlite_master", &nobj);
        if (rc != SQLITE_OK || nobj > 0) {
            if (rc != SQLITE_OK) sql_fail(err, n, c, "db_open: read schema");
            rollback(c);
            if (rc != SQLITE_OK) return PF_ERR;
            set_err(why, whyn, "a database with %d objects but no sale schema version", nobj);
            return PF_CORRUPT;
        }
        sql = SCHEMA_CURRENT, what = "db_open: create schema";
    } else if (uv == 1) {
        sql = MIGRATE_1_2, what = "db_open: migrate schema 1 -> 2";
    } else if (uv == 2) {
        sql = MIGRATE_2_3, what = "db_open: migrate schema 2 -> 3";
    } else if (uv == 3) {
        sql = MIGRATE_3_4, what = "db_open: migrate schema 3 -> 4";
    } else if (uv > DB_SCHEMA_VERSION) {
        rollback(c);
        set_err(why, whyn, "schema version %d is newer than this library's %d", uv, DB_SCHEMA_VERSION);
        return PF_NEWER;
    }
    if (sql) {
        rc = sqlite3_exec(c, sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK && uv == 1) rc = sqlite3_exec(c, SCHEMA_V2, NULL, NULL, NULL);
        if (rc == SQLITE_OK && uv == 1) what = "db_open: migrate schema 2 -> 3", rc = sqlite3_exec(c, MIGRATE_2_3, NULL, NULL, NULL);
        if (rc == SQLITE_OK && (uv == 1 || uv == 2))
            what = "db_open: migrate schema 3 -> 4", rc = sqlite3_exec(c, MIGRATE_3_4, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            sql_fail(err, n, c, what);
            rollback(c);
            return PF_ERR;
        }
    }
    if (commit(c, err, n, "db_open") != 0) return PF_ERR;
    if (!has_tables(c, DB_SCHEMA_VERSION, &trc)) {
        if (trc != SQLITE_OK && !is_corrupt_rc(trc)) return sql_fail(err, n, c, "db_open: check tables"), PF_ERR;
        set_err(why, whyn, "the expected tables are missing after creation");
        return PF_CORRUPT;
    }
    return PF_OK;
}

/* A read-only file (or directory, or file system) is opened read-only:
 * lookups work, nothing is migrated, moved or written. */
static int prepare_readonly(sqlite3 *c, char *why, size_t whyn, char *err, size_t n) {
    int uv = 0, ok = 0, trc;
    int rc = get_int(c, "PRAGMA user_version", &uv);
    if (is_corrupt_rc(rc)) return set_err(why, whyn, "%s", sqlite3_errmsg(c)), PF_CORRUPT;
    if (rc != SQLITE_OK) return sql_fail(err, n, c, "db_open: read schema version (read-only)"), PF_ERR;
    if (uv != DB_SCHEMA_VERSION) {
        set_err(err, n, "db_open: the cache is read-only and has schema version %d, not %d: it cannot be %s", uv,
                DB_SCHEMA_VERSION, uv == 0 ? "created" : "migrated");
        return PF_REFUSE;
    }
    rc = quick_check(c, &ok, why, whyn);
    if (is_corrupt_rc(rc)) return set_err(why, whyn, "%s", sqlite3_errmsg(c)), PF_CORRUPT;
    if (rc != SQLITE_OK) return sql_fail(err, n, c, "db_open: quick_check"), PF_ERR;
    if (!ok) return PF_CORRUPT;
    if (!has_tables(c, uv, &trc)) {
        if (trc != SQLITE_OK && !is_corrupt_rc(trc)) return sql_fail(err, n, c, "db_open: check tables"), PF_ERR;
        set_err(why, whyn, "schema version %d but the expected tables are missing", uv);
        return PF_CORRUPT;
    }
    return PF_OK;
}

static int open_writable(db *d, char *why, size_t whyn, char *err, size_t n) {
    if (d->readonly) {
        /* WAL needs its -shm beside the file: a read-only directory may lack
         * it, so fall back to an immutable read when the plain open cannot. */
        if (open_conn(&d->w, d->path, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, err, n, "db_open") != 0)
            return PF_ERR;
        set_busy(d, DB_BUSY_MS);
        int pf = prepare_readonly(d->w, why, whyn, err, n);
        if (pf == PF_ERR || pf == PF_REFUSE) {
            sqlite3_close(d->w);
            d->w = NULL;
            char *uri = fleet_uri(d->path);
            if (!uri) return set_err(err, n, "db_open: out of memory"), PF_ERR;
            int r = open_conn(&d->w, uri, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_URI, err, n,
                              "db_open");
            free(uri);
            if (r != 0) return PF_ERR;
            set_busy(d, DB_BUSY_MS);
            pf = prepare_readonly(d->w, why, whyn, err, n);
        }
        if (pf != PF_OK) {
            sqlite3_close(d->w);
            d->w = NULL;
        }
        if (pf == PF_REFUSE) d->refused = 1, pf = PF_ERR;
        return pf;
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX;
    if (open_conn(&d->w, d->path, flags, err, n, "db_open") != 0) return PF_ERR;
    set_busy(d, DB_BUSY_MS);
    int pf = prepare_file(d->w, d->memory, why, whyn, err, n);
    if (pf != PF_OK) {
        sqlite3_close(d->w);
        d->w = NULL;
    }
    return pf;
}

/* 1 when the schema read through name (a path, or a file: URI with flags
 * having SQLITE_OPEN_URI) has a kernels table, 0 when not, -1 unreadable. */
static int kernels_table_in(const char *name, int flags) {
    sqlite3 *c = NULL;
    int found = -1;
    if (sqlite3_open_v2(name, &c, SQLITE_OPEN_READONLY | flags, NULL) == SQLITE_OK) {
        sqlite3_stmt *s = NULL;
        if (sqlite3_prepare_v2(c, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='kernels'", -1, &s,
                               NULL) == SQLITE_OK &&
            sqlite3_step(s) == SQLITE_ROW)
            found = sqlite3_column_int(s, 0) > 0;
        sqlite3_finalize(s);
    }
    sqlite3_close(c);
    return found;
}

/* 1 when path is recognisably a sale cache (a SQLite file with a kernels
 * table, even a damaged one): only such a file is ever moved aside, unless
 * it sits at the default location. The look creates nothing beside the
 * file (an immutable read); only a file whose write-ahead log holds frames
 * (its schema may be there) is read through the log. */
enum { FK_OTHER = 0, FK_SALE = 1, FK_FOREIGN_DB = 2 };
static int file_kind(const char *path);
static int is_sale_file(const char *path) { return file_kind(path) == FK_SALE; }
/* FK_SALE: a sale cache (above); FK_FOREIGN_DB: an SQLite database whose
 * schema reads and has no kernels table (another program's: never moved,
 * never deleted, at any path); FK_OTHER: anything else (not SQLite, or a
 * schema that cannot be read and holds no trace of ours) */
static int file_kind(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return FK_OTHER;
    char hdr[16];
    int sqlite_hdr = read(fd, hdr, sizeof hdr) == (ssize_t)sizeof hdr && memcmp(hdr, "SQLite format 3", 16) == 0;
    if (!sqlite_hdr) {
        close(fd);
        return FK_OTHER;
    }
    char *uri = fleet_uri(path);
    int found = uri ? kernels_table_in(uri, SQLITE_OPEN_URI) : -1;
    free(uri);
    if (found != 1 && wal_pending(path)) {
        int in_log = kernels_table_in(path, 0);
        if (in_log >= 0) found = in_log;
    }
    if (found == 0) {
        close(fd);
        return FK_FOREIGN_DB;
    }
    if (found < 0) {
        /* the schema cannot be read: look for our table's text in the first pages */
        /* (on the heap: two threads may recover two files at once) */
        enum { BUFN = 1 << 16 };
        char *buf = malloc(BUFN);
        ssize_t got = buf ? pread(fd, buf, BUFN - 1, 0) : -1;
        found = 0;
        if (got > 0) {
            buf[got] = '\0';
            for (ssize_t i = 0; i + 8 < got && !found; i++)
                if (memcmp(buf + i, "kernels(", 8) == 0) found = memmem(buf, (size_t)got, "cubin", 5) != NULL;
        }
        free(buf);
    }
    close(fd);
    return found ? FK_SALE : FK_OTHER;
}

/* the same file, unchanged (inode, size, modification and change times) */
static int same_state(const struct stat *a, const struct stat *b) {
    return a->st_ino == b->st_ino && a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
           a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* A bad file: take an advisory lock so two processes never both move files
 * aside (the second would move the first one's fresh cache), look again,
 * then move it aside and start fresh. A file that another process is
 * creating at this moment (a new file is created without the lock) can look
 * broken for an instant, so only a file that stays the same and stays broken
 * across a short wait is moved. */
static int recover(db *d, int pf, char *why, size_t whyn, char *err, size_t n) {
    if (!d->readonly && !(d->flags & DB_OPEN_DEFAULT_PATH) && !is_sale_file(d->path))
        return d->refused = 1,
               set_err(err, n, "db_open: %s is not a sale cache (%s); refusing to touch it: point --cache "
                       "(cache_path) at a sale cache or a new file", d->path, why), -1;
    if (d->flags & DB_OPEN_NO_RECOVER)
        return d->refused = 1,
               set_err(err, n, "db_open: %s %s (%s); left as it is (a command that writes the cache, such as sale "
                       "prewarm, moves a damaged sale cache aside and starts a new one)", d->path,
                       pf == PF_NEWER ? "has a newer schema"
                       : is_sale_file(d->path) ? "is damaged"
                                               : "is damaged or not a sale cache", why), -1;
    char *lockpath = str_cat(d->path, ".lock");
    if (!lockpath) return set_err(err, n, "db_open: out of memory"), -1;
    int fd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    free(lockpath);
    if (fd >= 0) flock(fd, LOCK_EX);
    int ret = -1;
    pf = open_writable(d, why, whyn, err, n);
    for (int i = 0; i < 4 && pf == PF_CORRUPT; i++) {
        struct stat s0, s1;
        int had0 = stat(d->path, &s0) == 0;
        usleep(30000);
        if (had0 && stat(d->path, &s1) == 0 && same_state(&s0, &s1))
            break; /* unchanged: broken for good */
        pf = open_writable(d, why, whyn, err, n); /* it moved under us: look again */
    }
    if (pf == PF_OK) {
        ret = 0;
    } else if (pf != PF_ERR && d->readonly) {
        d->refused = 1;
        set_err(err, n, "db_open: %s is read-only and %s (%s); left as it is", d->path,
                pf == PF_NEWER ? "has a newer schema" : "is corrupt", why);
    } else if (pf != PF_ERR && !(d->flags & DB_OPEN_DEFAULT_PATH) && !is_sale_file(d->path)) {
        d->refused = 1;
        set_err(err, n, "db_open: %s is not a sale cache (%s); refusing to touch it: point --cache (cache_path) at "
                "a sale cache or a new file", d->path, why);
    } else if (pf != PF_ERR && file_kind(d->path) == FK_FOREIGN_DB) {
        /* the default location too: another program's database there (a
         * $SALE_CACHE_DIR shared with it) is its data, not a damaged cache */
        d->refused = 1;
        set_err(err, n, "db_open: %s is another program's SQLite database (%s); refusing to touch it: set "
                "$SALE_CACHE_DIR (or --cache / cache_path) to a folder of sale's own", d->path, why);
    } else if (pf != PF_ERR) {
        char dest[4200];
        const char *tag = pf == PF_NEWER ? "newer" : "corrupt";
        if (move_aside(d->path, tag, dest, sizeof dest, err, n) == 0) {
            prune_aside(d, d->path, tag);
            dlog(d, 2, "sale cache %s %s (%s); moved aside to %s and rebuilt", d->path,
                 pf == PF_NEWER ? "has a newer schema" : "is corrupt", why, dest);
            pf = open_writable(d, why, whyn, err, n);
            if (pf == PF_OK)
                ret = 0;
            else if (pf != PF_ERR)
                set_err(err, n, "db_open: %s still unusable after rebuild: %s", d->path, why);
        }
    }
    if (fd >= 0) {
        flock(fd, LOCK_UN);
        close(fd);
    }
    return ret;
}

/* file: URI for immutable read-only access; escape what URIs give meaning to. */
static char *fleet_uri(const char *path) {
    size_t n = strlen(path);
    char *u = malloc(5 + 3 * n + 16);
    if (!u) return NULL;
    char *o = u + sprintf(u, "file:");
    for (const char *p = path; *p; p++) {
        if (*p == '%' || *p == '?' || *p == '#')
            o += sprintf(o, "%%%02X", (unsigned char)*p);
        else
            *o++ = *p;
    }
    strcpy(o, "?immutable=1");
    return u;
}

/* Check that c reads as a sale cache of a version this library reads (quick:
 * also `PRAGMA quick_check`): 0 with *uv_out, or -1 with err. *unreadable
 * says the failure was SQLite's (permission, I/O, a lock), not the file's
 * content: such a file is never called "not a sale cache", the message is
 * SQLite's. */
static int check_readonly(sqlite3 *c, const char *path, const char *what, int quick, int *uv_out, int *unreadable,
                          char *err, size_t n) {
    int uv = 0, ok = 0, trc;
    char why[512] = "";
    *unreadable = 0;
    int rc = get_int(c, "PRAGMA user_version", &uv);
    if (rc != SQLITE_OK && is_corrupt_rc(rc))
        return set_err(err, n, "%s: %s is not a sale cache: %s", what, path, sqlite3_errmsg(c)), -1;
    if (rc != SQLITE_OK)
        return *unreadable = 1, set_err(err, n, "%s: cannot read %s: %s", what, path, sqlite3_errmsg(c)), -1;
    if (uv < 1 || uv > DB_SCHEMA_VERSION)
        return set_err(err, n, "%s: %s is not a sale cache this library can read (schema version %d, expected 1..%d)",
                       what, path, uv, DB_SCHEMA_VERSION), -1;
    rc = quick ? quick_check(c, &ok, why, sizeof why) : (ok = 1, SQLITE_OK);
    if (rc != SQLITE_OK)
        return *unreadable = !is_corrupt_rc(rc),
               set_err(err, n, "%s: %s: quick_check: %s", what, path, sqlite3_errmsg(c)), -1;
    if (!ok) return set_err(err, n, "%s: %s is corrupt: %s", what, path, why), -1;
    if (!has_tables(c, uv, &trc)) {
        if (trc != SQLITE_OK && !is_corrupt_rc(trc))
            return *unreadable = 1, set_err(err, n, "%s: cannot read %s: %s", what, path, sqlite3_errmsg(c)), -1;
        return set_err(err, n, "%s: %s is not a sale cache: the kernels table is missing or incomplete%s%s", what,
                       path, trc ? ": " : "", trc ? sqlite3_errmsg(c) : ""), -1;
    }
    *uv_out = uv;
    return 0;
}

/* 1 when this user may write path and the folder it is in (SQLite writes
 * its -wal/-shm/-journal beside the file), 0 when not, -1 out of memory. */
static int writable_here(const char *path) {
    char *dir = strdup(path);
    if (!dir) return -1;
    char *sl = strrchr(dir, '/');
    const char *dn = sl ? (sl == dir ? "/" : (*sl = '\0', dir)) : ".";
    const int w = access(path, W_OK) == 0 && access(dn, W_OK) == 0;
    free(dir);
    return w;
}

/* One read-only connection to path (immutable: a file: URI that makes
 * nothing beside the file and reads the file alone), checked as above. */
/* (queryonly: a read-write connection with PRAGMA query_only, for a file
 * and folder this user may write and no log pending: such a connection,
 * the file's last, removes the -wal and -shm its read made when it closes;
 * a read-only one leaves them beside the file. Nothing is written: the
 * file's bytes stay as they were.) */
static int open_checked(sqlite3 **out, int *uv_out, const char *path, int immutable, int quick, const char *what,
                        int *unreadable, char *err, size_t n, int queryonly) {
    sqlite3 *c = NULL;
    *unreadable = 1;
    char *uri = immutable ? fleet_uri(path) : NULL;
    if (immutable && !uri) return set_err(err, n, "%s: out of memory", what), -1;
    int flags = (queryonly && !immutable ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY) | SQLITE_OPEN_FULLMUTEX |
                (immutable ? SQLITE_OPEN_URI : 0);
    int r = open_conn(&c, immutable ? uri : path, flags, err, n, what);
    free(uri);
    if (r != 0) return -1;
    if (queryonly && !immutable) {
        int qr = sqlite3_exec(c, "PRAGMA query_only=1", NULL, NULL, NULL);
        if (qr != SQLITE_OK) {
            sql_fail(err, n, c, what);
            sqlite3_close(c);
            return -1;
        }
    }
    if (check_readonly(c, path, what, quick, uv_out, unreadable, err, n) != 0) {
        sqlite3_close(c);
        return -1;
    }
    *out = c;
    return 0;
}

/* Open and validate a read-only sale cache: the fleet file (immutable: it
 * is not written while in use) or an import source. A source is looked at
 * immutably first, so that one refused leaves nothing beside it; then it is
 * read through SQLite's locks and write-ahead log, since another process
 * may be writing it. In a directory this user cannot write that read fails
 * (WAL needs a -shm beside the file): the immutable read then serves,
 * unless the log holds changes it would miss. */
static int open_readonly(sqlite3 **out, int *uv_out, const char *path, int immutable, const char *what, char *err,
                         size_t n) {
    /* a FIFO would block the open forever, a directory reads as "disk I/O error" */
    struct stat st;
    if (stat(path, &st) != 0) return set_err(err, n, "%s: %s: %s", what, path, strerror(errno)), -1;
    if (!S_ISREG(st.st_mode)) return set_err(err, n, "%s: %s is not a regular file", what, path), -1;
    sqlite3 *ci = NULL, *cp = NULL;
    int uvi = 0, uvp = 0, unreadable = 0;
    int ri = open_checked(&ci, &uvi, path, 1, 1, what, &unreadable, err, n, 0);
    if (immutable) {
        if (ri == 0) *out = ci, *uv_out = uvi;
        return ri;
    }
    const int pending = wal_pending(path), had = siblings_present(path);
    if (ri != 0 && !pending) return -1; /* the file alone is all there is: refused, nothing created */
    char perr[1024] = "";
    /* the content is the immutable read's when no log is pending: checked once */
    const int queryonly = !pending && writable_here(path) == 1;
    if (open_checked(&cp, &uvp, path, 0, ri != 0 || pending, what, &unreadable, perr, sizeof perr, queryonly) == 0) {
        sqlite3_close(ci);
        *out = cp, *uv_out = uvp;
        return 0;
    }
    /* what the failed read made beside the file (a -shm, an empty -wal)
     * goes; a -wal or -shm that was there stays */
    siblings_remove_new(path, had);
    if (ri == 0 && !pending && unreadable) {
        *out = ci, *uv_out = uvi;
        return 0;
    }
    sqlite3_close(ci);
    if (pending && unreadable)
        set_err(err, n, "%s (%s-wal holds changes not yet in the file, and reading them needs %s-shm beside it: "
                "import a copy of the file and its -wal from a directory you can write)", perr, path, path);
    else
        set_err(err, n, "%s", perr);
    return -1;
}

/* ------------------------------------------------------------ open/close */

int db_open(db **out, const char *path, const char *fleet_path, db_log_fn log, void *log_user, char *err,
            size_t errlen) {
    return db_open_ex(out, path, fleet_path, 0, log, log_user, err, errlen);
}

static int db_open_once(db **out, const char *path, const char *fleet_path, int flags, db_log_fn log,
                        void *log_user, char *err, size_t errlen) {
    if (!out || !path || !*path) return set_err(err, errlen, "db_open: no path given"), -1;
    *out = NULL;
    db *d = calloc(1, sizeof *d);
    if (!d) return set_err(err, errlen, "db_open: out of memory"), -1;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&d->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    d->log = log;
    d->log_user = log_user;
    d->memory = strcmp(path, ":memory:") == 0;
    d->flags = flags;
    d->sib_had = 7; /* a file we create: remove nothing beside it */
    d->path = strdup(path);
    d->fleet_path = fleet_path ? strdup(fleet_path) : NULL;
    if (!d->path || (fleet_path && !d->fleet_path)) {
        set_err(err, errlen, "db_open: out of memory");
        goto fail;
    }
    if (!d->memory) {
        struct stat st;
        if (stat(path, &st) == 0) {
            /* a device node, a directory, a FIFO: never a cache, never replaced */
            if (!S_ISREG(st.st_mode)) {
                set_err(err, errlen, "db_open: %s is not a regular file; refusing to use it as a cache", path);
                goto fail;
            }
            d->sib_had = siblings_present(path);
            const int w = writable_here(path);
            if (w < 0) {
                set_err(err, errlen, "db_open: out of memory");
                goto fail;
            }
            d->readonly = !w;
            if (d->readonly)
                dlog(d, 1, "sale cache %s is not writable: opened read-only (lookups only; nothing is stored)", path);
        } else if (flags & DB_OPEN_NO_CREATE) {
            set_err(err, errlen, "db_open: %s: %s", path, strerror(errno));
            goto fail;
        } else if (mkdir_p_parent(path, err, errlen) != 0) {
            goto fail;
        }
    }

    char why[512] = "";
    int pf = open_writable(d, why, sizeof why, err, errlen);
    if (pf == PF_ERR) goto fail;
    if (pf != PF_OK) {
        if (d->memory) {
            set_err(err, errlen, "db_open: in-memory cache unusable: %s", why);
            goto fail;
        }
        if (recover(d, pf, why, sizeof why, err, errlen) != 0) goto fail;
    }
    if (fleet_path && open_readonly(&d->f, &d->fleet_uv, fleet_path, 1, DB_FLEET_ERR, err, errlen) != 0)
        goto fail;
    *out = d;
    return 0;
fail:
    /* a file we refuse is left as it was: without the -wal/-shm that
     * reading its header (a WAL-mode header, say) made beside it, removed
     * once our connections to it are closed */
    if (d->refused && d->path) {
        char *path = strdup(d->path);
        const int had = d->sib_had;
        db_close(d);
        if (path) siblings_remove_new(path, had);
        free(path);
        return -1;
    }
    db_close(d);
    return -1;
}

/* Another process may be moving a damaged file aside and rebuilding it at
 * the moment we open it: when an open fails and the file changed under us
 * (another inode, size or time), open again after a short wait. */
int db_open_ex(db **out, const char *path, const char *fleet_path, int flags, db_log_fn log, void *log_user,
               char *err, size_t errlen) {
    for (int attempt = 0;; attempt++) {
        struct stat a, b;
        int had_a = path && strcmp(path, ":memory:") && stat(path, &a) == 0;
        int rc = db_open_once(out, path, fleet_path, flags, log, log_user, err, errlen);
        if (rc == 0 || attempt >= 4 || !path || !strcmp(path, ":memory:")) return rc;
        int had_b = stat(path, &b) == 0;
        int same = had_a == had_b && (!had_a || (a.st_ino == b.st_ino && a.st_size == b.st_size &&
                                                 a.st_mtime == b.st_mtime && a.st_ctime == b.st_ctime));
        if (same) return rc;
        usleep(20000u * (unsigned)(attempt + 1));
    }
}

void db_close(db *d) {
    if (!d) return;
    if (d->w) sqlite3_close(d->w);
    if (d->f) sqlite3_close(d->f);
    pthread_mutex_destroy(&d->mu);
    free(d->path);
    free(d->fleet_path);
    free(d);
}

const char *db_path(const db *d) { return d ? d->path : NULL; }

unsigned long db_op_count(db *d) {
    if (!d) return 0;
    pthread_mutex_lock(&d->mu);
    unsigned long n = d->ops;
    pthread_mutex_unlock(&d->mu);
    return n;
}
int db_readonly(const db *d) { return d ? d->readonly : 0; }

uint64_t db_fnv1a64(const void *data, size_t n, uint64_t seed) {
    const unsigned char *p = data;
    uint64_t h = seed;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

void db_row_free(db_kernel_row *row) {
    if (!row) return;
    free(row->cubin);
    row->cubin = NULL;
    row->cubin_bytes = 0;
}

/* ------------------------------------------------------------ kernels */

/* Fill row from a statement selecting KCOLS_V2/V1 (+ cubin at KCOL_CUBIN when with_cubin). */
static void read_kernel(sqlite3_stmt *s, db_kernel_row *r) {
    copy_text(r->key, sizeof r->key, s, 0);
    copy_text(r->arch, sizeof r->arch, s, 1);
    r->src_hash = (uint64_t)sqlite3_column_int64(s, 2);
    copy_text(r->entry, sizeof r->entry, s, 3);
    r->registers = sqlite3_column_int(s, 4);
    r->smem_static = sqlite3_column_int(s, 5);
    r->spill_stores = sqlite3_column_int(s, 6);
    r->spill_loads = sqlite3_column_int(s, 7);
    r->compile_ms = sqlite3_column_double(s, 8);
    r->cubin_bytes = (size_t)sqlite3_column_int64(s, 9);
    r->cubin_hash = (uint64_t)sqlite3_column_int64(s, 10);
    r->created = sqlite3_column_int64(s, 11);
    r->last_used = sqlite3_column_int64(s, 12);
    r->hits = sqlite3_column_int64(s, 13);
    r->smem_dynamic = sqlite3_column_int(s, 14);
    r->stack = sqlite3_column_int(s, 15);
    r->threads = sqlite3_column_int(s, 16);
    r->cubin = NULL;
}

static uint64_t fnv_str(uint64_t h, const char *t) { return db_fnv1a64(t, strlen(t) + 1, h); }
static uint64_t fnv_i64(uint64_t h, int64_t v) { return db_fnv1a64(&v, sizeof v, h); }

/* The hash stored in the cubin_hash column: it covers the key, arch and
 * source hash, every metadata column a launch trusts and the cubin bytes, so
 * a row served for the wrong key (a damaged index) or with a flipped
 * metadata bit never passes. Rows written before it (schema 1, older
 * builds) carry the plain cubin hash; they are still read, since the key
 * columns are compared with the request on every load anyway. */
uint64_t db_row_hash(const db_kernel_row *r, uint64_t cubin_hash) {
    uint64_t h = DB_FNV_SEED ^ 0x73616c65726f7721ULL; /* never equal to a plain cubin hash by construction */
    h = fnv_str(h, r->key);
    h = fnv_str(h, r->arch);
    h = fnv_i64(h, (int64_t)r->src_hash);
    h = fnv_str(h, r->entry);
    int64_t m[] = {r->registers, r->smem_static, r->smem_dynamic, r->spill_stores, r->spill_loads,
                   r->stack,     r->threads,     (int64_t)r->cubin_bytes};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) h = fnv_i64(h, m[i]);
    double ms = r->compile_ms;
    h = db_fnv1a64(&ms, sizeof ms, h);
    return fnv_i64(h, (int64_t)cubin_hash);
}

/* Check the row read into r (stored hash in r->cubin_hash) with the blob in
 * column col: 1 good (r->cubin_hash then holds the plain cubin hash), 0 bad. */
static int row_ok(sqlite3_stmt *s, int col, db_kernel_row *r) {
    const void *b = sqlite3_column_blob(s, col);
    size_t n = (size_t)sqlite3_column_bytes(s, col);
    if (!b || n == 0 || n != r->cubin_bytes) return 0;
    uint64_t ch = db_fnv1a64(b, n, DB_FNV_SEED);
    if (r->cubin_hash != db_row_hash(r, ch) && r->cubin_hash != ch) return 0;
    r->cubin_hash = ch;
    return 1;
}

/* 1 when the row read back is the one asked for (a damaged index can point
 * the lookup of one key at another key's row). */
static int row_is(const db_kernel_row *r, const char *key, const char *arch, uint64_t h) {
    return strcmp(r->key, key) == 0 && strcmp(r->arch, arch) == 0 && r->src_hash == h;
}

static int delete_rowid(sqlite3 *c, int64_t rowid) {
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(c, "DELETE FROM kernels WHERE rowid=?1", -1, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, rowid);
        rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc;
}

/* Best effort: a read-only directory, a full disk or a long writer must not
 * turn a found kernel into an error. */
static void count_hit(db *d, int64_t rowid, int64_t t) {
    sqlite3_stmt *s = NULL;
    if (d->readonly) return;
    set_busy(d, DB_HIT_BUSY_MS);
    int rc = sqlite3_prepare_v2(d->w, "UPDATE kernels SET hits = hits + 1, last_used = ?2 WHERE rowid=?1", -1, &s,
                                NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, rowid);
        sqlite3_bind_int64(s, 2, t);
        rc = sqlite3_step(s);
    }
    if (rc != SQLITE_DONE) dlog(d, 0, "sale cache %s: hit count not updated: %s", d->path, sqlite3_errmsg(d->w));
    sqlite3_finalize(s);
    set_busy(d, DB_BUSY_MS);
}

#define KCOL_ROWID 18 /* rowid, selected after the cubin */

/* 1 found (row filled), 0 not found, -1 error; 2 when the index gave back
 * another key's row (nothing served, err says so). */
static int get_once(db *d, sqlite3 *c, int uv, int fleet, const char *key, const char *arch, uint64_t h,
                    db_kernel_row *row, char *err, size_t n) {
    /* The index finds the rowid; every column is then read from the table
     * row itself (a covering index would hand back the key columns from the
     * index, hiding a damaged entry that points at another key's row). */
#define KSUB " FROM kernels WHERE rowid = (SELECT rowid FROM kernels WHERE key=?1 AND arch=?2 AND src_hash=?3)"
    const char *sql = uv >= 2 ? "SELECT " KCOLS_V2 ", cubin, rowid" KSUB : "SELECT " KCOLS_V1 ", cubin, rowid" KSUB;
#undef KSUB
    const char *file = fleet ? d->fleet_path : d->path;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(c, sql, -1, &s, NULL) != SQLITE_OK) return sql_fail(err, n, c, "db_kernel_get: prepare");
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, arch, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)h);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        sqlite3_finalize(s);
        return 0;
    }
    if (rc != SQLITE_ROW) {
        sql_fail(err, n, c, "db_kernel_get: select");
        sqlite3_finalize(s);
        return -1;
    }
    db_kernel_row r;
    memset(&r, 0, sizeof r);
    read_kernel(s, &r);
    int64_t rowid = sqlite3_column_int64(s, KCOL_ROWID);
    if (!row_is(&r, key, arch, h)) {
        sqlite3_finalize(s);
        set_err(err, n, "db_kernel_get: sale cache %s is corrupt: the lookup of %s (%s) returned the row of %s (%s); "
                "nothing served (run `sale verify`)", file, key, arch, r.key, r.arch);
        dlog(d, 3, "%s", err);
        return 2;
    }
    if (!row_ok(s, KCOL_CUBIN, &r)) {
        sqlite3_finalize(s);
        if (fleet) {
            dlog(d, 2, "sale fleet cache %s: row of %s (%s) fails its hash check; ignored", file, key, arch);
            return 0;
        }
        rc = d->readonly ? SQLITE_READONLY : delete_rowid(c, rowid);
        dlog(d, 2, "sale cache %s: row of %s (%s) fails its length/hash check; row %s", file, key, arch,
             rc == SQLITE_OK ? "deleted" : "could not be deleted");
        return 0;
    }
    r.cubin = malloc(r.cubin_bytes);
    if (!r.cubin) {
        sqlite3_finalize(s);
        return set_err(err, n, "db_kernel_get: out of memory for %zu cubin bytes", r.cubin_bytes), -1;
    }
    memcpy(r.cubin, sqlite3_column_blob(s, KCOL_CUBIN), r.cubin_bytes);
    sqlite3_finalize(s);
    r.from_fleet = fleet;
    if (!fleet && !d->readonly && !d->no_hit) {
        int64_t t = now_s();
        count_hit(d, rowid, t);
        r.hits++;
        r.last_used = t;
    }
    *row = r;
    return 1;
}

/* A lookup that lands on another key's row means the key index is damaged:
 * rebuild it from the table (REINDEX) once and look again; a second mismatch
 * is an error, never a served row. */
static int get_from(db *d, sqlite3 *c, int uv, int fleet, const char *key, const char *arch, uint64_t h,
                    db_kernel_row *row, char *err, size_t n) {
    int r = get_once(d, c, uv, fleet, key, arch, h, row, err, n);
    if (r != 2) return r;
    if (fleet || d->readonly) return -1;
    int rc = sqlite3_exec(c, "REINDEX kernels", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        dlog(d, 3, "sale cache %s: REINDEX after a damaged index: %s", d->path, sqlite3_errmsg(c));
        return -1;
    }
    dlog(d, 2, "sale cache %s: the kernel index was damaged and has been rebuilt (REINDEX)", d->path);
    r = get_once(d, c, uv, fleet, key, arch, h, row, err, n);
    return r == 2 ? -1 : r;
}

int db_kernel_get_ex(db *d, const char *key, const char *arch, uint64_t src_hash, int count, db_kernel_row *row,
                     char *err, size_t errlen) {
    if (!d || !key || !arch || !row) return set_err(err, errlen, "db_kernel_get: missing argument"), -1;
    lock(d);
    d->no_hit = !count;
    int r = get_from(d, d->w, DB_SCHEMA_VERSION, 0, key, arch, src_hash, row, err, errlen);
    if (r == 0 && d->f) r = get_from(d, d->f, d->fleet_uv, 1, key, arch, src_hash, row, err, errlen);
    d->no_hit = 0;
    unlock(d);
    return r;
}

int db_kernel_get(db *d, const char *key, const char *arch, uint64_t src_hash, db_kernel_row *row, char *err,
                  size_t errlen) {
    return db_kernel_get_ex(d, key, arch, src_hash, 1, row, err, errlen);
}

static int insert_kernel(sqlite3 *c, const db_kernel_row *r, uint64_t hash, int64_t created, int64_t last_used,
                         int64_t hits) {
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(c,
                                "INSERT OR IGNORE INTO kernels(" KCOLS_V2 ", cubin) VALUES "
                                "(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18)",
                                -1, &s, NULL);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_text(s, 1, r->key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, r->arch, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)r->src_hash);
    sqlite3_bind_text(s, 4, r->entry, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 5, r->registers);
    sqlite3_bind_int(s, 6, r->smem_static);
    sqlite3_bind_int(s, 7, r->spill_stores);
    sqlite3_bind_int(s, 8, r->spill_loads);
    sqlite3_bind_double(s, 9, r->compile_ms);
    sqlite3_bind_int64(s, 10, (sqlite3_int64)r->cubin_bytes);
    sqlite3_bind_int64(s, 11, (sqlite3_int64)db_row_hash(r, hash));
    sqlite3_bind_int64(s, 12, created);
    sqlite3_bind_int64(s, 13, last_used);
    sqlite3_bind_int64(s, 14, hits);
    sqlite3_bind_int(s, 15, r->smem_dynamic);
    sqlite3_bind_int(s, 16, r->stack);
    sqlite3_bind_int(s, 17, r->threads);
    sqlite3_bind_blob64(s, 18, r->cubin, (sqlite3_uint64)r->cubin_bytes, SQLITE_STATIC);
    rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int terminated(const char *s, size_t n) { return memchr(s, '\0', n) != NULL; }

int db_kernel_put(db *d, const db_kernel_row *row, char *err, size_t errlen) {
    if (!d || !row) return set_err(err, errlen, "db_kernel_put: missing argument"), -1;
    if (!terminated(row->key, sizeof row->key) || !row->key[0] || !terminated(row->arch, sizeof row->arch) ||
        !row->arch[0] || !terminated(row->entry, sizeof row->entry))
        return set_err(err, errlen, "db_kernel_put: key, arch and entry must be non-empty NUL-terminated strings"), -1;
    if (!row->cubin || row->cubin_bytes == 0) return set_err(err, errlen, "db_kernel_put: empty cubin"), -1;
    uint64_t h = db_fnv1a64(row->cubin, row->cubin_bytes, DB_FNV_SEED);
    if (row->cubin_hash != 0 && row->cubin_hash != h)
        return set_err(err, errlen, "db_kernel_put: cubin_hash does not match the cubin bytes"), -1;
    int64_t created = row->created > 0 ? row->created : now_s();
    lock(d);
    int ret = -1;
    if (begin_immediate(d->w) != SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_kernel_put: begin");
        goto out;
    }
    if (insert_kernel(d->w, row, h, created, created, 0) != SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_kernel_put: insert");
        rollback(d->w);
        goto out;
    }
    ret = commit(d->w, err, errlen, "db_kernel_put");
out:
    unlock(d);
    return ret;
}

/* ------------------------------------------------------------ claims */

static void host_name(char *h, size_t n) {
    if (gethostname(h, n) != 0) snprintf(h, n, "?");
    h[n - 1] = '\0';
}

int db_claim_stale_s(void) {
    const char *e = getenv("SALE_CLAIM_STALE_S");
    char *end;
    long v = e && *e ? strtol(e, &end, 10) : 0;
    return v >= 1 && v <= 86400 && *end == '\0' ? (int)v : DB_CLAIM_STALE_S;
}

int db_claim(db *d, const char *key, const char *arch, uint64_t src_hash, int stale_s, char *err, size_t errlen) {
    if (!d || !key || !arch) return set_err(err, errlen, "db_claim: missing argument"), -1;
    char host[256], owner_host[256];
    host_name(host, sizeof host);
    int64_t t = now_s();
    int me = (int)getpid(), ret = -1;
    sqlite3_stmt *s = NULL;
    lock(d);
    if (begin_immediate(d->w) != SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_claim: begin");
        goto out;
    }
    if (sqlite3_prepare_v2(d->w, "SELECT pid, host, claimed_at FROM claims WHERE key=?1 AND arch=?2 AND src_hash=?3",
                           -1, &s, NULL) != SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_claim: prepare");
        goto fail;
    }
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, arch, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)src_hash);
    int rc = sqlite3_step(s), take = 0;
    if (rc == SQLITE_DONE) {
        take = 1;
    } else if (rc == SQLITE_ROW) {
        int pid = sqlite3_column_int(s, 0);
        copy_text(owner_host, sizeof owner_host, s, 1);
        int64_t at = sqlite3_column_int64(s, 2);
        int same_host = strcmp(owner_host, host) == 0;
        if (same_host && pid == me)
            take = 1; /* already ours: refresh */
        else if (t - at >= stale_s || at > t + 5)
            take = 1, dlog(d, 1, "sale cache: taking over a %s claim on %s (%s) from pid %d@%s",
                           at > t + 5 ? "future-dated" : "stale", key, arch, pid, owner_host);
        else if (same_host && pid > 0 && kill(pid, 0) != 0 && errno == ESRCH)
            take = 1, dlog(d, 1, "sale cache: taking over the claim on %s (%s) of dead pid %d", key, arch, pid);
        if (!take) /* the caller says that it waits, once */
            set_err(err, errlen, "pid %d@%s, claimed %lld s ago", pid, owner_host, (long long)(t - at));
    } else {
        sql_fail(err, errlen, d->w, "db_claim: select");
        goto fail;
    }
    sqlite3_finalize(s);
    s = NULL;
    if (take) {
        if (sqlite3_prepare_v2(d->w,
                               "INSERT OR REPLACE INTO claims(key, arch, src_hash, pid, host, claimed_at) "
                               "VALUES (?1,?2,?3,?4,?5,?6)",
                               -1, &s, NULL) != SQLITE_OK) {
            sql_fail(err, errlen, d->w, "db_claim: prepare");
            goto fail;
        }
        sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, arch, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)src_hash);
        sqlite3_bind_int(s, 4, me);
        sqlite3_bind_text(s, 5, host, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 6, t);
        if (sqlite3_step(s) != SQLITE_DONE) {
            sql_fail(err, errlen, d->w, "db_claim: insert");
            goto fail;
        }
        sqlite3_finalize(s);
        s = NULL;
    }
    if (commit(d->w, err, errlen, "db_claim") != 0) goto out;
    ret = take;
    goto out;
fail:
    sqlite3_finalize(s);
    s = NULL;
    rollback(d->w);
out:
    sqlite3_finalize(s);
    unlock(d);
    return ret;
}

int db_unclaim(db *d, const char *key, const char *arch, uint64_t src_hash) {
    if (!d || !key || !arch) return -1;
    char host[256];
    host_name(host, sizeof host);
    sqlite3_stmt *s = NULL;
    lock(d);
    int rc = sqlite3_prepare_v2(d->w, "DELETE FROM claims WHERE key=?1 AND arch=?2 AND src_hash=?3 AND pid=?4 AND host=?5",
                                -1, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, arch, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)src_hash);
        sqlite3_bind_int(s, 4, (int)getpid());
        sqlite3_bind_text(s, 5, host, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
    }
    if (rc != SQLITE_DONE) dlog(d, 2, "sale cache %s: unclaim %s (%s): %s", d->path, key, arch, sqlite3_errmsg(d->w));
    sqlite3_finalize(s);
    unlock(d);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* ------------------------------------------------------------ list / verify / clear */

static int list_from(sqlite3 *c, int uv, int fleet, db_kernel_cb cb, void *user, int *stop, char *err, size_t n) {
    const char *sql = uv >= 2 ? "SELECT " KCOLS_V2 " FROM kernels ORDER BY arch, key"
                              : "SELECT " KCOLS_V1 " FROM kernels ORDER BY arch, key";
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(c, sql, -1, &s, NULL) != SQLITE_OK) return sql_fail(err, n, c, "db_kernel_list: prepare");
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        db_kernel_row r;
        memset(&r, 0, sizeof r);
        read_kernel(s, &r);
        r.from_fleet = fleet;
        if (cb(user, &r)) {
            *stop = 1;
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE) sql_fail(err, n, c, "db_kernel_list: select");
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : -1;
}

int db_kernel_list(db *d, int include_fleet, db_kernel_cb cb, void *user, char *err, size_t errlen) {
    if (!d || !cb) return set_err(err, errlen, "db_kernel_list: missing argument"), -1;
    int stop = 0;
    lock(d);
    int r = list_from(d->w, DB_SCHEMA_VERSION, 0, cb, user, &stop, err, errlen);
    if (r == 0 && !stop && include_fleet && d->f) r = list_from(d->f, d->fleet_uv, 1, cb, user, &stop, err, errlen);
    unlock(d);
    return r;
}

/* `PRAGMA integrity_check` of c: the number of problems it reports (each
 * logged), 0 when "ok", -1 on error (err filled). */
static int integrity(db *d, sqlite3 *c, const char *file, char *err, size_t n) {
    sqlite3_stmt *s = NULL;
    int rc, bad = 0;
    if (sqlite3_prepare_v2(c, "PRAGMA integrity_check(100)", -1, &s, NULL) != SQLITE_OK)
        return sql_fail(err, n, c, "db_verify: integrity_check");
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(s, 0);
        if (t && strcmp((const char *)t, "ok") == 0) continue;
        bad++;
        dlog(d, 2, "sale cache %s: integrity_check: %s", file, t ? (const char *)t : "(null)");
    }
    if (rc != SQLITE_DONE && !is_corrupt_rc(rc)) {
        sqlite3_finalize(s);
        return sql_fail(err, n, c, "db_verify: integrity_check");
    }
    if (rc != SQLITE_DONE) bad++, dlog(d, 2, "sale cache %s: integrity_check: %s", file, sqlite3_errmsg(c));
    sqlite3_finalize(s);
    return bad;
}

int db_verify(db *d, int *checked, int *bad, char *err, size_t errlen) {
    if (!d) return set_err(err, errlen, "db_verify: missing argument"), -1;
    int nc = 0, nb = 0, ret = -1, rc;
    int64_t *ids = NULL;
    size_t nids = 0, cap = 0;
    sqlite3_stmt *s = NULL;
    lock(d);
    /* The b-tree first: a damaged index serves one key's row for another. */
    int ib = integrity(d, d->w, d->path, err, errlen);
    if (ib < 0) goto out;
    if (ib > 0 && !d->readonly) {
        if (sqlite3_exec(d->w, "REINDEX", NULL, NULL, NULL) != SQLITE_OK) {
            sql_fail(err, errlen, d->w, "db_verify: REINDEX");
            goto out;
        }
        int again = integrity(d, d->w, d->path, err, errlen);
        if (again < 0) goto out;
        dlog(d, 2, "sale cache %s: %d integrity problem(s) found; indexes rebuilt, %d remain%s", d->path, ib, again,
             again ? ": move the file aside and rebuild it" : "");
    }
    nb += ib;
    if (sqlite3_prepare_v2(d->w, "SELECT " KCOLS_V2 ", cubin, rowid FROM kernels", -1, &s, NULL) != SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_verify: prepare");
        goto out;
    }
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        nc++;
        db_kernel_row r;
        memset(&r, 0, sizeof r);
        read_kernel(s, &r);
        if (row_ok(s, KCOL_CUBIN, &r)) continue;
        dlog(d, 2, "sale cache %s: row of %s (%s) fails its length/hash check; deleting", d->path, r.key, r.arch);
        if (nids == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *t = realloc(ids, cap * sizeof *ids);
            if (!t) {
                set_err(err, errlen, "db_verify: out of memory");
                goto out;
            }
            ids = t;
        }
        ids[nids++] = sqlite3_column_int64(s, KCOL_ROWID);
    }
    if (rc != SQLITE_DONE) {
        sql_fail(err, errlen, d->w, "db_verify: select");
        goto out;
    }
    sqlite3_finalize(s);
    s = NULL;
    if (nids && d->readonly) {
        nb += (int)nids;
        dlog(d, 2, "sale cache %s is read-only: %zu bad row(s) left in place", d->path, nids);
    } else if (nids) {
        if (begin_immediate(d->w) != SQLITE_OK) {
            sql_fail(err, errlen, d->w, "db_verify: begin");
            goto out;
        }
        if (sqlite3_prepare_v2(d->w, "DELETE FROM kernels WHERE rowid=?1", -1, &s, NULL) != SQLITE_OK) {
            sql_fail(err, errlen, d->w, "db_verify: prepare delete");
            rollback(d->w);
            goto out;
        }
        for (size_t i = 0; i < nids; i++) {
            sqlite3_reset(s);
            sqlite3_bind_int64(s, 1, ids[i]);
            if (sqlite3_step(s) != SQLITE_DONE) {
                sql_fail(err, errlen, d->w, "db_verify: delete");
                rollback(d->w);
                goto out;
            }
        }
        sqlite3_finalize(s);
        s = NULL;
        if (commit(d->w, err, errlen, "db_verify") != 0) goto out;
        nb += (int)nids;
    }
    /* The fleet file is not ours to repair: count and report its bad rows. */
    if (d->f) {
        int fb = integrity(d, d->f, d->fleet_path, err, errlen);
        if (fb < 0) goto out;
        nb += fb;
        const char *sql = d->fleet_uv >= 2 ? "SELECT " KCOLS_V2 ", cubin FROM kernels" : "SELECT " KCOLS_V1 ", cubin FROM kernels";
        if (sqlite3_prepare_v2(d->f, sql, -1, &s, NULL) != SQLITE_OK) {
            sql_fail(err, errlen, d->f, "db_verify: fleet prepare");
            goto out;
        }
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            nc++;
            db_kernel_row r;
            memset(&r, 0, sizeof r);
            read_kernel(s, &r);
            if (row_ok(s, KCOL_CUBIN, &r)) continue;
            nb++;
            dlog(d, 2, "sale fleet cache %s: row of %s (%s) fails its length/hash check", d->fleet_path, r.key, r.arch);
        }
        if (rc != SQLITE_DONE) {
            sql_fail(err, errlen, d->f, "db_verify: fleet select");
            goto out;
        }
    }
    ret = 0;
out:
    sqlite3_finalize(s);
    free(ids);
    unlock(d);
    if (checked) *checked = nc;
    if (bad) *bad = nb;
    return ret;
}

int db_clear(db *d, char *err, size_t errlen) {
    if (!d) return set_err(err, errlen, "db_clear: missing argument"), -1;
    lock(d);
    int ret = -1;
    if (begin_immediate(d->w) != SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_clear: begin");
        goto out;
    }
    if (sqlite3_exec(d->w, "DELETE FROM kernels", NULL, NULL, NULL) != SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_clear: delete");
        rollback(d->w);
        goto out;
    }
    int n = sqlite3_changes(d->w);
    if (commit(d->w, err, errlen, "db_clear") == 0) ret = n;
out:
    unlock(d);
    return ret;
}

int64_t db_file_bytes(const db *d) {
    if (!d || d->memory) return 0;
    struct stat st;
    int64_t total = 0;
    if (stat(d->path, &st) == 0) total += (int64_t)st.st_size;
    char *wal = str_cat(d->path, "-wal");
    if (wal && stat(wal, &st) == 0) total += (int64_t)st.st_size;
    free(wal);
    return total;
}

/* ------------------------------------------------------------ export / import */

static int fsync_path(const char *path, int dir) {
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) return -1;
    int r = fsync(fd);
    close(fd);
    return r;
}

static void unlink_db_files(const char *path) {
    static const char *sfx[] = {"", "-wal", "-shm", "-journal"};
    for (int i = 0; i < 4; i++) {
        char p[4200];
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
}

/* Threshold rows travel with the kernels (every model; they do not depend on
 * the arch). Import keeps rows that exist (like kernels); export writes all. */
/* keep (import): a model that has thresholds in dst keeps them all; the
 * source's rows of that model are not taken (a calibration is a whole: two
 * never mix, layer by layer), and d's log says so once per model */
static int copy_thresholds(const db *d, sqlite3 *src, const char *sdb, int suv, sqlite3 *dst, const char *ddb,
                           int keep, char *err, size_t n) {
    char sel[256], ins[256];
    /* the models dst holds before the copy, and how many rows of each the source brings */
    struct {
        char model[sizeof((db_threshold_row *)0)->model];
        int skipped;
    } *have = NULL;
    int nhave = 0;
    if (keep) {
        char q[200];
        snprintf(q, sizeof q, "SELECT DISTINCT model FROM %s.thresholds", ddb);
        sqlite3_stmt *m = NULL;
        if (sqlite3_prepare_v2(dst, q, -1, &m, NULL) != SQLITE_OK) return sql_fail(err, n, dst, "copy thresholds: models");
        int cap = 0, mrc;
        while ((mrc = sqlite3_step(m)) == SQLITE_ROW) {
            if (nhave == cap) {
                cap = cap ? 2 * cap : 16;
                void *nh = realloc(have, (size_t)cap * sizeof *have);
                if (!nh) {
                    sqlite3_finalize(m);
                    free(have);
                    return set_err(err, n, "copy thresholds: out of memory"), -1;
                }
                have = nh;
            }
            const unsigned char *t = sqlite3_column_text(m, 0);
            snprintf(have[nhave].model, sizeof have[nhave].model, "%s", t ? (const char *)t : "");
            have[nhave++].skipped = 0;
        }
        sqlite3_finalize(m);
        if (mrc != SQLITE_DONE) {
            free(have);
            return sql_fail(err, n, dst, "copy thresholds: models");
        }
    }
    snprintf(sel, sizeof sel, "SELECT %s FROM %s.thresholds", THCOLS_FOR(suv), sdb);
    snprintf(ins, sizeof ins, "INSERT OR %s INTO %s.thresholds(" THCOLS_V4 ") " TH_INSERT_VALUES,
             keep ? "IGNORE" : "REPLACE", ddb);
    sqlite3_stmt *s = NULL, *w = NULL;
    int rc, ret = -1;
    if (sqlite3_prepare_v2(src, sel, -1, &s, NULL) != SQLITE_OK) {
        sql_fail(err, n, src, "copy thresholds: read");
        goto out;
    }
    if (sqlite3_prepare_v2(dst, ins, -1, &w, NULL) != SQLITE_OK) {
        sql_fail(err, n, dst, "copy thresholds: prepare insert");
        goto out;
    }
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        db_threshold_row r;
        read_threshold(s, &r, 0);
        int mine = -1;
        for (int i = 0; i < nhave && mine < 0; i++)
            if (!strcmp(have[i].model, r.model)) mine = i;
        if (mine >= 0) {
            have[mine].skipped++;
            continue;
        }
        sqlite3_reset(w);
        if (bind_threshold(w, &r, r.created) != SQLITE_OK || sqlite3_step(w) != SQLITE_DONE) {
            sql_fail(err, n, dst, "copy thresholds: insert");
            goto out;
        }
    }
    if (rc != SQLITE_DONE) {
        sql_fail(err, n, src, "copy thresholds: read");
        goto out;
    }
    for (int i = 0; i < nhave; i++)
        if (have[i].skipped)
            dlog(d, 1, "import: model %s has thresholds here: kept as they are, the other file's %d (another "
                 "calibration) not taken; two calibrations never mix", have[i].model, have[i].skipped);
    ret = 0;
out:
    sqlite3_finalize(s);
    sqlite3_finalize(w);
    free(have);
    return ret;
}

/* 1 when a and b are one file: the same inode (a hard link, a symlink) or
 * the same real path. */
static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino) return 1;
    char *ra = realpath(a, NULL), *rb = realpath(b, NULL);
    int same = ra && rb && strcmp(ra, rb) == 0;
    free(ra);
    free(rb);
    return same;
}

/* Is dest the cache being exported, or one of its -wal/-shm/-journal? Its
 * replacement would destroy what is being read (the rows, or the log that
 * holds the latest of them), force or not. */
static int is_own_file(const db *d, const char *dest) {
    if (d->memory) return 0;
    if (same_file(dest, d->path)) return 1;
    for (int i = 0; i < 3; i++) {
        char p[4200];
        snprintf(p, sizeof p, "%s%s", d->path, sib_sfx[i]);
        if (same_file(dest, p)) return 1;
    }
    return 0;
}

/* Run insert_select (INSERT ... SELECT ... WHERE <cond>) once per arch,
 * narrowed to it with ARCH_FILTER, or once for all when narch is 0: the
 * rows it inserted, or -1 with err naming what (the table's rows). */
static int export_rows(sqlite3 *c, const char *insert_select, const char *const *archs, int narch, const char *what,
                       char *err, size_t n) {
    char sql[1024], where[96];
    if (snprintf(sql, sizeof sql, "%s%s", insert_select, narch > 0 ? " AND " ARCH_FILTER : "") >= (int)sizeof sql)
        return set_err(err, n, "db_export: the copy of %s: statement longer than %zu bytes", what, sizeof sql - 1), -1;
    sqlite3_stmt *s = NULL;
    int total = 0;
    if (sqlite3_prepare_v2(c, sql, -1, &s, NULL) != SQLITE_OK) {
        snprintf(where, sizeof where, "db_export: prepare the copy of %s", what);
        return sql_fail(err, n, c, where);
    }
    for (int i = 0; i < (narch > 0 ? narch : 1); i++) {
        sqlite3_reset(s);
        if (narch > 0) sqlite3_bind_text(s, 1, archs[i], -1, SQLITE_STATIC);
        if (sqlite3_step(s) != SQLITE_DONE) {
            snprintf(where, sizeof where, "db_export: copy %s", what);
            sql_fail(err, n, c, where);
            sqlite3_finalize(s);
            return -1;
        }
        total += sqlite3_changes(c);
    }
    sqlite3_finalize(s);
    return total;
}

int db_export(db *d, const char *dest, const char *const *archs, int narch, char *err, size_t errlen) {
    return db_export_ex(d, dest, archs, narch, 0, err, errlen);
}

int db_export_ex(db *d, const char *dest, const char *const *archs, int narch, int flags, char *err, size_t errlen) {
    if (!d || !dest || !*dest || narch < 0 || (narch > 0 && !archs))
        return set_err(err, errlen, "db_export: missing argument"), -1;
    if (is_own_file(d, dest))
        return set_err(err, errlen, "db_export: %s is the cache being exported (%s); refusing to replace it: "
                       "export into another file", dest, d->path), -1;
    struct stat st;
    int replacing = 0;
    if (lstat(dest, &st) == 0) {
        if (!S_ISREG(st.st_mode))
            return set_err(err, errlen, "db_export: %s exists and is not a regular file; refusing to replace it", dest),
                   -1;
        replacing = is_sale_file(dest);
        if (!replacing && st.st_size > 0 && !(flags & DB_EXPORT_FORCE))
            return set_err(err, errlen, "db_export: %s exists and is not a sale cache; refusing to replace it "
                           "(--force to overwrite)", dest), -1;
    }
    char *tmp = malloc(strlen(dest) + 64);
    if (!tmp) return set_err(err, errlen, "db_export: out of memory"), -1;
    sqlite3 *c = NULL;
    sqlite3_stmt *s = NULL;
    int ret = -1, attached = 0, total = 0, made_tmp = 0;
    lock(d);
    if (mkdir_p_parent(dest, err, errlen) != 0) goto out;
    /* a fresh name of our own (O_EXCL): never someone else's dest.tmp */
    for (int i = 0; i < 100 && !made_tmp; i++) {
        sprintf(tmp, "%s.tmp-%d-%d", dest, (int)getpid(), i);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd >= 0) close(fd), made_tmp = 1;
        else if (errno != EEXIST) break;
    }
    if (!made_tmp) {
        set_err(err, errlen, "db_export: create %s: %s", tmp, strerror(errno));
        goto out;
    }
    /* A self-contained rollback-journal file: nothing beside it to ship. */
    if (open_conn(&c, tmp, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, err, errlen, "db_export") != 0) goto out;
    if (sqlite3_exec(c, SCHEMA_CURRENT, NULL, NULL, NULL) != SQLITE_OK) {
        sql_fail(err, errlen, c, "db_export: create schema");
        goto out;
    }
    if (sqlite3_close(c) != SQLITE_OK) {
        sql_fail(err, errlen, c, "db_export: close");
        goto out;
    }
    c = NULL;
    if (sqlite3_prepare_v2(d->w, "ATTACH DATABASE ?1 AS sale_export", -1, &s, NULL) != SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_export: prepare attach");
        goto out;
    }
    sqlite3_bind_text(s, 1, tmp, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE) {
        sql_fail(err, errlen, d->w, "db_export: attach");
        goto out;
    }
    sqlite3_finalize(s);
    s = NULL;
    attached = 1;
    if (sqlite3_exec(d->w, "PRAGMA sale_export.synchronous=FULL", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(d->w, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_export: begin");
        goto out;
    }
    /* the kernels of those archs, and the tuning winners measured on them:
     * a fleet of the same devices then runs the tuned tiles without tuning */
    total = export_rows(d->w, "INSERT OR IGNORE INTO sale_export.kernels(" KCOLS_V2 ", cubin) SELECT " KCOLS_V2
                        ", cubin FROM main.kernels WHERE length(cubin) = cubin_bytes", archs, narch, "kernels", err,
                        errlen);
    if (total < 0 || export_rows(d->w, "INSERT OR IGNORE INTO sale_export.tuned(" TCOLS ") SELECT " TCOLS
                                 " FROM main.tuned WHERE 1", archs, narch, "tuning winners", err, errlen) < 0) {
        rollback(d->w);
        goto out;
    }
    if (copy_thresholds(d, d->w, "main", DB_SCHEMA_VERSION, d->w, "sale_export", 0, err, errlen) != 0) {
        rollback(d->w);
        goto out;
    }
    int held = total;
    if (!held) {
        /* no kernel: thresholds or winners alone still make a fleet file */
        sqlite3_stmt *q = NULL;
        if (sqlite3_prepare_v2(d->w, "SELECT (SELECT count(*) FROM sale_export.thresholds) + (SELECT count(*) "
                                     "FROM sale_export.tuned)", -1, &q, NULL) != SQLITE_OK ||
            sqlite3_step(q) != SQLITE_ROW) {
            sql_fail(err, errlen, d->w, "db_export: count");
            sqlite3_finalize(q);
            rollback(d->w);
            goto out;
        }
        held = sqlite3_column_int(q, 0);
        sqlite3_finalize(q);
    }
    if (held == 0) { /* a file with nothing in it: nothing written, dest as it was */
        rollback(d->w);
        char which[256] = "";
        for (int i = 0; i < narch; i++)
            snprintf(which + strlen(which), sizeof which - strlen(which), "%s%s", i ? ", " : " of ", archs[i]);
        set_err(err, errlen, "db_export: no kernels%s, tuning winners or thresholds in %s; nothing written", which,
                d->path);
        ret = -2;
        goto out;
    }
    if (commit(d->w, err, errlen, "db_export") != 0) goto out;
    if (sqlite3_exec(d->w, "DETACH DATABASE sale_export", NULL, NULL, NULL) != SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_export: detach");
        goto out;
    }
    attached = 0;
    if (fsync_path(tmp, 0) != 0) {
        set_err(err, errlen, "db_export: fsync %s: %s", tmp, strerror(errno));
        goto out;
    }
    /* A stale -wal beside an old sale cache at dest would be replayed onto
     * the new file; beside anything else, they are not ours to delete. */
    if (replacing) {
        char p[4200];
        snprintf(p, sizeof p, "%s-wal", dest);
        unlink(p);
        snprintf(p, sizeof p, "%s-shm", dest);
        unlink(p);
    }
    if (rename(tmp, dest) != 0) {
        set_err(err, errlen, "db_export: rename %s to %s: %s", tmp, dest, strerror(errno));
        goto out;
    }
    {
        char *dir = strdup(dest);
        char *sl = dir ? strrchr(dir, '/') : NULL;
        if (sl) {
            *(sl == dir ? sl + 1 : sl) = '\0';
            fsync_path(dir, 1);
        } else if (dir) {
            fsync_path(".", 1);
        }
        free(dir);
    }
    ret = total;
out:
    sqlite3_finalize(s);
    if (attached) sqlite3_exec(d->w, "DETACH DATABASE sale_export", NULL, NULL, NULL);
    if (c) sqlite3_close(c);
    if (ret < 0 && made_tmp) unlink_db_files(tmp);
    free(tmp);
    unlock(d);
    return ret;
}

/* The tuning winners of another file (src, schema 2 or later: the tuned
 * table has not changed since) into dst's main, keeping dst's own where
 * both have one. Returns the rows added, or -1 with err. */
static int import_tuned(sqlite3 *src, sqlite3 *dst, char *err, size_t n) {
    sqlite3_stmt *s = NULL, *w = NULL;
    int rc, added = -1;
    if (sqlite3_prepare_v2(src, "SELECT " TCOLS " FROM main.tuned", -1, &s, NULL) != SQLITE_OK)
        return sql_fail(err, n, src, "db_import: read tuning winners");
    if (sqlite3_prepare_v2(dst, "INSERT OR IGNORE INTO main.tuned(" TCOLS ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
                           -1, &w, NULL) != SQLITE_OK) {
        sql_fail(err, n, dst, "db_import: prepare tuning winners");
        goto out;
    }
    added = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        sqlite3_reset(w);
        for (int i = 0; i < 11; i++) sqlite3_bind_value(w, i + 1, sqlite3_column_value(s, i));
        if (sqlite3_step(w) != SQLITE_DONE) {
            sql_fail(err, n, dst, "db_import: insert tuning winner");
            added = -1;
            goto out;
        }
        added += sqlite3_changes(dst);
    }
    if (rc != SQLITE_DONE) {
        sql_fail(err, n, src, "db_import: read tuning winners");
        added = -1;
    }
out:
    sqlite3_finalize(s);
    sqlite3_finalize(w);
    return added;
}

int db_import(db *d, const char *src, char *err, size_t errlen) {
    if (!d || !src || !*src) return set_err(err, errlen, "db_import: missing argument"), -1;
    sqlite3 *c = NULL;
    sqlite3_stmt *s = NULL;
    int uv = 0, ret = -1, added = 0, skipped = 0, rc;
    struct stat st;
    if (stat(src, &st) != 0) return set_err(err, errlen, "db_import: %s: %s", src, strerror(errno)), -1;
    if (open_readonly(&c, &uv, src, 0, "db_import", err, errlen) != 0) return -1;
    lock(d);
    const char *sql = uv >= 2 ? "SELECT " KCOLS_V2 ", cubin FROM kernels" : "SELECT " KCOLS_V1 ", cubin FROM kernels";
    if (sqlite3_prepare_v2(c, sql, -1, &s, NULL) != SQLITE_OK) {
        sql_fail(err, errlen, c, "db_import: prepare");
        goto out;
    }
    if (begin_immediate(d->w) != SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_import: begin");
        goto out;
    }
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        db_kernel_row r;
        memset(&r, 0, sizeof r);
        read_kernel(s, &r);
        if (!row_ok(s, KCOL_CUBIN, &r)) {
            skipped++;
            dlog(d, 2, "sale cache import from %s: cubin of %s (%s) fails its length/hash check; skipped", src, r.key,
                 r.arch);
            continue;
        }
        r.cubin = (unsigned char *)sqlite3_column_blob(s, KCOL_CUBIN);
        if (insert_kernel(d->w, &r, r.cubin_hash, r.created, r.last_used, 0) != SQLITE_OK) {
            sql_fail(err, errlen, d->w, "db_import: insert");
            rollback(d->w);
            goto out;
        }
        added += sqlite3_changes(d->w);
    }
    if (rc != SQLITE_DONE) {
        sql_fail(err, errlen, c, "db_import: read source");
        rollback(d->w);
        goto out;
    }
    if (uv >= 2 && (copy_thresholds(d, c, "main", uv, d->w, "main", 1, err, errlen) != 0 ||
                    import_tuned(c, d->w, err, errlen) < 0)) {
        rollback(d->w);
        goto out;
    }
    if (commit(d->w, err, errlen, "db_import") != 0) goto out;
    ret = added;
out:
    sqlite3_finalize(s);
    sqlite3_close(c);
    unlock(d);
    return ret;
}

/* ------------------------------------------------------------ tuned */

static void read_tuned(sqlite3_stmt *s, db_tuned_row *r) {
    copy_text(r->device, sizeof r->device, s, 0);
    copy_text(r->arch, sizeof r->arch, s, 1);
    r->sm_count = sqlite3_column_int(s, 2);
    r->driver_version = sqlite3_column_int(s, 3);
    copy_text(r->key, sizeof r->key, s, 4);
    copy_text(r->bucket, sizeof r->bucket, s, 5);
    copy_text(r->winner, sizeof r->winner, s, 6);
    r->time_ms = sqlite3_column_double(s, 7);
    r->spread_pct = sqlite3_column_double(s, 8);
    r->tried = sqlite3_column_int(s, 9);
    r->created = sqlite3_column_int64(s, 10);
}

int db_tuned_put(db *d, const db_tuned_row *row, char *err, size_t errlen) {
    if (!d || !row) return set_err(err, errlen, "db_tuned_put: missing argument"), -1;
    if (!terminated(row->device, sizeof row->device) || !terminated(row->arch, sizeof row->arch) ||
        !terminated(row->key, sizeof row->key) || !terminated(row->bucket, sizeof row->bucket) ||
        !terminated(row->winner, sizeof row->winner))
        return set_err(err, errlen, "db_tuned_put: strings must be NUL-terminated"), -1;
    sqlite3_stmt *s = NULL;
    int ret = -1;
    lock(d);
    if (sqlite3_prepare_v2(d->w, "INSERT OR REPLACE INTO tuned(" TCOLS ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
                           -1, &s, NULL) != SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_tuned_put: prepare");
        goto out;
    }
    sqlite3_bind_text(s, 1, row->device, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, row->arch, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 3, row->sm_count);
    sqlite3_bind_int(s, 4, row->driver_version);
    sqlite3_bind_text(s, 5, row->key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, row->bucket, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, row->winner, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 8, row->time_ms);
    sqlite3_bind_double(s, 9, row->spread_pct);
    sqlite3_bind_int(s, 10, row->tried);
    sqlite3_bind_int64(s, 11, row->created > 0 ? row->created : now_s());
    ret = step_in_transaction(d, s, "db_tuned_put", err, errlen);
out:
    sqlite3_finalize(s);
    unlock(d);
    return ret;
}

static int tuned_get_from(sqlite3 *c, db_tuned_row *row, char *err, size_t n) {
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(c,
                           "SELECT " TCOLS " FROM tuned WHERE device=?1 AND arch=?2 AND sm_count=?3 AND "
                           "driver_version=?4 AND key=?5 AND bucket=?6",
                           -1, &s, NULL) != SQLITE_OK)
        return sql_fail(err, n, c, "db_tuned_get: prepare");
    sqlite3_bind_text(s, 1, row->device, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, row->arch, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 3, row->sm_count);
    sqlite3_bind_int(s, 4, row->driver_version);
    sqlite3_bind_text(s, 5, row->key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, row->bucket, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s), ret;
    if (rc == SQLITE_ROW) {
        db_tuned_row r;
        read_tuned(s, &r);
        *row = r;
        ret = 1;
    } else if (rc == SQLITE_DONE) {
        ret = 0;
    } else {
        ret = sql_fail(err, n, c, "db_tuned_get: select");
    }
    sqlite3_finalize(s);
    return ret;
}

int db_tuned_get(db *d, db_tuned_row *row, char *err, size_t errlen) {
    if (!d || !row) return set_err(err, errlen, "db_tuned_get: missing argument"), -1;
    lock(d);
    int r = tuned_get_from(d->w, row, err, errlen);
    if (r == 0 && d->f && d->fleet_uv >= 2) r = tuned_get_from(d->f, row, err, errlen);
    unlock(d);
    return r;
}

int db_tuned_list(db *d, db_tuned_cb cb, void *user, char *err, size_t errlen) {
    if (!d || !cb) return set_err(err, errlen, "db_tuned_list: missing argument"), -1;
    sqlite3_stmt *s = NULL;
    int rc, ret = -1;
    lock(d);
    if (sqlite3_prepare_v2(d->w, "SELECT " TCOLS " FROM tuned ORDER BY device, arch, key, bucket", -1, &s, NULL) !=
        SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_tuned_list: prepare");
        goto out;
    }
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        db_tuned_row r;
        read_tuned(s, &r);
        if (cb(user, &r)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE) {
        sql_fail(err, errlen, d->w, "db_tuned_list: select");
        goto out;
    }
    ret = 0;
out:
    sqlite3_finalize(s);
    unlock(d);
    return ret;
}

/* ------------------------------------------------------------ thresholds */

static void read_threshold(sqlite3_stmt *s, db_threshold_row *r, int fleet) {
    memset(r, 0, sizeof *r);
    copy_text(r->model, sizeof r->model, s, 0);
    r->layer = sqlite3_column_int(s, 1);
    r->head = sqlite3_column_int(s, 2);
    r->tau = sqlite3_column_double(s, 3);
    r->budget = sqlite3_column_double(s, 4);
    r->budget_abs = sqlite3_column_int(s, 5);
    r->samples = sqlite3_column_int(s, 6);
    r->created = sqlite3_column_int64(s, 7);
    r->density = sqlite3_column_double(s, 8);
    r->error = sqlite3_column_double(s, 9);
    r->thr = sqlite3_column_int(s, 10);
    r->from_fleet = fleet;
}

static int bind_threshold(sqlite3_stmt *s, const db_threshold_row *r, int64_t created) {
    int rc = sqlite3_bind_text(s, 1, r->model, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(s, 2, r->layer);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(s, 3, r->head);
    if (rc == SQLITE_OK) rc = sqlite3_bind_double(s, 4, r->tau);
    if (rc == SQLITE_OK) rc = sqlite3_bind_double(s, 5, r->budget);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(s, 6, r->budget_abs);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(s, 7, r->samples);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 8, created);
    if (rc == SQLITE_OK) rc = sqlite3_bind_double(s, 9, r->density);
    if (rc == SQLITE_OK) rc = sqlite3_bind_double(s, 10, r->error);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(s, 11, r->thr);
    return rc;
}

/* Rows a put may store: a model name, a tau in [0, 1); 0, or -1 with err. */
static int thresholds_valid(const db_threshold_row *rows, int n, const char *what, char *err, size_t errlen) {
    for (int i = 0; i < n; i++) {
        if (!terminated(rows[i].model, sizeof rows[i].model) || !rows[i].model[0])
            return set_err(err, errlen, "%s: row %d: model must be a non-empty string", what, i), -1;
        if (!(rows[i].tau >= 0 && rows[i].tau < 1))
            return set_err(err, errlen, "%s: row %d: tau must be in [0, 1), got %g", what, i, rows[i].tau), -1;
    }
    return 0;
}

/* Insert or replace rows inside the caller's transaction: 0, or -1 with err. */
static int thresholds_insert(db *d, const db_threshold_row *rows, int n, const char *what, char *err, size_t errlen) {
    sqlite3_stmt *s = NULL;
    char where[96];
    int64_t t = now_s();
    snprintf(where, sizeof where, "%s: insert", what);
    if (sqlite3_prepare_v2(d->w, "INSERT OR REPLACE INTO thresholds(" THCOLS_V4 ") " TH_INSERT_VALUES, -1, &s,
                           NULL) != SQLITE_OK)
        return sql_fail(err, errlen, d->w, where);
    for (int i = 0; i < n; i++) {
        sqlite3_reset(s);
        if (bind_threshold(s, &rows[i], rows[i].created > 0 ? rows[i].created : t) != SQLITE_OK ||
            sqlite3_step(s) != SQLITE_DONE) {
            sql_fail(err, errlen, d->w, where);
            sqlite3_finalize(s);
            return -1;
        }
    }
    sqlite3_finalize(s);
    return 0;
}

int db_thresholds_put(db *d, const db_threshold_row *rows, int n, char *err, size_t errlen) {
    if (!d || n < 0 || (n > 0 && !rows)) return set_err(err, errlen, "db_thresholds_put: missing argument"), -1;
    if (thresholds_valid(rows, n, "db_thresholds_put", err, errlen) != 0) return -1;
    int ret = -1;
    lock(d);
    if (begin_immediate(d->w) != SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_thresholds_put: begin");
        goto out;
    }
    if (thresholds_insert(d, rows, n, "db_thresholds_put", err, errlen) != 0) {
        rollback(d->w);
        goto out;
    }
    ret = commit(d->w, err, errlen, "db_thresholds_put");
out:
    unlock(d);
    return ret;
}

int db_thresholds_replace_model(db *d, const char *model, const db_threshold_row *rows, int n, int *replaced,
                                int *dropped, char *err, size_t errlen) {
    const char *what = "db_thresholds_replace_model";
    if (!d || !model || !model[0] || n < 0 || (n > 0 && !rows))
        return set_err(err, errlen, "%s: missing argument", what), -1;
    if (thresholds_valid(rows, n, what, err, errlen) != 0) return -1;
    for (int i = 0; i < n; i++)
        if (strcmp(rows[i].model, model) != 0)
            return set_err(err, errlen, "%s: row %d: model '%s', not '%s'", what, i, rows[i].model, model), -1;
    sqlite3_stmt *s = NULL;
    int ret = -1, nold = 0, ngone = 0, rc;
    lock(d);
    if (begin_immediate(d->w) != SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_thresholds_replace_model: begin");
        goto out;
    }
    /* count what goes: every earlier row, and those the new rows do not
     * stand in for (layers or heads this calibration does not have) */
    if (sqlite3_prepare_v2(d->w, "SELECT layer, head FROM thresholds WHERE model = ?1", -1, &s, NULL) != SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_thresholds_replace_model: read the earlier rows");
        goto fail;
    }
    sqlite3_bind_text(s, 1, model, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int layer = sqlite3_column_int(s, 0), head = sqlite3_column_int(s, 1), kept = 0;
        for (int i = 0; i < n && !kept; i++) kept = rows[i].layer == layer && rows[i].head == head;
        nold++;
        ngone += !kept;
    }
    if (rc != SQLITE_DONE) {
        sql_fail(err, errlen, d->w, "db_thresholds_replace_model: read the earlier rows");
        goto fail;
    }
    sqlite3_finalize(s);
    if (sqlite3_prepare_v2(d->w, "DELETE FROM thresholds WHERE model = ?1", -1, &s, NULL) != SQLITE_OK) {
        sql_fail(err, errlen, d->w, "db_thresholds_replace_model: delete");
        goto fail;
    }
    sqlite3_bind_text(s, 1, model, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE) {
        sql_fail(err, errlen, d->w, "db_thresholds_replace_model: delete");
        goto fail;
    }
    if (thresholds_insert(d, rows, n, what, err, errlen) != 0) goto fail;
    if (commit(d->w, err, errlen, what) != 0) goto out;
    if (replaced) *replaced = nold;
    if (dropped) *dropped = ngone;
    ret = 0;
    goto out;
fail:
    rollback(d->w);
out:
    sqlite3_finalize(s);
    unlock(d);
    return ret;
}

int db_threshold_put(db *d, const char *model, int layer, int head, double tau, char *err, size_t errlen) {
    if (!d || !model) return set_err(err, errlen, "db_threshold_put: missing argument"), -1;
    db_threshold_row r;
    memset(&r, 0, sizeof r);
    if (snprintf(r.model, sizeof r.model, "%s", model) >= (int)sizeof r.model)
        return set_err(err, errlen, "db_threshold_put: model name longer than %zu bytes", sizeof r.model - 1), -1;
    r.layer = layer, r.head = head, r.tau = tau, r.density = -1, r.error = -1;
    return db_thresholds_put(d, &r, 1, err, errlen);
}

static int threshold_get_from(sqlite3 *c, int uv, int fleet, const char *model, int layer, int head,
                              db_threshold_row *row, char *err, size_t n) {
    sqlite3_stmt *s = NULL;
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT %s FROM thresholds WHERE model=?1 AND layer=?2 AND head=?3", THCOLS_FOR(uv));
    if (sqlite3_prepare_v2(c, sql, -1, &s, NULL) != SQLITE_OK) return sql_fail(err, n, c, "db_threshold_get: prepare");
    sqlite3_bind_text(s, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, layer);
    sqlite3_bind_int(s, 3, head);
    int rc = sqlite3_step(s), ret;
    if (rc == SQLITE_ROW) {
        if (row) read_threshold(s, row, fleet);
        ret = 1;
    } else if (rc == SQLITE_DONE) {
        ret = 0;
    } else {
        ret = sql_fail(err, n, c, "db_threshold_get: select");
    }
    sqlite3_finalize(s);
    return ret;
}

int db_threshold_get_row(db *d, const char *model, int layer, int head, db_threshold_row *row, char *err,
                         size_t errlen) {
    if (!d || !model) return set_err(err, errlen, "db_threshold_get: missing argument"), -1;
    lock(d);
    int r = threshold_get_from(d->w, DB_SCHEMA_VERSION, 0, model, layer, head, row, err, errlen);
    if (r == 0 && d->f && d->fleet_uv >= 2)
        r = threshold_get_from(d->f, d->fleet_uv, 1, model, layer, head, row, err, errlen);
    unlock(d);
    return r;
}

int db_threshold_get(db *d, const char *model, int layer, int head, double *tau, char *err, size_t errlen) {
    db_threshold_row r;
    int ret = db_threshold_get_row(d, model, layer, head, &r, err, errlen);
    if (ret == 1 && tau) *tau = r.tau;
    return ret;
}

static int threshold_list_from(sqlite3 *c, int uv, int fleet, db_threshold_cb cb, void *user, int *stop, char *err,
                               size_t n) {
    sqlite3_stmt *s = NULL;
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT %s FROM thresholds ORDER BY model, layer, head", THCOLS_FOR(uv));
    if (sqlite3_prepare_v2(c, sql, -1, &s, NULL) != SQLITE_OK) return sql_fail(err, n, c, "db_threshold_list: prepare");
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        db_threshold_row r;
        read_threshold(s, &r, fleet);
        if (cb(user, &r)) {
            *stop = 1;
            rc = SQLITE_DONE;
            break;
        }
    }
    int ret = rc == SQLITE_DONE ? 0 : sql_fail(err, n, c, "db_threshold_list: select");
    sqlite3_finalize(s);
    return ret;
}

int db_threshold_list(db *d, int include_fleet, db_threshold_cb cb, void *user, char *err, size_t errlen) {
    if (!d || !cb) return set_err(err, errlen, "db_threshold_list: missing argument"), -1;
    int stop = 0;
    lock(d);
    int r = threshold_list_from(d->w, DB_SCHEMA_VERSION, 0, cb, user, &stop, err, errlen);
    if (r == 0 && !stop && include_fleet && d->f && d->fleet_uv >= 2)
        r = threshold_list_from(d->f, d->fleet_uv, 1, cb, user, &stop, err, errlen);
    unlock(d);
    return r;
}
