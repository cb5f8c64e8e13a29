/* ctx.c — the context (per-thread errors, logging, the cache file),
 * sale_compile (key → cubin in the cache, one compile even when many
 * processes ask at once) and sale_get_kernel (cubin → module loaded once per
 * CUDA context, then served from the loaded-kernel table by one hash lookup). */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "sale_layout.h"

#define KMOD_FNS 4 /* entries of one module resolved at load (quantize has 4) */
#define KMOD_LIMS 8 /* functions of one module whose shared memory limit is tracked */

struct kmod {
    CUcontext cu;
    uint64_t src_hash;
    int arch;
    CUmodule mod;
    CUfunction fn;
    sale_key rk; /* the resolved key, tiles included: the pipeline's launch plan reads it */
    sale_kernel_info info;
    int nfn; /* entries of the family's launch plan, resolved once at load */
    const char *fn_name[KMOD_FNS];
    CUfunction fns[KMOD_FNS];
    /* the dynamic shared memory limit set on each function launched by
     * sale_kernel_launch (g_smem_lock): raised only, so that two threads
     * launching one entry with different sizes never lower it between the
     * other's cuFuncSetAttribute and its launch */
    int nlim;
    CUfunction lim_fn[KMOD_LIMS];
    unsigned lim_smem[KMOD_LIMS];
    struct kmod *next;
};

static pthread_mutex_t g_smem_lock = PTHREAD_MUTEX_INITIALIZER;

/* One slot of the loaded-kernel table (open addressing, linear probing). */
struct kt_slot {
    kmod *m; /* NULL: empty */
    CUcontext cu;
    sale_key req; /* the key as requested (open fields open; arch may be CURRENT) */
    int bucket;   /* power-of-two length bucket of the winner lookup, 0: any */
    unsigned gen; /* ctx->win_gen when made: open tiles depend on the winners */
    int dflt;     /* the warps were open and the default took them (no winner): ctx_kernel */
};

const char *sale_status_name(sale_status s)
{
    static const char *const names[] = {"SALE_OK",           "SALE_ERR_INVALID", "SALE_ERR_UNSUPPORTED",
                                        "SALE_ERR_COMPILE",  "SALE_ERR_CACHE",   "SALE_ERR_NO_DEVICE",
                                        "SALE_ERR_CUDA",     "SALE_ERR_NOMEM",   "SALE_ERR_IO",
                                        "SALE_ERR_NOT_FOUND", "SALE_ERR_LUA"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "SALE_ERR_?";
}

/* Errors are per thread and context: each thread keeps a table of
 * (context, message) slots, so one thread's failure never overwrites the
 * message another thread is reading (sale prewarm's workers share a
 * context), and a failure on one context never touches another's message:
 * "valid until this thread's next call on the context" holds for any number
 * of contexts (a table of 8 that evicted the oldest freed a message its
 * caller still held). A slot names its context by a token the context
 * allocates, which lives while any table holds it, so a new context at a
 * freed address never sees a dead one's message; the slots of destroyed
 * contexts are dropped when a table would grow, so a thread that makes
 * and destroys contexts keeps a bounded table. */
struct err_token {
    atomic_int alive; /* cleared by sale_destroy */
    atomic_int refs;  /* the context's own, plus one per table slot */
};
typedef struct err_slot {
    err_token *tok;
    char *msg;
} err_slot;
typedef struct err_tls {
    err_slot *s;
    int n, cap;
} err_tls;

static pthread_key_t g_err_key;
static pthread_once_t g_err_once = PTHREAD_ONCE_INIT;
static int g_err_key_ok;

static void err_token_put(err_token *t)
{
    if (t && atomic_fetch_sub(&t->refs, 1) == 1)
        free(t);
}

static void err_tls_free(void *p)
{
    err_tls *t = p;
    for (int i = 0; i < t->n; i++) {
        free(t->s[i].msg);
        err_token_put(t->s[i].tok);
    }
    free(t->s);
    free(t);
}

static void err_key_init(void)
{
    g_err_key_ok = pthread_key_create(&g_err_key, err_tls_free) == 0;
}

static err_slot *err_slot_of(const sale_ctx *ctx, int create)
{
    if (!ctx->err_tok)
        return NULL;
    pthread_once(&g_err_once, err_key_init);
    if (!g_err_key_ok)
        return NULL;
    err_tls *t = pthread_getspecific(g_err_key);
    if (!t) {
        if (!create || !(t = calloc(1, sizeof *t)))
            return NULL;
        if (pthread_setspecific(g_err_key, t)) {
            free(t);
            return NULL;
        }
    }
    for (int i = 0; i < t->n; i++)
        if (t->s[i].tok == ctx->err_tok)
            return &t->s[i];
    if (!create)
        return NULL;
    if (t->n == t->cap) { /* drop destroyed contexts' slots before growing */
        int k = 0;
        for (int i = 0; i < t->n; i++) {
            if (atomic_load(&t->s[i].tok->alive)) {
                t->s[k++] = t->s[i];
            } else {
                free(t->s[i].msg);
                err_token_put(t->s[i].tok);
            }
        }
        t->n = k;
    }
    if (t->n == t->cap) {
        const int nc = t->cap ? 2 * t->cap : 8;
        err_slot *ns = realloc(t->s, (size_t)nc * sizeof *ns);
        if (!ns)
            return NULL;
        t->s = ns;
        t->cap = nc;
    }
    err_slot *e = &t->s[t->n++];
    atomic_fetch_add(&ctx->err_tok->refs, 1);
    e->tok = ctx->err_tok;
    e->msg = NULL;
    return e;
}

void sale_set_error(sale_ctx *ctx, const char *fmt, ...)
{
    if (!ctx)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    /* format first, then swap: an argument may be the old message itself */
    char *m = malloc((size_t)n + 1);
    if (!m)
        return;
    va_start(ap, fmt);
    vsnprintf(m, (size_t)n + 1, fmt, ap);
    va_end(ap);
    err_slot *e = err_slot_of(ctx, 1);
    if (!e) {
        free(m);
        return;
    }
    free(e->msg);
    e->msg = m;
}

void sale_logf(sale_ctx *ctx, sale_log_level level, const char *fmt, ...)
{
    if (!ctx || !ctx->opts.log)
        return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ctx->opts.log(ctx->opts.log_user, level, buf);
}

const char *sale_last_error(const sale_ctx *ctx)
{
    if (!ctx)
        return "";
    err_slot *e = err_slot_of(ctx, 0);
    return e && e->msg ? e->msg : "";
}

const char *sale_cache_path(const sale_ctx *ctx)
{
    return ctx ? ctx->cache_path : "";
}

const char *sale_fleet_path(const sale_ctx *ctx)
{
    return ctx ? ctx->fleet_path : "";
}

static void db_log_bridge(void *user, int level, const char *msg)
{
    sale_logf((sale_ctx *)user, (sale_log_level)level, "%s", msg);
}

int sale_default_cache_path(char *buf, size_t len, const char **var)
{
    static const char *const vars[] = {"SALE_CACHE_DIR", "XDG_CACHE_HOME", "HOME"};
    static const char *const tails[] = {"/kernels.db", "/sale/kernels.db", "/.cache/sale/kernels.db"};
    for (int i = 0; i < 3; i++) {
        const char *d = getenv(vars[i]);
        if (!d || !*d)
            continue;
        if (var)
            *var = vars[i];
        if (len && snprintf(buf, len, "%s%s", d, tails[i]) < (int)len)
            return 0;
        if (len)
            buf[0] = 0; /* never a cut path: it would name another file */
        return -2;
    }
    return -1;
}

/* path (a buffer of len) prefixed with the working directory when relative
 * ("" and ":memory:" stay): 0, or -1 with the context's error set */
static int make_absolute(sale_ctx *c, char *path, size_t len, const char *what)
{
    if (!path[0] || path[0] == '/' || !strcmp(path, ":memory:"))
        return 0;
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) {
        sale_set_error(c, "%s: %s is relative and the working directory is unknown: %s", what, path, strerror(errno));
        return -1;
    }
    char abs[4096 + 8];
    int n = snprintf(abs, sizeof abs, "%s/%s", cwd, path);
    if (n < 0 || (size_t)n >= len) {
        sale_set_error(c, "%s: %s/%s is longer than %zu bytes", what, cwd, path, len - 1);
        return -1;
    }
    memcpy(path, abs, (size_t)n + 1);
    return 0;
}

static sale_status create_ctx(sale_ctx **out, const sale_options *opts);

sale_status sale_create(sale_ctx **out, const sale_options *opts)
{
    sale_status s = create_ctx(out, opts);
    /* (a failed create leaves db NULL: opening the cache is its last step) */
    if (s != SALE_OK && out && *out)
        snprintf((*out)->create_err, sizeof (*out)->create_err, "%s", sale_last_error(*out));
    return s;
}

sale_status ctx_ready(sale_ctx *ctx, const char *what)
{
    if (!ctx)
        return SALE_ERR_INVALID;
    if (ctx->db)
        return SALE_OK;
    sale_set_error(ctx, "%s: this context's sale_create failed (%s); only sale_destroy may be called on it", what,
                   ctx->create_err[0] ? ctx->create_err : "no reason recorded");
    return SALE_ERR_CACHE;
}

static sale_status create_ctx(sale_ctx **out, const sale_options *opts)
{
    if (!out)
        return SALE_ERR_INVALID;
    *out = NULL;
    sale_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return SALE_ERR_NOMEM;
    c->err_tok = calloc(1, sizeof *c->err_tok);
    if (!c->err_tok) {
        free(c);
        return SALE_ERR_NOMEM;
    }
    atomic_init(&c->err_tok->alive, 1);
    atomic_init(&c->err_tok->refs, 1);
    *out = c;
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->ws_lock, NULL);
    pthread_cond_init(&c->compile_cv, NULL);
    if (opts)
        c->opts = *opts;
    if (opts && opts->cache_path) {
        if (!opts->cache_path[0]) { /* not "no path given" from deep in the cache: the caller's field */
            sale_set_error(c, "cache_path: empty (NULL: the default location; \":memory:\": no file)");
            return SALE_ERR_INVALID;
        }
        if (strlen(opts->cache_path) >= sizeof c->cache_path) {
            sale_set_error(c, "cache_path: longer than %zu bytes", sizeof c->cache_path - 1);
            return SALE_ERR_INVALID;
        }
        strcpy(c->cache_path, opts->cache_path);
    } else {
        const char *var = NULL;
        const int r = sale_default_cache_path(c->cache_path, sizeof c->cache_path, &var);
        if (r == -2) {
            sale_set_error(c, "cache_path: the default cache under $%s (%zu bytes) is longer than the %zu bytes a "
                           "path may have; set cache_path or a shorter $%s", var, strlen(getenv(var)),
                           sizeof c->cache_path - 1, var);
            return SALE_ERR_INVALID;
        }
        if (r) {
            sale_set_error(c, "cache_path: no $SALE_CACHE_DIR, $XDG_CACHE_HOME or $HOME to put the cache in");
            return SALE_ERR_INVALID;
        }
    }
    if (opts && opts->fleet_path) {
        /* cut short, it would name another file */
        if (strlen(opts->fleet_path) >= sizeof c->fleet_path) {
            sale_set_error(c, "fleet_path: longer than %zu bytes", sizeof c->fleet_path - 1);
            return SALE_ERR_INVALID;
        }
        strcpy(c->fleet_path, opts->fleet_path);
    }
    /* relative paths made absolute now: sale_cache_path() is what other
     * processes are told (sale.calibrate runs `sale --cache PATH`), and a
     * chdir after this point would send them to another file */
    if (make_absolute(c, c->cache_path, sizeof c->cache_path, "cache_path") ||
        make_absolute(c, c->fleet_path, sizeof c->fleet_path, "fleet_path"))
        return SALE_ERR_INVALID;
    c->opts.cache_path = c->cache_path;
    c->opts.fleet_path = c->fleet_path[0] ? c->fleet_path : NULL;
    /* the cache itself as its own fleet file (any name for the same file)
     * would serve and list every row twice: it is no fleet, say so */
    struct stat sc, sf;
    if (c->opts.fleet_path && stat(c->cache_path, &sc) == 0 && stat(c->fleet_path, &sf) == 0 &&
        sc.st_dev == sf.st_dev && sc.st_ino == sf.st_ino) {
        sale_logf(c, SALE_LOG_WARN, "the fleet file %s is the cache %s itself: no fleet file is used", c->fleet_path,
                  c->cache_path);
        c->fleet_path[0] = 0;
        c->opts.fleet_path = NULL;
    }
    char err[4096] = ""; /* the path (up to 1023 bytes) may be in it twice, and the reason after */
    int dflags = opts && opts->cache_path ? 0 : DB_OPEN_DEFAULT_PATH; /* only there is any bad file moved aside */
    if (opts && opts->existing_only)
        dflags |= DB_OPEN_NO_CREATE | DB_OPEN_NO_RECOVER;
    if (db_open_ex(&c->db, c->cache_path, c->opts.fleet_path, dflags, db_log_bridge, c, err, sizeof err)) {
        if (c->opts.fleet_path && !strncmp(err, DB_FLEET_ERR, strlen(DB_FLEET_ERR))) /* the fleet is at fault */
            sale_set_error(c, "cannot open the fleet file %s: %s", c->fleet_path, err);
        else
            sale_set_error(c, "cannot open the kernel cache %s: %s", c->cache_path, err);
        c->db = NULL;
        return SALE_ERR_CACHE;
    }
    return SALE_OK;
}

void sale_destroy(sale_ctx *ctx)
{
    if (!ctx)
        return;
    ws_free_all(ctx);
    const drv_api *d = ctx->modules ? drv_get(NULL) : NULL;
    CUcontext cur = NULL, active;
    if (d)
        d->CtxGetCurrent(&cur);
    active = cur;
    for (kmod *m = ctx->modules, *n; m; m = n) {
        n = m->next;
        /* in its own context, whichever thread destroys (the modules of
         * other threads' contexts were left loaded: a leak) */
        if (d && drv_use_context(d, m->cu, &active))
            d->ModuleUnload(m->mod);
        free(m);
    }
    if (d && active != cur)
        d->CtxSetCurrent(cur); /* the caller's, as it was */
    free(ctx->kt);
    win_memo_free(ctx);
    if (ctx->db)
        db_close(ctx->db);
    pthread_mutex_destroy(&ctx->lock);
    pthread_cond_destroy(&ctx->compile_cv);
    pthread_mutex_destroy(&ctx->ws_lock);
    free(ctx->cfg_thresholds);
    thresholds_memo_free(ctx);
    /* this thread's message goes now; other threads' slots when their tables next grow (or the thread ends) */
    err_slot *e = err_slot_of(ctx, 0);
    if (e) {
        free(e->msg);
        e->msg = NULL;
    }
    atomic_store(&ctx->err_tok->alive, 0);
    err_token_put(ctx->err_tok);
    free(ctx);
}

static void fill_info(sale_kernel_info *info, const sale_key *k, const db_kernel_row *row, int from_cache)
{
    memset(info, 0, sizeof *info);
    sale_key_format(k, info->key, sizeof info->key);
    snprintf(info->arch, sizeof info->arch, "%s", row->arch);
    snprintf(info->entry, sizeof info->entry, "%s", row->entry);
    info->registers = row->registers;
    info->smem_static = row->smem_static;
    info->smem_dynamic = row->smem_dynamic;
    info->spill_stores = row->spill_stores;
    info->spill_loads = row->spill_loads;
    info->stack = row->stack;
    info->threads = row->threads;
    info->compile_ms = row->compile_ms;
    info->cubin_bytes = row->cubin_bytes;
    info->from_cache = from_cache;
    info->src_hash = row->src_hash;
}


/* Look up, else compile and insert; on return row holds the stored bytes
 * (every process ends with the same ones: insert-or-ignore, then read). */
/* one kernel being compiled by a thread of this process */
struct compiling {
    char key[256], arch[16];
    uint64_t h;
    struct compiling *next;
};

static struct compiling **compiling_find(sale_ctx *ctx, const char *key, const char *arch, uint64_t h)
{
    struct compiling **p = &ctx->compiling;
    for (; *p; p = &(*p)->next)
        if ((*p)->h == h && !strcmp((*p)->key, key) && !strcmp((*p)->arch, arch))
            break;
    return p;
}

static sale_status compile_row_once(sale_ctx *ctx, const sale_key *k, const char *keytext, const char *arch,
                                    char *src, uint64_t h, int store, db_kernel_row *row, int *from_cache);

/* The row of kernel k: from the cache, else compiled and stored. One
 * compile per kernel in this process: a thread that misses a kernel another
 * thread is compiling waits for it, then reads the row that one stored.
 * store: the caller's purpose is the stored row (sale_compile, prewarm), so
 * a read-only cache that misses is an error; otherwise (a kernel to run) a
 * read-only cache's miss is compiled into the row in memory, not stored. */
static sale_status compile_row(sale_ctx *ctx, const sale_key *k, int store, db_kernel_row *row, int *from_cache)
{
    char keytext[256];
    sale_key_format(k, keytext, sizeof keytext);
    const char *arch = sale_arch_name(k->arch);
    char *src = jit_build_source(k);
    if (!src) {
        sale_set_error(ctx, "no template %s embedded in this library", tpl_family_file(k->family));
        return SALE_ERR_NOT_FOUND;
    }
    uint64_t h = jit_source_hash(k, src);
    struct compiling me;
    memset(&me, 0, sizeof me);
    snprintf(me.key, sizeof me.key, "%s", keytext);
    snprintf(me.arch, sizeof me.arch, "%s", arch);
    me.h = h;
    pthread_mutex_lock(&ctx->lock);
    while (*compiling_find(ctx, me.key, me.arch, h))
        pthread_cond_wait(&ctx->compile_cv, &ctx->lock);
    me.next = ctx->compiling;
    ctx->compiling = &me;
    pthread_mutex_unlock(&ctx->lock);
    sale_status st = compile_row_once(ctx, k, keytext, arch, src, h, store, row, from_cache);
    pthread_mutex_lock(&ctx->lock);
    struct compiling **p = compiling_find(ctx, me.key, me.arch, h);
    if (*p == &me)
        *p = me.next;
    pthread_cond_broadcast(&ctx->compile_cv);
    pthread_mutex_unlock(&ctx->lock);
    free(src);
    return st;
}

static sale_status compile_row_once(sale_ctx *ctx, const sale_key *k, const char *keytext, const char *arch,
                                    char *src, uint64_t h, int store, db_kernel_row *row, int *from_cache)
{
    char err[1024] = "";
    sale_status st = SALE_OK;
    /* a cache opened read-only (not writable by this user) serves its rows;
     * a miss can neither be claimed nor stored */
    const int ro = db_readonly(ctx->db);
    int claimed = 0, stale_s = db_claim_stale_s();
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    *from_cache = 1;
    /* The cache calls below are not under ctx->lock: the db layer holds its
     * own lock on every call, and ctx->lock is what a warm lookup on any
     * other thread takes (a claim can wait up to the busy timeout for
     * another process's write, and every warm sale_attention waited too). */
    for (int attempt = 0;; attempt++) {
        int got = db_kernel_get(ctx->db, keytext, arch, h, row, err, sizeof err);
        if (got == 0 && ro) {
            if (store) {
                sale_set_error(ctx,
                               "kernel cache %s is read-only (not writable by this user): %s (%s) is not in it and "
                               "cannot be stored; make the cache writable or name another with --cache / "
                               "SALE_CACHE_DIR",
                               ctx->cache_path, keytext, arch);
                return SALE_ERR_CACHE;
            }
            break; /* compiled below into the row, in memory */
        }
        if (got == 0 && !claimed) {
            claimed = db_claim(ctx->db, keytext, arch, h, stale_s, err, sizeof err);
            /* the previous owner may have stored the row and let go between
             * our miss and our claim: look once more before compiling */
            if (claimed == 1 && (got = db_kernel_get(ctx->db, keytext, arch, h, row, err, sizeof err)) != 0) {
                db_unclaim(ctx->db, keytext, arch, h);
                claimed = 0;
            }
        }
        if (got < 0 || claimed < 0) {
            sale_set_error(ctx, "kernel cache %s: %s", ctx->cache_path, err);
            st = SALE_ERR_CACHE;
            goto out;
        }
        if (got == 1)
            goto out;
        if (claimed == 1)
            break;
        /* the claim turns stale stale_s after it was made (whole seconds)
         * and db_claim then takes it over; past that, with a second's
         * margin for the rounding, a holder whose clock or pid we cannot
         * judge is not waited for any longer */
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > stale_s) {
            sale_logf(ctx, SALE_LOG_WARN, "waited %d s for %s (%s), still claimed by %s: compiling it here", stale_s,
                      keytext, arch, err);
            break;
        }
        if (attempt == 0)
            sale_logf(ctx, SALE_LOG_INFO, "waiting (up to %d s) for %s (%s), claimed by %s in %s", stale_s, keytext,
                      arch, err, ctx->cache_path);
        /* another process is compiling this kernel: wait for its row */
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    *from_cache = 0;
    jit_result jr;
    char *msg = NULL;
    st = jit_compile(tpl_family_file(k->family), src, k->arch, NULL, &jr, &msg);
    if (st) {
        sale_set_error(ctx, "compiling %s for %s: %s", keytext, arch, msg ? msg : "failed");
        free(msg);
        goto unclaim;
    }
    sale_logf(ctx, SALE_LOG_DEBUG, "compiled %s for %s in %.0f ms: %d registers, %d B static smem, %d/%d B spilled\n%s",
              keytext, arch, jr.compile_ms, jr.registers, jr.smem_static, jr.spill_stores, jr.spill_loads,
              jr.log ? jr.log : "");
    /* ptxas serialises a kernel's wgmma when its registers are touched in
     * flight or run short: correct, but much slower, and nothing else says
     * so (the default kernels never do: test_jit holds them to it) */
    const char *loss = jr.log ? strstr(jr.log, "Potential Performance Loss") : NULL;
    if (loss) {
        const char *e = strchr(loss, '\n');
        sale_logf(ctx, SALE_LOG_WARN, "%s (%s): ptxas: %.*s", keytext, arch, e ? (int)(e - loss) : (int)strlen(loss),
                  loss);
    }
    sale_layout_cfg lc = key_layout(k);
    db_kernel_row nr;
    memset(&nr, 0, sizeof nr);
    snprintf(nr.key, sizeof nr.key, "%s", keytext);
    snprintf(nr.arch, sizeof nr.arch, "%s", arch);
    const char *entry = sale_layout_entry(&lc); /* NULL only for a family with no kernel (not compiled) */
    snprintf(nr.entry, sizeof nr.entry, "%s", entry ? entry : "");
    nr.src_hash = h;
    nr.registers = jr.registers;
    nr.smem_static = jr.smem_static;
    nr.smem_dynamic = (int)sale_layout_smem(&lc);
    nr.spill_stores = jr.spill_stores;
    nr.spill_loads = jr.spill_loads;
    nr.stack = jr.stack;
    nr.threads = (int)sale_layout_threads(&lc);
    nr.compile_ms = jr.compile_ms;
    nr.cubin = jr.cubin;
    nr.cubin_bytes = jr.cubin_bytes;
    nr.cubin_hash = db_fnv1a64(jr.cubin, jr.cubin_bytes, DB_FNV_SEED);
    if (ro) {
        /* the row the cache would have served, the cubin handed over */
        sale_logf(ctx, SALE_LOG_WARN,
                  "kernel cache %s is read-only: %s (%s) compiled in memory in %.0f ms and not stored (every "
                  "new process compiles it again)",
                  ctx->cache_path, keytext, arch, jr.compile_ms);
        nr.created = nr.last_used = (int64_t)time(NULL);
        *row = nr;
        jr.cubin = NULL;
        jit_result_free(&jr);
        goto out;
    }
    int rc = db_kernel_put(ctx->db, &nr, err, sizeof err);
    /* the row as stored (or as another process stored it first); reading it
     * back serves no request, so it counts no hit */
    int got = rc ? -1 : db_kernel_get_ex(ctx->db, keytext, arch, h, 0, row, err, sizeof err);
    jit_result_free(&jr);
    if (got != 1) {
        sale_set_error(ctx, "kernel cache %s: storing %s: %s", ctx->cache_path, keytext,
                       got == 0 ? "row missing after insert" : err);
        st = SALE_ERR_CACHE;
    }
unclaim:
    if (claimed == 1)
        db_unclaim(ctx->db, keytext, arch, h);
out:
    return st;
}

sale_status sale_compile(sale_ctx *ctx, const sale_key *key, sale_kernel_info *info)
{
    if (!ctx || !key) {
        sale_set_error(ctx, "sale_compile: NULL argument");
        return SALE_ERR_INVALID;
    }
    if (ctx_ready(ctx, "sale_compile"))
        return SALE_ERR_CACHE;
    sale_key k = *key;
    char err[512];
    if (k.arch == SALE_ARCH_CURRENT) {
        sale_set_error(ctx, "arch: sale_compile needs a concrete architecture (sm_80 .. sm_90a); "
                            "use sale_get_kernel for the current device");
        return SALE_ERR_INVALID;
    }
    if (sale_key_resolve(&k, err, sizeof err)) {
        sale_set_error(ctx, "%s", err);
        return SALE_ERR_INVALID;
    }
    db_kernel_row row;
    memset(&row, 0, sizeof row);
    int from_cache = 0;
    sale_status st = compile_row(ctx, &k, 1, &row, &from_cache);
    if (!st && info)
        fill_info(info, &k, &row, from_cache);
    db_row_free(&row);
    return st;
}

/* A cubin that the driver refuses: say why in words the user can act on. */
static void load_error(sale_ctx *ctx, CUresult r, const sale_key *k, int dev_arch)
{
    const char *arch = sale_arch_name(k->arch);
    if (r == CUDA_ERROR_NO_BINARY_FOR_GPU || r == CUDA_ERROR_INVALID_IMAGE)
        sale_set_error(ctx, "the cubin for %s does not run on this device (sm_%d): a cubin runs only on its own "
                            "major architecture at an equal or higher minor version (%s)",
                       arch, dev_arch, drv_errstr(r));
    else if (r == CUDA_ERROR_UNSUPPORTED_PTX_VERSION)
        sale_set_error(ctx, "the cubin was made by NVRTC %d, newer than this driver supports: update the driver "
                            "or compile with an older toolkit (%s)",
                       jit_nvrtc_version(), drv_errstr(r));
    else
        sale_set_error(ctx, "cuModuleLoadData for %s: %s", arch, drv_errstr(r));
}

/* ------------------------------------------------- the loaded-kernel table */

static uint64_t kt_hash(CUcontext cu, const sale_key *k, int bucket)
{
    const int f[] = {(int)k->family, k->head_dim, k->block_q, k->block_k, k->block_seg, k->local_window,
                     (int)k->dtype, k->est_bits, k->causal, k->warps, k->stages, k->arch, k->thr, bucket};
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)(uintptr_t)cu;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        h ^= (uint64_t)(unsigned)f[i];
        h *= 0x100000001b3ULL;
        h ^= h >> 29;
    }
    return h;
}

static int key_same(const sale_key *a, const sale_key *b)
{
    return a->family == b->family && a->head_dim == b->head_dim && a->block_q == b->block_q &&
           a->block_k == b->block_k && a->block_seg == b->block_seg && a->local_window == b->local_window &&
           a->dtype == b->dtype && a->est_bits == b->est_bits && a->causal == b->causal && a->warps == b->warps &&
           a->stages == b->stages && a->arch == b->arch && a->thr == b->thr;
}

static kt_slot *kt_slot_of(sale_ctx *ctx, CUcontext cu, const sale_key *req, int bucket)
{
    if (!ctx->kt_cap)
        return NULL;
    size_t mask = ctx->kt_cap - 1;
    for (size_t i = (size_t)kt_hash(cu, req, bucket) & mask;; i = (i + 1) & mask) {
        kt_slot *e = &ctx->kt[i];
        if (!e->m || (e->cu == cu && e->bucket == bucket && key_same(&e->req, req)))
            return e;
    }
}

kmod *ctx_kt_find(sale_ctx *ctx, CUcontext cu, const sale_key *req, int bucket, int *dflt)
{
    kt_slot *e = kt_slot_of(ctx, cu, req, bucket);
    if (!e || !e->m)
        return NULL;
    /* a request with open tiles depends on the stored winners */
    if ((!req->warps || !req->stages) && e->gen != ctx->win_gen)
        return NULL;
    if (dflt)
        *dflt = e->dflt;
    return e->m;
}

int ctx_kt_put(sale_ctx *ctx, CUcontext cu, const sale_key *req, int bucket, kmod *m, int dflt)
{
    if ((ctx->kt_used + 1) * 2 > ctx->kt_cap) {
        size_t cap = ctx->kt_cap ? ctx->kt_cap * 2 : 64;
        kt_slot *old = ctx->kt, *nt = calloc(cap, sizeof *nt);
        if (!nt)
            return -1;
        size_t oc = ctx->kt_cap;
        ctx->kt = nt;
        ctx->kt_cap = cap;
        for (size_t i = 0; i < oc; i++)
            if (old[i].m)
                *kt_slot_of(ctx, old[i].cu, &old[i].req, old[i].bucket) = old[i];
        free(old);
    }
    kt_slot *e = kt_slot_of(ctx, cu, req, bucket);
    if (!e->m)
        ctx->kt_used++;
    e->m = m;
    e->cu = cu;
    e->req = *req;
    e->bucket = bucket;
    e->gen = ctx->win_gen;
    e->dflt = dflt;
    return 0;
}

const sale_key *kmod_key(const kmod *m)
{
    return &m->rk;
}

/* Set f's dynamic shared memory limit to smem and record it in m's table,
 * under g_smem_lock. raise_only (sale_kernel_launch): leave a larger limit
 * already set as it is, so that concurrent launches end at the larger and no
 * launch lowers another's between its raise and its launch. The load path
 * sets the plan's sizes (raise_only 0), so the table always holds the value
 * last set. A function not yet in the table starts at the driver's 48 KB;
 * past KMOD_LIMS functions (a caller's own entries) the limit is set every
 * time and not recorded. */
static CUresult kmod_set_smem(kmod *m, const drv_api *d, CUfunction f, unsigned smem, int raise_only)
{
    CUresult r = CUDA_SUCCESS;
    pthread_mutex_lock(&g_smem_lock);
    int i = 0;
    while (i < m->nlim && m->lim_fn[i] != f)
        i++;
    if (i == m->nlim && i < KMOD_LIMS) {
        m->lim_fn[i] = f;
        m->lim_smem[i] = 48 * 1024;
        m->nlim++;
    }
    if (i == KMOD_LIMS || !raise_only || smem > m->lim_smem[i]) {
        r = d->FuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)smem);
        if (r == CUDA_SUCCESS && i < KMOD_LIMS)
            m->lim_smem[i] = smem;
    }
    pthread_mutex_unlock(&g_smem_lock);
    return r;
}

/* Resolve the entries of the family's launch plan once, at load. */
static CUresult resolve_entries(const drv_api *d, kmod *m)
{
    sale_layout_cfg lc = key_layout(&m->rk);
    sale_launch L[4];
    int n = sale_layout_plan(&lc, 1, 1, 1, 1, L);
    m->nfn = 0;
    for (int i = 0; i < n && m->nfn < KMOD_FNS; i++) {
        CUfunction f;
        CUresult r = d->ModuleGetFunction(&f, m->mod, L[i].entry);
        if (r == CUDA_SUCCESS && L[i].smem > 48 * 1024) /* the plan's smem does not depend on the shape */
            r = kmod_set_smem(m, d, f, (unsigned)L[i].smem, 0);
        /* the rows attend kernel is built for two CTAs an SM: ask for all of the SM's shared memory */
        if (r == CUDA_SUCCESS && sale_layout_wgmma_rows(&lc))
            r = d->FuncSetAttribute(f, CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, 100);
        if (r != CUDA_SUCCESS)
            return r;
        m->fn_name[m->nfn] = L[i].entry;
        m->fns[m->nfn++] = f;
    }
    return CUDA_SUCCESS;
}

/* whether resolved key k is one of the two persistent sm_90a attend kernels
 * (rows, warps 5; two-row, warps 12) at its default stages */
static int attend_pick_kernel(const sale_key *k)
{
    if (k->family != SALE_FAMILY_ATTEND || k->arch != SALE_ARCH_SM90A ||
        (k->warps != SALE_WR_WARPS && k->warps != SALE_WG_WARPS))
        return 0;
    sale_key d = *k;
    d.stages = 0;
    return sale_key_resolve(&d, NULL, 0) == SALE_OK && d.stages == k->stages;
}

sale_status ctx_kernel(sale_ctx *ctx, CUcontext cu, CUdevice dev, const sale_key *key, int seq_len, kmod **out,
                       int *dflt)
{
    int bucket = seq_len > 0 ? win_bucket_n(seq_len) : 0, dummy;
    *out = NULL;
    if (!dflt)
        dflt = &dummy;
    *dflt = 0;
    pthread_mutex_lock(&ctx->lock);
    kmod *hit = ctx_kt_find(ctx, cu, key, bucket, dflt);
    unsigned gen = ctx->win_gen;
    pthread_mutex_unlock(&ctx->lock);
    if (hit) {
        *out = hit;
        return SALE_OK;
    }

    /* miss: resolve (winner, defaults), cubin from the cache or NVRTC, load */
    const drv_api *d = drv_get(NULL);
    CUresult ar = CUDA_SUCCESS;
    int dev_arch = drv_device_arch(d, dev, &ar);
    if (ar != CUDA_SUCCESS) {
        sale_set_error(ctx, "cuDeviceGetAttribute(compute capability): %s", drv_errstr(ar));
        return SALE_ERR_CUDA;
    }
    sale_key k = *key;
    if (k.arch == SALE_ARCH_CURRENT) {
        /* a cubin runs on its own major architecture at equal or higher minor */
        k.arch = key_code_arch(dev_arch);
        if (!k.arch) {
            sale_set_error(ctx, "this device is sm_%d; sale's kernels target sm_80, sm_86, sm_89 and sm_90", dev_arch);
            return SALE_ERR_UNSUPPORTED;
        }
    }
    char err[512];
    int won = 0;
    if (!k.warps || !k.stages) {
        /* open tiles: this device's tuned winner if one was stored, else the default */
        sale_device_info di;
        sale_key tuned;
        if (sale_device_info_get(ctx, (int)dev, &di) == SALE_OK && win_lookup(ctx, &di, &k, seq_len, &tuned) == 1) {
            key_take_tiles(&k, &tuned);
            won = 1;
        }
    }
    key_length_default_warps(&k, seq_len); /* attend on sm_90a up to 128K: the rows kernel */
    if (sale_key_resolve(&k, err, sizeof err)) {
        sale_set_error(ctx, "%s", err);
        return SALE_ERR_INVALID;
    }
    /* the warps were the default's: nothing tuned, or a winner that is one of
     * the two sm_90a attend kernels at its default stages (above 64K with
     * thr=fixed sale_attention lets the device pick between those two per
     * call, which a winner timed at one density does not override) */
    const int by_default = !key->warps && (!won || attend_pick_kernel(&k));
    db_kernel_row row;
    memset(&row, 0, sizeof row);
    int from_cache = 0;
    sale_status st = compile_row(ctx, &k, 0, &row, &from_cache);
    if (st)
        return st;
    kmod *m = NULL;
    pthread_mutex_lock(&ctx->lock);
    for (kmod *x = ctx->modules; x; x = x->next)
        if (x->cu == cu && x->src_hash == row.src_hash && x->arch == k.arch)
            m = x;
    pthread_mutex_unlock(&ctx->lock);
    if (!m) {
        kmod *nm = calloc(1, sizeof *nm);
        if (!nm) {
            db_row_free(&row);
            sale_set_error(ctx, "sale_get_kernel: out of memory");
            return SALE_ERR_NOMEM;
        }
        CUresult r = d->ModuleLoadData(&nm->mod, row.cubin);
        if (r != CUDA_SUCCESS) {
            load_error(ctx, r, &k, dev_arch);
            free(nm);
            db_row_free(&row);
            return SALE_ERR_CUDA;
        }
        nm->rk = k;
        r = d->ModuleGetFunction(&nm->fn, nm->mod, row.entry);
        if (r == CUDA_SUCCESS && row.smem_dynamic > 48 * 1024)
            r = kmod_set_smem(nm, d, nm->fn, (unsigned)row.smem_dynamic, 0);
        if (r == CUDA_SUCCESS)
            r = resolve_entries(d, nm);
        if (r != CUDA_SUCCESS) {
            sale_set_error(ctx, "preparing %s in %s: %s", row.entry, row.key, drv_errstr(r));
            d->ModuleUnload(nm->mod);
            free(nm);
            db_row_free(&row);
            return SALE_ERR_CUDA;
        }
        nm->cu = cu;
        nm->src_hash = row.src_hash;
        nm->arch = k.arch;
        fill_info(&nm->info, &k, &row, from_cache);
        pthread_mutex_lock(&ctx->lock);
        /* another thread may have loaded the same module meanwhile: keep one */
        for (kmod *x = ctx->modules; x && !m; x = x->next)
            if (x->cu == cu && x->src_hash == row.src_hash && x->arch == k.arch)
                m = x;
        if (!m) {
            nm->next = ctx->modules;
            ctx->modules = m = nm;
            nm = NULL;
        }
        pthread_mutex_unlock(&ctx->lock);
        if (nm) {
            d->ModuleUnload(nm->mod);
            free(nm);
        }
    }
    db_row_free(&row);
    pthread_mutex_lock(&ctx->lock);
    /* a winner stored while we resolved: do not file the old answer as fresh */
    int rc = gen == ctx->win_gen ? ctx_kt_put(ctx, cu, key, bucket, m, by_default) : 0;
    pthread_mutex_unlock(&ctx->lock);
    if (rc)
        sale_logf(ctx, SALE_LOG_WARN, "loaded-kernel table: out of memory; the next request looks the kernel up again");
    *out = m;
    *dflt = by_default;
    return SALE_OK;
}

sale_status sale_get_kernel(sale_ctx *ctx, const sale_key *key, sale_kernel **out)
{
    if (!ctx || !key || !out) {
        sale_set_error(ctx, "sale_get_kernel: NULL argument");
        return SALE_ERR_INVALID;
    }
    *out = NULL;
    if (ctx_ready(ctx, "sale_get_kernel"))
        return SALE_ERR_CACHE;
    /* a key that no device could serve is INVALID, not NO_DEVICE (open fields and arch current allowed) */
    char err[512];
    if (sale_key_validate(key, err, sizeof err)) {
        sale_set_error(ctx, "%s", err);
        return SALE_ERR_INVALID;
    }
    CUcontext cu;
    CUdevice dev;
    if (drv_ensure_context(ctx, &cu, &dev))
        return SALE_ERR_NO_DEVICE;
    kmod *m = NULL;
    sale_status st = ctx_kernel(ctx, cu, dev, key, 0, &m, NULL);
    *out = (sale_kernel *)m;
    return st;
}

sale_status sale_kernel_get_info(const sale_kernel *k, sale_kernel_info *info)
{
    if (!k || !info)
        return SALE_ERR_INVALID;
    *info = ((const kmod *)k)->info;
    return SALE_OK;
}

void *sale_kernel_function(const sale_kernel *k)
{
    return k ? (void *)((const kmod *)k)->fn : NULL;
}

/* The calling thread's current CUDA context made the kernel's: a thread
 * with none gets it (as sale_attention gives it the primary context); a
 * thread current in another context is refused (the module is not there). */
static sale_status kmod_current(sale_ctx *ctx, const drv_api *d, const kmod *m, const char *what)
{
    CUcontext cur = NULL;
    CUresult r = d->CtxGetCurrent(&cur);
    if (r == CUDA_SUCCESS && !cur)
        r = d->CtxSetCurrent(cur = m->cu);
    if (r != CUDA_SUCCESS) {
        sale_set_error(ctx, "%s: cannot make the kernel's CUDA context current: %s", what, drv_errstr(r));
        return SALE_ERR_CUDA;
    }
    if (cur != m->cu) {
        sale_set_error(ctx, "%s: %s was loaded in another CUDA context than this thread's current one (load it "
                            "with that context current, or make its context current)", what, m->info.key);
        return SALE_ERR_INVALID;
    }
    return SALE_OK;
}

sale_status sale_kernel_function_named(sale_ctx *ctx, const sale_kernel *k, const char *name, void **fn)
{
    const kmod *m = (const kmod *)k;
    if (!fn) {
        sale_set_error(ctx, "sale_kernel_function_named: fn is NULL");
        return SALE_ERR_INVALID;
    }
    *fn = NULL;
    if (!m || !name) {
        sale_set_error(ctx, "sale_kernel_function_named: NULL argument");
        return SALE_ERR_INVALID;
    }
    const drv_api *d = drv_get(NULL);
    sale_status cs = kmod_current(ctx, d, m, "sale_kernel_function_named");
    if (cs)
        return cs;
    CUfunction f;
    CUresult r = d->ModuleGetFunction(&f, m->mod, name);
    if (r != CUDA_SUCCESS) {
        sale_set_error(ctx, "no entry '%s' in the module of %s: %s", name, m->info.key, drv_errstr(r));
        return r == CUDA_ERROR_NOT_FOUND ? SALE_ERR_NOT_FOUND : SALE_ERR_CUDA;
    }
    *fn = (void *)f;
    return SALE_OK;
}

sale_status sale_kernel_launch(sale_ctx *ctx, const sale_kernel *k, const char *entry, unsigned gx, unsigned gy,
                               unsigned gz, unsigned block, unsigned smem, const void *params, size_t params_size,
                               void *stream)
{
    const kmod *m = (const kmod *)k;
    if (!m || !params || !params_size || !gx || !gy || !gz) {
        sale_set_error(ctx, "sale_kernel_launch: NULL kernel/params or empty grid");
        return SALE_ERR_INVALID;
    }
    const drv_api *d = drv_get(NULL);
    sale_status cs = kmod_current(ctx, d, m, "sale_kernel_launch");
    if (cs)
        return cs;
    CUfunction f = m->fn;
    if (entry && strcmp(entry, m->info.entry)) {
        f = NULL;
        for (int i = 0; i < m->nfn && !f; i++)
            if (m->fn_name[i] == entry || !strcmp(m->fn_name[i], entry))
                f = m->fns[i];
        if (!f) {
            void *p;
            sale_status s = sale_kernel_function_named(ctx, k, entry, &p);
            if (s)
                return s;
            f = (CUfunction)p;
        }
    }
    if (!block)
        block = (unsigned)m->info.threads;
    if (smem == (unsigned)-1)
        smem = (unsigned)m->info.smem_dynamic;
    CUresult r = smem > 48 * 1024 ? kmod_set_smem((kmod *)m, d, f, smem, 1) : CUDA_SUCCESS;
    void *args[1] = {(void *)params};
    if (r == CUDA_SUCCESS)
        r = d->LaunchKernel(f, gx, gy, gz, block, 1, 1, smem, (CUstream)stream, args, NULL);
    if (r != CUDA_SUCCESS) {
        sale_set_error(ctx, "launching %s of %s (grid %u,%u,%u block %u smem %u): %s", entry ? entry : m->info.entry,
                       m->info.key, gx, gy, gz, block, smem, drv_errstr(r));
        return SALE_ERR_CUDA;
    }
    return SALE_OK;
}
