/* db.h — the SQLite kernel cache: compiled cubins with their resources,
 * tuning winners, per-head thresholds. One writable file (WAL, busy
 * timeout, schema version + migrations) with an optional read-only fleet
 * file consulted under it. Internal to libsale; prefix db_. */
#ifndef SALE_DB_H
#define SALE_DB_H

#include <stddef.h>
#include <stdint.h>

#define DB_SCHEMA_VERSION 4

typedef struct db db;

/* level: 0 debug, 1 info, 2 warn, 3 error (same values as sale_log_level). */
typedef void (*db_log_fn)(void *user, int level, const char *msg);

/* One compiled kernel. Strings are NUL-terminated; cubin is owned by the row
 * after db_kernel_get (free with db_row_free). */
typedef struct db_kernel_row {
    char key[256];     /* canonical resolved key text (without arch) */
    char arch[16];     /* "sm_90" */
    uint64_t src_hash; /* template + prelude + options + nvrtc + lib version */
    char entry[64];
    int registers, smem_static, smem_dynamic, spill_stores, spill_loads, stack, threads;
    double compile_ms;
    unsigned char *cubin;
    size_t cubin_bytes;
    uint64_t cubin_hash; /* FNV-1a 64 of the cubin bytes: checked on every load */
    int64_t created, last_used, hits; /* unix seconds; hits counted by db_kernel_get */
    int from_fleet;      /* 1 when served by the read-only fleet file */
} db_kernel_row;

/* Open (creating if needed) the cache at path (":memory:" allowed). A file
 * that is not a database, fails `PRAGMA quick_check`, or has a schema newer
 * than this library knows is moved aside to "<path>.corrupt-<unix time>" (or
 * ".newer-<time>") and a fresh one is created, with a warning through log.
 * Older schemas are migrated in place. fleet_path may be NULL; it is opened
 * read-only (immutable) and only read. Returns 0, or -1 with err filled. */
int db_open(db **out, const char *path, const char *fleet_path, db_log_fn log, void *log_user, char *err,
            size_t errlen);
/* db_open with flags: DB_OPEN_DEFAULT_PATH says path is the default cache
 * location, where any unusable file may be moved aside (elsewhere only a
 * recognisable sale cache is; anything else is refused and left untouched);
 * DB_OPEN_NO_CREATE refuses a path that does not exist (no file, no
 * directories made). A path that exists but is not a regular file is always
 * refused. A file (or directory) that is not writable is opened read-only:
 * lookups work, writes fail with SQLite's reason (see db_readonly). */
#define DB_OPEN_DEFAULT_PATH 1
#define DB_OPEN_NO_CREATE 2
/* a damaged file or one of a newer schema is an error, left where it is
 * (not moved aside and rebuilt): for tools that only look at a cache */
#define DB_OPEN_NO_RECOVER 4
/* err begins with this when the fleet file, not the cache, could not be opened */
#define DB_FLEET_ERR "db_open: fleet file"
int db_open_ex(db **out, const char *path, const char *fleet_path, int flags, db_log_fn log, void *log_user,
               char *err, size_t errlen);
int db_readonly(const db *d);
void db_close(db *d);
const char *db_path(const db *d);
/* Calls that reached SQLite on this handle since db_open (every db_ call that
 * takes the connection lock counts one): tests show warm paths make none. */
unsigned long db_op_count(db *d);

/* Look up (key, arch, src_hash): writable file first, then the fleet file.
 * Returns 1 found (row filled, cubin verified against cubin_bytes and
 * cubin_hash; hits and last_used updated in the writable file), 0 not found,
 * -1 error. A row whose cubin fails verification is deleted, logged as a
 * warning and reported as not found. */
int db_kernel_get(db *d, const char *key, const char *arch, uint64_t src_hash, db_kernel_row *row, char *err,
                  size_t errlen);
/* db_kernel_get, counting a hit only when count: a read that serves no
 * request (compile's read-back of the row it just stored) counts none. */
int db_kernel_get_ex(db *d, const char *key, const char *arch, uint64_t src_hash, int count, db_kernel_row *row,
                     char *err, size_t errlen);

/* Insert a row in one transaction; if the same (key, arch, src_hash) exists,
 * keeps the existing row (INSERT OR IGNORE). 0 ok, -1 error. */
int db_kernel_put(db *d, const db_kernel_row *row, char *err, size_t errlen);

void db_row_free(db_kernel_row *row);

/* The integrity hash stored for a row (in the cubin_hash column): key, arch,
 * src_hash, entry, resources, compile_ms, cubin_bytes and the cubin's own
 * hash together. db_kernel_get checks it and returns the plain cubin hash
 * in row->cubin_hash. */
uint64_t db_row_hash(const db_kernel_row *r, uint64_t cubin_hash);

/* Compile claim for the thundering herd: returns 1 if this process now owns
 * the claim for (key, arch, src_hash), 0 if another live owner holds it (a
 * claim older than stale_s seconds, or dated in the future, is taken over;
 * err then names the holder: "pid 42@host, claimed 3 s ago"), -1 on error. */
/* A claim older than this is stale; a waiter gives up waiting after as long
 * (both read db_claim_stale_s()). */
#define DB_CLAIM_STALE_S 120
/* DB_CLAIM_STALE_S, or $SALE_CLAIM_STALE_S when it holds 1..86400 (tests,
 * or a fleet whose compiles take longer). */
int db_claim_stale_s(void);
int db_claim(db *d, const char *key, const char *arch, uint64_t src_hash, int stale_s, char *err, size_t errlen);
int db_unclaim(db *d, const char *key, const char *arch, uint64_t src_hash);

/* Iterate over all kernel rows of the writable file (and of the fleet file
 * when include_fleet); cubin is NULL in the rows passed (use
 * db_kernel_get for bytes). The callback returns non-zero to stop. */
typedef int (*db_kernel_cb)(void *user, const db_kernel_row *row);
int db_kernel_list(db *d, int include_fleet, db_kernel_cb cb, void *user, char *err, size_t errlen);

/* Check every stored cubin against its length and hash; bad rows are
 * deleted and counted. */
int db_verify(db *d, int *checked, int *bad, char *err, size_t errlen);

/* Copy the kernels for the given archs (all when narch == 0) into a new cache
 * file at dest (overwritten atomically: written to dest.tmp then renamed),
 * with the tuning winners of those archs and every threshold. An arch
 * selects its arch-specific variant too ("sm_90": sm_90 and sm_90a rows;
 * "sm_90a": only those). A dest that is the cache itself (same inode or
 * real path, a symlink or hard link included) or one of its -wal/-shm/
 * -journal is always refused, before anything is written. Returns the
 * number of kernel rows written, -2 when the file would hold nothing (no
 * kernel, tuning winner or threshold: nothing written), or -1. */
int db_export(db *d, const char *dest, const char *const *archs, int narch, char *err, size_t errlen);
/* db_export refuses a dest that exists and is not a regular file, or is a
 * non-empty file that is not a sale cache (unless flags has
 * DB_EXPORT_FORCE); it deletes only files it created. */
#define DB_EXPORT_FORCE 1
int db_export_ex(db *d, const char *dest, const char *const *archs, int narch, int flags, char *err,
                 size_t errlen);

/* Merge every kernel row of another cache file into this one (existing rows
 * kept). Returns the number of rows added, or -1. Rejects files that are not
 * sale caches (and creates nothing beside them); a source in a directory
 * this user cannot write is read without its -shm (immutable) when its
 * write-ahead log holds nothing. A source SQLite cannot read is reported
 * with SQLite's reason, never as "not a sale cache". */
int db_import(db *d, const char *src, char *err, size_t errlen);

/* Remove every kernel row; returns rows removed or -1. */
int db_clear(db *d, char *err, size_t errlen);

/* Size of the cache file in bytes (0 for :memory:). */
int64_t db_file_bytes(const db *d);

/* ------------------------------------------------------------ tuning rows */
typedef struct db_tuned_row {
    char device[128];  /* device name */
    char arch[16];
    int sm_count;
    int driver_version;
    char key[256];     /* canonical key with tile fields open ("*") */
    char bucket[32];   /* problem-size bucket, e.g. "n=65536" */
    char winner[256];  /* canonical resolved key of the winner */
    double time_ms, spread_pct;
    int tried;
    int64_t created;
} db_tuned_row;

int db_tuned_put(db *d, const db_tuned_row *row, char *err, size_t errlen);
/* Lookup by (device, arch, sm_count, driver_version, key, bucket): 1 found, 0 not, -1 error. */
int db_tuned_get(db *d, db_tuned_row *row, char *err, size_t errlen);
typedef int (*db_tuned_cb)(void *user, const db_tuned_row *row);
int db_tuned_list(db *d, db_tuned_cb cb, void *user, char *err, size_t errlen);

/* --------------------------------------------------------- thresholds */
/* Per-head thresholds per (model, layer, head) with how they were chosen
 * (sale calibrate). Rows of a v2 fleet file read with budget 0, samples 0,
 * created 0, density and error -1; rows of a v2 or v3 file with thr 0
 * (variant not recorded). Export copies every row; import keeps rows that
 * already exist. */
typedef struct db_threshold_row {
    char model[128];
    int layer, head;
    double tau;
    double budget;
    int budget_abs;   /* 0: relative L1 per head; 1: mean per-row L1 */
    int samples;
    int64_t created;  /* unix seconds; 0 in a put: now */
    double density;   /* -1: unknown */
    double error;     /* -1: unknown */
    int thr;          /* threshold variant calibrated with (SALE_THR_RUN / _FIXED); 0: not recorded */
    int from_fleet;   /* set by readers */
} db_threshold_row;

/* Insert or replace n rows in one transaction (all or none). 0 ok, -1 error. */
int db_thresholds_put(db *d, const db_threshold_row *rows, int n, char *err, size_t errlen);
/* A calibration's store: the n rows (all of model) become model's
 * thresholds in the writable file, in one transaction, every earlier row of
 * model deleted; a later lookup of a layer or head the new rows lack misses
 * instead of finding an earlier calibration's tau. *replaced (may be NULL)
 * gets the number of earlier rows, *dropped those of them at a (layer,
 * head) the new rows do not have. 0 ok, -1 error (nothing changed). */
int db_thresholds_replace_model(db *d, const char *model, const db_threshold_row *rows, int n, int *replaced,
                                int *dropped, char *err, size_t errlen);
/* Writable file first, then the fleet file: 1 found, 0 not, -1 error. */
int db_threshold_get_row(db *d, const char *model, int layer, int head, db_threshold_row *row, char *err,
                         size_t errlen);
/* Every row ordered by model, layer, head (the fleet's after, when include_fleet). */
typedef int (*db_threshold_cb)(void *user, const db_threshold_row *row);
int db_threshold_list(db *d, int include_fleet, db_threshold_cb cb, void *user, char *err, size_t errlen);
/* Shorthands: tau only (put: budget etc. unknown). */
int db_threshold_put(db *d, const char *model, int layer, int head, double tau, char *err, size_t errlen);
/* 1 found, 0 not, -1 error */
int db_threshold_get(db *d, const char *model, int layer, int head, double *tau, char *err, size_t errlen);

/* FNV-1a 64 over bytes (also used for cubin integrity). */
uint64_t db_fnv1a64(const void *data, size_t n, uint64_t seed);
#define DB_FNV_SEED 0xcbf29ce484222325ULL

#endif
