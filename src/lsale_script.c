/* lsale_script.c — `sale run script.lua`: a Lua 5.4 state with the full
 * standard library and the `sale` module (keys, kernels, tensors, SALE on GPU
 * or the CPU reference, metrics, timing, tables). Built on the public API of
 * sale.h only. Indices seen from Lua (batch, head, query, key, blocks) are
 * 0-based, as in the library and its needles.
 *
 *   sale.key(text|table) -> key table      sale.key_format(key) -> text
 *   sale.compile(key) -> info              sale.get_kernel(key) -> info
 *   sale.has_gpu() -> bool                 sale.device() -> info | nil
 *   sale.tensor_random{B,H,N,D,dtype,seed,scale,device}   sale.tensor_zeros{B,H,N,D,dtype,device}
 *   sale.generate{B,Hq,Hkv,N,D,dtype,structured,needles,seed,device,rope_base,sink,local_bias,
 *                 needle_gain} -> q, k, v, needles
 *   sale.reference{q,k,v,tau,block_q,block_k,block_seg,local_window,est_bits,thr,mode,dense_below,scale,
 *                  model,layer}  -> out, stats, mask   (host tensors; model/layer: stored thresholds
 *                  instead of tau, run in the variant they were calibrated with when thr is nil)
 *   sale.attention{same..., out=, stats=true, mask=false} -> out, stats, mask   (GPU tensors)
 *   sale.rel_l1(a, b) -> sum|a-b| / sum|b| (NaN when either holds a NaN or an inf)
 *   sale.needle_recall(mask, needles) -> recall, hit, total
 *   sale.time(fn, {warmup=3, reps=10, host=false}) -> median_ms, min_ms   sale.clock() -> s
 *   sale.format_table(rows, cols) -> text  sale.table(rows, cols)  sale.csv(path, rows, cols)
 * Tensors: t.shape {B,H,N,D}, t.dtype, t.device, t.bytes, t:to("cpu"|"gpu"),
 * t:get(b,h,n,d), t:free(). Masks: m:kept(b,h,qb,kb), m:count(), m.B/H/nqb/nkb.
 * An option table holds only the named fields its function reads: a
 * positional entry or an unknown name is an error, not a silent default.
 * A boolean option (structured, stats, mask, host) takes true or false; nil
 * is its default. mode: nil is "auto" (C's default: two_pass on sm_90, fused
 * elsewhere). tau: nil is 0.004; a number in [0, 1) for every head or a list
 * with one per query head; a head with tau <= 1e-5 (0 included) runs dense.
 * model= needs layer=. A key table has one field per key field ("*" or nil:
 * open) and a text made from them when read, so an edited field is the key;
 * a table may give text= instead, and fields beside it must agree with it.
 * needle_recall takes needles {batch=, head=, query=, key=}, all four.
 * lsale_run_script's argv are the script's arguments; a leading argv[0] equal
 * to the script path (main's convention) is skipped. */
#include <errno.h>
#include <stddef.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "config.h"
#include "sale.h"

#define TENSOR_MT "sale.tensor"
#define MASK_MT "sale.mask"

typedef struct lstate {
    sale_ctx *ctx;
    int gpu_known, gpu;
} lstate;

static lstate *get_state(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* Raises the context's message for a failed call. */
static int fail(lua_State *L, lstate *S, sale_status st, const char *what)
{
    const char *m = S->ctx ? sale_last_error(S->ctx) : "";
    return luaL_error(L, "%s: %s%s%s", what, sale_status_name(st), m && m[0] ? ": " : "", m ? m : "");
}

/* The string at idx as a name (a path, a model, a device, a key text):
 * refused when it holds a NUL, which C would cut it at (a name cut at the
 * NUL would name something else); what names it in the message. NULL if
 * the value is no string. */
static const char *check_name_at(lua_State *L, int idx, const char *what)
{
    size_t l;
    const char *s = lua_tolstring(L, idx, &l);
    if (s && strlen(s) != l)
        luaL_error(L, "%s: '%s' is followed by a NUL byte and more text", what, s);
    return s;
}

/* Argument arg as a name (check_name_at), a type error if no string. */
static const char *check_name_arg(lua_State *L, int arg, const char *what)
{
    luaL_checkstring(L, arg);
    return check_name_at(L, arg, what);
}

/* ------------------------------------------------------------- tensors */

typedef struct tensor {
    sale_ctx *ctx;
    int gpu;
    sale_dtype dtype;
    int shape[4]; /* B, H, N, D */
    size_t bytes;
    void *ptr;
} tensor;

static size_t dtype_size(sale_dtype d) { return d == SALE_DTYPE_F32 ? 4 : 2; }

static int parse_dtype(lua_State *L, const char *s)
{
    if (!strcmp(s, "bf16"))
        return SALE_DTYPE_BF16;
    if (!strcmp(s, "f16"))
        return SALE_DTYPE_F16;
    if (!strcmp(s, "f32"))
        return SALE_DTYPE_F32;
    return luaL_error(L, "dtype: unknown dtype '%s' (bf16, f16, f32)", s);
}

static int has_gpu(lstate *S)
{
    if (!S->gpu_known) {
        int n = 0;
        S->gpu = sale_device_count(S->ctx, &n) == SALE_OK && n > 0;
        S->gpu_known = 1;
    }
    return S->gpu;
}

static int parse_device(lua_State *L, lstate *S, const char *s)
{
    if (!strcmp(s, "cpu"))
        return 0;
    if (!strcmp(s, "gpu") || !strcmp(s, "cuda")) {
        if (!has_gpu(S))
            return luaL_error(L, "device 'gpu': no CUDA device on this machine (sale.has_gpu() is false)");
        return 1;
    }
    return luaL_error(L, "device: unknown device '%s' (cpu, gpu)", s);
}

/* The bytes of a B x H x N x D tensor of dt; raises on a dim <= 0 or a size
 * that does not fit in size_t (a wrapped size would allocate a small buffer
 * that the shape then indexes past). */
static size_t tensor_bytes(lua_State *L, sale_dtype dt, const int shape[4])
{
    size_t n = dtype_size(dt);
    for (int i = 0; i < 4; i++) {
        if (shape[i] <= 0)
            luaL_error(L, "tensor shape must be positive, got %d x %d x %d x %d", shape[0], shape[1], shape[2],
                       shape[3]);
        if ((size_t)shape[i] > SIZE_MAX / n)
            luaL_error(L, "tensor of %d x %d x %d x %d is too large", shape[0], shape[1], shape[2], shape[3]);
        n *= (size_t)shape[i];
    }
    return n;
}

/* Raises out of memory for a tensor, naming its shape and bytes (the size
 * through snprintf: lua_pushfstring has no %zu). what: "for", "downloading". */
static int tensor_nomem(lua_State *L, const char *what, sale_dtype dt, const int shape[4], size_t bytes)
{
    char n[32];
    snprintf(n, sizeof n, "%zu", bytes);
    return luaL_error(L, "out of memory %s a %d x %d x %d x %d %s tensor (%s bytes)", what, shape[0], shape[1],
                      shape[2], shape[3], sale_dtype_name(dt), n);
}

static tensor *tensor_new(lua_State *L, lstate *S, int gpu, sale_dtype dt, const int shape[4])
{
    tensor *t = lua_newuserdatauv(L, sizeof *t, 0);
    memset(t, 0, sizeof *t);
    luaL_setmetatable(L, TENSOR_MT);
    t->ctx = S->ctx;
    t->dtype = dt;
    memcpy(t->shape, shape, sizeof t->shape);
    size_t n = tensor_bytes(L, dt, shape);
    t->bytes = n;
    if (gpu) {
        sale_status st = sale_dev_alloc(S->ctx, n, &t->ptr);
        if (st)
            fail(L, S, st, "allocating a GPU tensor");
        t->gpu = 1;
    } else {
        t->ptr = malloc(n);
        if (!t->ptr)
            tensor_nomem(L, "for", dt, shape, n);
    }
    return t;
}

static tensor *check_tensor(lua_State *L, int idx)
{
    tensor *t = luaL_checkudata(L, idx, TENSOR_MT);
    if (!t->ptr)
        luaL_error(L, "tensor was freed");
    return t;
}

static void tensor_release_ud(tensor *t)
{
    if (t->ptr) {
        if (t->gpu)
            sale_dev_free(t->ctx, t->ptr);
        else
            free(t->ptr);
        t->ptr = NULL;
    }
}

static int tensor_release(lua_State *L)
{
    tensor_release_ud(luaL_checkudata(L, 1, TENSOR_MT));
    return 0;
}

static float elem_get(const void *p, sale_dtype dt, size_t i)
{
    switch (dt) {
    case SALE_DTYPE_F16: return sale_f16_to_f32(((const uint16_t *)p)[i]);
    case SALE_DTYPE_BF16: return sale_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

static void elem_set(void *p, sale_dtype dt, size_t i, float x)
{
    switch (dt) {
    case SALE_DTYPE_F16: ((uint16_t *)p)[i] = sale_f32_to_f16(x); break;
    case SALE_DTYPE_BF16: ((uint16_t *)p)[i] = sale_f32_to_bf16(x); break;
    default: ((float *)p)[i] = x; break;
    }
}

/* A host copy of t's data (t itself when on the host); *owned says whether to free it. */
static const void *host_view(lua_State *L, lstate *S, tensor *t, int *owned)
{
    *owned = 0;
    if (!t->gpu)
        return t->ptr;
    void *h = malloc(t->bytes);
    if (!h)
        tensor_nomem(L, "downloading", t->dtype, t->shape, t->bytes);
    sale_status st = sale_dev_download(S->ctx, h, t->ptr, t->bytes);
    if (st) {
        free(h);
        fail(L, S, st, "downloading a tensor");
    }
    *owned = 1;
    return h;
}

static int tensor_to(lua_State *L)
{
    lstate *S = get_state(L);
    tensor *t = check_tensor(L, 1);
    int gpu = parse_device(L, S, check_name_arg(L, 2, "tensor:to: device"));
    tensor *n = tensor_new(L, S, gpu, t->dtype, t->shape);
    sale_status st = SALE_OK;
    if (!t->gpu && !gpu)
        memcpy(n->ptr, t->ptr, t->bytes);
    else if (!t->gpu && gpu)
        st = sale_dev_upload(S->ctx, n->ptr, t->ptr, t->bytes);
    else if (t->gpu && !gpu)
        st = sale_dev_download(S->ctx, n->ptr, t->ptr, t->bytes);
    else {
        int owned;
        const void *h = host_view(L, S, t, &owned);
        st = sale_dev_upload(S->ctx, n->ptr, h, t->bytes);
        if (owned)
            free((void *)h);
    }
    if (st)
        return fail(L, S, st, "tensor:to");
    return 1;
}

static int tensor_get(lua_State *L)
{
    lstate *S = get_state(L);
    tensor *t = check_tensor(L, 1);
    lua_Integer ix[4];
    for (int i = 0; i < 4; i++) {
        ix[i] = luaL_checkinteger(L, 2 + i);
        if (ix[i] < 0 || ix[i] >= t->shape[i])
            return luaL_error(L, "tensor:get: index %d is %I, must be in [0, %d)", i + 1, ix[i], t->shape[i]);
    }
    size_t off = (((size_t)ix[0] * t->shape[1] + (size_t)ix[1]) * t->shape[2] + (size_t)ix[2]) * t->shape[3] +
                 (size_t)ix[3];
    unsigned char buf[4];
    size_t es = dtype_size(t->dtype);
    if (t->gpu) {
        sale_status st = sale_dev_download(S->ctx, buf, (unsigned char *)t->ptr + off * es, es);
        if (st)
            return fail(L, S, st, "tensor:get");
        lua_pushnumber(L, elem_get(buf, t->dtype, 0));
    } else
        lua_pushnumber(L, elem_get(t->ptr, t->dtype, off));
    return 1;
}

static int tensor_index(lua_State *L)
{
    tensor *t = luaL_checkudata(L, 1, TENSOR_MT);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "shape")) {
        lua_createtable(L, 4, 0);
        for (int i = 0; i < 4; i++) {
            lua_pushinteger(L, t->shape[i]);
            lua_rawseti(L, -2, i + 1);
        }
    } else if (!strcmp(k, "dtype"))
        lua_pushstring(L, sale_dtype_name(t->dtype));
    else if (!strcmp(k, "device"))
        lua_pushstring(L, t->gpu ? "gpu" : "cpu");
    else if (!strcmp(k, "bytes"))
        lua_pushinteger(L, (lua_Integer)t->bytes);
    else if (!strcmp(k, "numel"))
        lua_pushinteger(L, (lua_Integer)(t->bytes / dtype_size(t->dtype)));
    else {
        /* methods live in the metatable */
        luaL_getmetatable(L, TENSOR_MT);
        lua_getfield(L, -1, k);
    }
    return 1;
}

static int tensor_tostring(lua_State *L)
{
    tensor *t = luaL_checkudata(L, 1, TENSOR_MT);
    lua_pushfstring(L, "tensor(%d x %d x %d x %d, %s, %s%s)", t->shape[0], t->shape[1], t->shape[2], t->shape[3],
                    sale_dtype_name(t->dtype), t->gpu ? "gpu" : "cpu", t->ptr ? "" : ", freed");
    return 1;
}

/* Argument arg as a C int (luaL_checkinteger, then int's range). */
static int check_int(lua_State *L, int arg)
{
    lua_Integer v = luaL_checkinteger(L, arg);
    if (v < INT_MIN || v > INT_MAX)
        luaL_argerror(L, arg, lua_pushfstring(L, "%I is out of range [%d, %d]", v, INT_MIN, INT_MAX));
    return (int)v;
}

static int opt_int_arg(lua_State *L, int arg, int def) { return lua_isnoneornil(L, arg) ? def : check_int(L, arg); }

/* ---------------------------------------------------------------- masks */

typedef struct mask {
    int B, H, nqb, nkb, nkw, block_q, block_k;
    uint32_t bits[];
} mask;

static mask *mask_new(lua_State *L, int B, int H, int nqb, int nkb, int bq, int bk)
{
    int nkw = (nkb + 31) / 32;
    size_t words = (size_t)B * H * nqb * nkw;
    mask *m = lua_newuserdatauv(L, sizeof *m + words * sizeof(uint32_t), 0);
    *m = (mask){B, H, nqb, nkb, nkw, bq, bk};
    memset(m->bits, 0, words * sizeof(uint32_t));
    luaL_setmetatable(L, MASK_MT);
    return m;
}

static size_t mask_words(const mask *m) { return (size_t)m->B * m->H * m->nqb * m->nkw; }

static int mask_bit(const mask *m, int b, int h, int qb, int kb)
{
    if (b < 0 || b >= m->B || h < 0 || h >= m->H || qb < 0 || qb >= m->nqb || kb < 0 || kb >= m->nkb)
        return -1;
    const uint32_t *row = m->bits + (((size_t)b * m->H + h) * m->nqb + qb) * m->nkw;
    return (row[kb / 32] >> (kb % 32)) & 1u;
}

static int mask_kept(lua_State *L)
{
    mask *m = luaL_checkudata(L, 1, MASK_MT);
    int b = check_int(L, 2), h = check_int(L, 3);
    int qb = check_int(L, 4), kb = check_int(L, 5);
    int r = mask_bit(m, b, h, qb, kb);
    if (r < 0)
        return luaL_error(L, "mask:kept(%d, %d, %d, %d) out of range (B %d, H %d, query blocks %d, key blocks %d)", b,
                          h, qb, kb, m->B, m->H, m->nqb, m->nkb);
    lua_pushboolean(L, r);
    return 1;
}

static int mask_count(lua_State *L)
{
    mask *m = luaL_checkudata(L, 1, MASK_MT);
    lua_Integer n = 0;
    for (size_t i = 0; i < mask_words(m); i++)
        n += __builtin_popcount(m->bits[i]);
    lua_pushinteger(L, n);
    return 1;
}

/* mask:group_overlap(group): how far the query heads of a GQA group share
 * their kept blocks. Heads h = g * group .. g * group + group - 1 read the
 * K/V of one KV head (as sale's layouts do). Returns kept (the kept bits of
 * every head: the K/V blocks a kernel reading each head's row alone loads)
 * and union (per batch, group and query block, the blocks any head of the
 * group keeps: what one reading of the group's union loads). kept / union is
 * between 1 (no block shared) and group (every head keeps the same). */
static int mask_group_overlap(lua_State *L)
{
    mask *m = luaL_checkudata(L, 1, MASK_MT);
    int g = check_int(L, 2);
    if (g < 1 || m->H % g)
        return luaL_error(L, "mask:group_overlap(%d): the group must divide the mask's %d heads", g, m->H);
    lua_Integer kept = 0, uni = 0;
    for (int b = 0; b < m->B; b++)
        for (int h0 = 0; h0 < m->H; h0 += g)
            for (int qb = 0; qb < m->nqb; qb++)
                for (int w = 0; w < m->nkw; w++) {
                    uint32_t u = 0;
                    for (int h = h0; h < h0 + g; h++) {
                        uint32_t x = m->bits[(((size_t)b * m->H + h) * m->nqb + qb) * m->nkw + w];
                        kept += __builtin_popcount(x);
                        u |= x;
                    }
                    uni += __builtin_popcount(u);
                }
    lua_pushinteger(L, kept);
    lua_pushinteger(L, uni);
    return 2;
}

static int mask_index(lua_State *L)
{
    mask *m = luaL_checkudata(L, 1, MASK_MT);
    const char *k = luaL_checkstring(L, 2);
    const struct { const char *n; int v; } f[] = {{"B", m->B},     {"H", m->H},           {"nqb", m->nqb},
                                                  {"nkb", m->nkb}, {"block_q", m->block_q}, {"block_k", m->block_k}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (!strcmp(k, f[i].n)) {
            lua_pushinteger(L, f[i].v);
            return 1;
        }
    luaL_getmetatable(L, MASK_MT);
    lua_getfield(L, -1, k);
    return 1;
}

/* ------------------------------------------------------- option helpers */

/* x as a message shows it: "nan" (never "-nan"), else Lua's %.14g. */
static const char *num_text(lua_State *L, double x)
{
    return isnan(x) ? "nan" : lua_pushfstring(L, "%f", x);
}

/* Fields and arguments are C ints: a value beyond int's range is refused,
 * never wrapped into another (2^32 + 64 is not 64). */
static int opt_int(lua_State *L, int t, const char *k, int def)
{
    int ty = lua_getfield(L, t, k);
    int v = def;
    if (ty != LUA_TNIL) {
        if (!lua_isinteger(L, -1)) {
            lua_Number n = lua_tonumber(L, -1);
            if (ty != LUA_TNUMBER || n != floor(n)) /* NaN too */
                luaL_error(L, "%s must be an integer, got %s", k,
                           ty == LUA_TNUMBER ? num_text(L, n) : luaL_typename(L, -1));
            if (!(n >= INT_MIN && n <= INT_MAX))
                luaL_error(L, "%s: %s is out of range [%d, %d]", k, num_text(L, n), INT_MIN, INT_MAX);
            v = (int)n;
        } else {
            lua_Integer i = lua_tointeger(L, -1);
            if (i < INT_MIN || i > INT_MAX)
                luaL_error(L, "%s: %I is out of range [%d, %d]", k, i, INT_MIN, INT_MAX);
            v = (int)i;
        }
    }
    lua_pop(L, 1);
    return v;
}

static double opt_num(lua_State *L, int t, const char *k, double def)
{
    int ty = lua_getfield(L, t, k);
    double v = def;
    if (ty != LUA_TNIL) {
        if (ty != LUA_TNUMBER)
            luaL_error(L, "%s must be a number, got %s", k, luaL_typename(L, -1));
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

static const char *opt_str(lua_State *L, int t, const char *k, const char *def)
{
    int ty = lua_getfield(L, t, k);
    const char *v = def;
    if (ty != LUA_TNIL) {
        if (ty != LUA_TSTRING)
            luaL_error(L, "%s must be a string, got %s", k, luaL_typename(L, -1));
        v = check_name_at(L, -1, k); /* stays alive: the table holds it */
    }
    lua_pop(L, 1);
    return v;
}

/* A boolean option: true, false or nil (def). Lua's truthiness would take
 * 0, "no" and "false" as true, silently. */
static int opt_bool(lua_State *L, int t, const char *k, int def)
{
    int ty = lua_getfield(L, t, k);
    if (ty != LUA_TNIL && ty != LUA_TBOOLEAN) {
        const char *v = ty == LUA_TNUMBER   ? lua_pushfstring(L, "number %s", lua_tostring(L, -1))
                        : ty == LUA_TSTRING ? lua_pushfstring(L, "string '%s'", lua_tostring(L, -1))
                                            : luaL_typename(L, -1);
        luaL_error(L, "%s must be true or false (nil: the default), got %s", k, v);
    }
    int v = ty == LUA_TNIL ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Refuses what fn would otherwise ignore in its option table at t: a
 * positional entry (sale.tensor_random{1, 1, 64, 128} ran at the defaults)
 * or a name it does not read (a typo). known: the names, NULL-terminated;
 * npos: how many leading positional entries fn reads ([1] .. [npos]). */
static void check_opts(lua_State *L, int t, const char *fn, const char *const *known, int npos)
{
    t = lua_absindex(L, t);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1); /* the value; the key stays for lua_next */
        int ty = lua_type(L, -1), ok = 0;
        if (ty == LUA_TSTRING) {
            const char *k = lua_tostring(L, -1);
            for (int i = 0; known[i] && !ok; i++)
                ok = !strcmp(k, known[i]);
        } else if (lua_isinteger(L, -1))
            ok = lua_tointeger(L, -1) >= 1 && lua_tointeger(L, -1) <= npos;
        if (ok)
            continue;
        char names[512] = "";
        size_t len = 0;
        for (int i = 0; known[i] && len < sizeof names; i++)
            len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", i ? ", " : "", known[i]);
        if (ty == LUA_TSTRING)
            luaL_error(L, "%s: unknown field '%s' (known: %s)", fn, lua_tostring(L, -1), names);
        else if (lua_isinteger(L, -1))
            luaL_error(L, "%s: positional field [%I]: options are named (known: %s)", fn, lua_tointeger(L, -1),
                       names);
        else
            luaL_error(L, "%s: a %s key is not an option (known: %s)", fn, luaL_typename(L, -1), names);
    }
}

/* ----------------------------------------------------------------- keys */

#define KEY_MT "sale.key"

/* A key table's integer fields; open: the value that means "open" in
 * sale_key, shown as "*" in a table, as in the key text. */
static const struct {
    const char *n;
    size_t off;
    int open;
} key_ints[] = {
    {"head_dim", offsetof(sale_key, head_dim), 0},   {"block_q", offsetof(sale_key, block_q), 0},
    {"block_k", offsetof(sale_key, block_k), 0},     {"block_seg", offsetof(sale_key, block_seg), 0},
    {"local_window", offsetof(sale_key, local_window), 0}, {"est_bits", offsetof(sale_key, est_bits), 0},
    {"causal", offsetof(sale_key, causal), -1},      {"warps", offsetof(sale_key, warps), 0},
    {"stages", offsetof(sale_key, stages), 0}};

#define KEY_INT(k, i) (*(int *)((char *)(k) + key_ints[i].off))

/* A key as a table: one field per key field, "*" for an open one; `text` is
 * not stored but made from the fields when read (KEY_MT's __index), so it
 * always says what the fields say and an edited field is what goes back in. */
static void push_key(lua_State *L, const sale_key *k)
{
    lua_newtable(L);
    lua_pushstring(L, sale_family_name(k->family));
    lua_setfield(L, -2, "family");
    for (size_t i = 0; i < sizeof key_ints / sizeof key_ints[0]; i++) {
        int v = KEY_INT(k, i);
        if (v == key_ints[i].open)
            lua_pushliteral(L, "*");
        else
            lua_pushinteger(L, v);
        lua_setfield(L, -2, key_ints[i].n);
    }
    const char *dt = sale_dtype_name(k->dtype);
    lua_pushstring(L, dt ? dt : "*");
    lua_setfield(L, -2, "dtype");
    const char *an = sale_arch_name(k->arch);
    lua_pushstring(L, an ? an : "?");
    lua_setfield(L, -2, "arch");
    const char *tn = sale_thr_name(k->thr);
    lua_pushstring(L, tn ? tn : "?");
    lua_setfield(L, -2, "thr");
    luaL_setmetatable(L, KEY_MT);
}

static const char *const key_opts[] = {"family", "head_dim", "block_q", "block_k", "block_seg", "local_window",
                                        "est_bits", "causal", "warps", "stages", "dtype", "arch", "thr", "text",
                                        NULL};

static sale_key parse_key_text(lua_State *L, const char *text)
{
    sale_key k;
    char err[256] = "";
    if (sale_key_parse(text, &k, err, sizeof err) != SALE_OK)
        luaL_error(L, "key '%s': %s", text, err);
    return k;
}

/* The key of a table (its fields over the base). */
static void key_fields(lua_State *L, int idx, sale_key *k)
{
    for (size_t i = 0; i < sizeof key_ints / sizeof key_ints[0]; i++) {
        const char *n = key_ints[i].n;
        int ty = lua_getfield(L, idx, n);
        if (ty == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "*")) {
            KEY_INT(k, i) = key_ints[i].open;
        } else if (ty != LUA_TNIL) {
            int v = opt_int(L, idx, n, 0);
            if (v == key_ints[i].open)
                luaL_error(L, "%s: %d is not a value here (for an open field leave it out or write \"*\")", n, v);
            KEY_INT(k, i) = v;
        }
        lua_pop(L, 1);
    }
    const char *dt = opt_str(L, idx, "dtype", NULL);
    if (dt)
        k->dtype = !strcmp(dt, "*") ? (sale_dtype)-1 : (sale_dtype)parse_dtype(L, dt);
    const char *arch = opt_str(L, idx, "arch", NULL);
    if (arch) {
        k->arch = sale_arch_parse(arch);
        if (k->arch < 0)
            luaL_error(L, "arch: unknown architecture '%s'", arch);
    }
    const char *thr = opt_str(L, idx, "thr", NULL);
    if (thr) {
        k->thr = !strcmp(thr, "*") ? SALE_THR_OPEN : sale_thr_parse(thr);
        if (k->thr < 0)
            luaL_error(L, "thr: unknown threshold variant '%s' (run, fixed)", thr);
    }
}

/* The name and value of the first field where a and b differ, or 0. */
static int key_diff(const sale_key *a, const sale_key *b, char *what, size_t n)
{
    if (a->family != b->family)
        return snprintf(what, n, "family (%s, %s)", sale_family_name(a->family), sale_family_name(b->family)), 1;
    for (size_t i = 0; i < sizeof key_ints / sizeof key_ints[0]; i++)
        if (KEY_INT(a, i) != KEY_INT(b, i))
            return snprintf(what, n, "%s (%d, %d)", key_ints[i].n, KEY_INT(a, i), KEY_INT(b, i)), 1;
    if (a->dtype != b->dtype)
        return snprintf(what, n, "dtype"), 1;
    if (a->arch != b->arch)
        return snprintf(what, n, "arch"), 1;
    if (a->thr != b->thr)
        return snprintf(what, n, "thr"), 1;
    return 0;
}

/* A key from a text or a table; fn names the caller in messages. A table's
 * fields give the key (those left out are open, "*" says open too); a table
 * may hold a text instead (sale.key{text = "..."}), and fields beside a text
 * must agree with it: which of the two was edited cannot be told. */
static sale_key to_key(lua_State *L, int idx, const char *fn)
{
    sale_key k;
    char err[256] = "";
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TSTRING) {
        k = parse_key_text(L, check_name_at(L, idx, fn));
    } else if (lua_type(L, idx) == LUA_TTABLE) {
        check_opts(L, idx, fn, key_opts, 0); /* push_key's fields, so a key table goes back in as it is */
        lua_pushliteral(L, "text");
        int tty = lua_rawget(L, idx); /* raw: a key table's text is made from its fields */
        if (tty != LUA_TNIL && tty != LUA_TSTRING)
            luaL_error(L, "%s: text must be a string, got %s", fn, luaL_typename(L, -1));
        const char *text = tty == LUA_TSTRING ? check_name_at(L, -1, fn) : NULL;
        sale_key base;
        if (text)
            base = parse_key_text(L, text);
        const char *fam = opt_str(L, idx, "family", NULL);
        int f = text && !fam ? (int)base.family : 0;
        if (fam) {
            for (f = 0; f < SALE_FAMILY_COUNT; f++)
                if (!strcmp(fam, sale_family_name((sale_family)f)))
                    break;
            if (f == SALE_FAMILY_COUNT)
                luaL_error(L, "family: unknown family '%s'", fam);
        }
        if (!text)
            base = sale_key_default(fam ? (sale_family)f : SALE_FAMILY_FUSED);
        k = base;
        k.family = (sale_family)(fam ? f : (int)base.family);
        key_fields(L, idx, &k);
        char what[96];
        if (text && key_diff(&base, &k, what, sizeof what))
            luaL_error(L, "%s: the table's text '%s' and its fields disagree on %s; give one of them (a table "
                          "from sale.key makes its text from its fields)",
                       fn, text, what);
        lua_pop(L, 1);
    } else
        luaL_error(L, "a key is a text (\"fused:d=128,...\") or a table, got %s", luaL_typename(L, idx));
    if (sale_key_validate(&k, err, sizeof err) != SALE_OK)
        luaL_error(L, "key: %s", err);
    return k;
}

/* push k's text; a key sale_key_format refuses is an error naming why
 * (sale_key_validate's rule), not "too long" */
static int push_key_text(lua_State *L, const sale_key *k, const char *what)
{
    char text[256], err[256] = "";
    if (sale_key_format(k, text, sizeof text) != SALE_OK) {
        if (sale_key_validate(k, err, sizeof err) == SALE_OK)
            snprintf(err, sizeof err, "the key text does not fit %zu bytes", sizeof text);
        return luaL_error(L, "%s: %s", what, err);
    }
    lua_pushstring(L, text);
    return 1;
}

/* key.text: the text of the fields as they are now. */
static int key_index(lua_State *L)
{
    if (lua_type(L, 2) != LUA_TSTRING || strcmp(lua_tostring(L, 2), "text"))
        return 0;
    sale_key k = to_key(L, 1, "key.text");
    return push_key_text(L, &k, "key.text");
}

static int l_key(lua_State *L)
{
    sale_key k = to_key(L, 1, "sale.key");
    push_key(L, &k);
    return 1;
}

static int l_key_format(lua_State *L)
{
    sale_key k = to_key(L, 1, "sale.key_format");
    return push_key_text(L, &k, "key_format");
}

static void push_info(lua_State *L, const sale_kernel_info *i)
{
    lua_newtable(L);
    lua_pushstring(L, i->key);
    lua_setfield(L, -2, "key");
    lua_pushstring(L, i->arch);
    lua_setfield(L, -2, "arch");
    lua_pushstring(L, i->entry);
    lua_setfield(L, -2, "entry");
    const struct { const char *n; lua_Integer v; } f[] = {
        {"registers", i->registers}, {"smem_static", i->smem_static}, {"smem_dynamic", i->smem_dynamic},
        {"spill_stores", i->spill_stores}, {"spill_loads", i->spill_loads}, {"stack", i->stack},
        {"threads", i->threads}, {"cubin_bytes", (lua_Integer)i->cubin_bytes}};
    for (size_t k = 0; k < sizeof f / sizeof f[0]; k++) {
        lua_pushinteger(L, f[k].v);
        lua_setfield(L, -2, f[k].n);
    }
    lua_pushnumber(L, i->compile_ms);
    lua_setfield(L, -2, "compile_ms");
    lua_pushboolean(L, i->from_cache);
    lua_setfield(L, -2, "from_cache");
    char h[24];
    snprintf(h, sizeof h, "%016llx", (unsigned long long)i->src_hash);
    lua_pushstring(L, h);
    lua_setfield(L, -2, "src_hash");
}

static int l_compile(lua_State *L)
{
    lstate *S = get_state(L);
    sale_key k = to_key(L, 1, "sale.compile");
    char err[256];
    if (k.arch == SALE_ARCH_CURRENT)
        return luaL_error(L, "compile: the key needs an arch (e.g. arch=sm_90)");
    if (sale_key_resolve(&k, err, sizeof err) != SALE_OK)
        return luaL_error(L, "compile: %s", err);
    sale_kernel_info info;
    sale_status st = sale_compile(S->ctx, &k, &info);
    if (st)
        return fail(L, S, st, "compile");
    push_info(L, &info);
    return 1;
}

static int l_get_kernel(lua_State *L)
{
    lstate *S = get_state(L);
    sale_key k = to_key(L, 1, "sale.get_kernel");
    sale_kernel *kern;
    sale_status st = sale_get_kernel(S->ctx, &k, &kern);
    if (st)
        return fail(L, S, st, "get_kernel");
    sale_kernel_info info;
    if ((st = sale_kernel_get_info(kern, &info)))
        return fail(L, S, st, "get_kernel");
    push_info(L, &info);
    return 1;
}

static int l_has_gpu(lua_State *L)
{
    lua_pushboolean(L, has_gpu(get_state(L)));
    return 1;
}

static int l_device(lua_State *L)
{
    lstate *S = get_state(L);
    sale_device_info d;
    int i = opt_int_arg(L, 1, 0); /* checked with or without a GPU */
    if (!has_gpu(S) || sale_device_info_get(S->ctx, i, &d) != SALE_OK) {
        lua_pushnil(L);
        return 1;
    }
    lua_newtable(L);
    lua_pushstring(L, d.name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, sale_arch_name(d.arch) ? sale_arch_name(d.arch) : "?");
    lua_setfield(L, -2, "arch");
    lua_pushinteger(L, d.sm_count);
    lua_setfield(L, -2, "sm_count");
    lua_pushinteger(L, d.driver_version);
    lua_setfield(L, -2, "driver_version");
    lua_pushinteger(L, (lua_Integer)d.total_mem);
    lua_setfield(L, -2, "total_mem");
    return 1;
}

/* -------------------------------------------------------------- inputs */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return ((double)(splitmix(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static const char *const tensor_opts[] = {"B", "H", "N", "D", "dtype", "device", "seed", "scale", NULL};
static const char *const zeros_opts[] = {"B", "H", "N", "D", "dtype", "device", NULL};

static int make_tensor(lua_State *L, int random)
{
    lstate *S = get_state(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    check_opts(L, 1, random ? "sale.tensor_random" : "sale.tensor_zeros", random ? tensor_opts : zeros_opts, 0);
    int shape[4] = {opt_int(L, 1, "B", 1), opt_int(L, 1, "H", 1), opt_int(L, 1, "N", 1024), opt_int(L, 1, "D", 128)};
    sale_dtype dt = (sale_dtype)parse_dtype(L, opt_str(L, 1, "dtype", "bf16"));
    int gpu = parse_device(L, S, opt_str(L, 1, "device", "cpu"));
    uint64_t seed = (uint64_t)opt_int(L, 1, "seed", 1);
    double scale = opt_num(L, 1, "scale", 1.0);
    struct { void *ptr; } host;
    size_t n = tensor_bytes(L, dt, shape);
    host.ptr = calloc(1, n);
    if (!host.ptr)
        return tensor_nomem(L, "for", dt, shape, n);
    if (random) {
        size_t cnt = n / dtype_size(dt);
        for (size_t i = 0; i < cnt; i += 2) { /* Box-Muller, two normals per draw */
            double u1 = uniform01(&seed), u2 = uniform01(&seed), r = sqrt(-2.0 * log(u1));
            elem_set(host.ptr, dt, i, (float)(scale * r * cos(2 * M_PI * u2)));
            if (i + 1 < cnt)
                elem_set(host.ptr, dt, i + 1, (float)(scale * r * sin(2 * M_PI * u2)));
        }
    }
    /* the userdata owns the buffer from here, so a Lua error cannot leak it */
    tensor *t = lua_newuserdatauv(L, sizeof *t, 0);
    memset(t, 0, sizeof *t);
    luaL_setmetatable(L, TENSOR_MT);
    *t = (tensor){.ctx = S->ctx, .gpu = 0, .dtype = dt, .bytes = n, .ptr = host.ptr};
    memcpy(t->shape, shape, sizeof shape);
    if (!gpu)
        return 1;
    tensor *d = tensor_new(L, S, 1, dt, shape);
    sale_status st = sale_dev_upload(S->ctx, d->ptr, t->ptr, n);
    if (st)
        return fail(L, S, st, "uploading a tensor");
    return 1;
}

static int l_tensor_random(lua_State *L) { return make_tensor(L, 1); }
static int l_tensor_zeros(lua_State *L) { return make_tensor(L, 0); }

static const char *const generate_opts[] = {"B", "Hq", "Hkv", "N", "D", "dtype", "device", "seed", "structured",
                                            "needles", "rope_base", "sink", "local_bias", "needle_gain", NULL};

/* A strength of the generator (rope_base, sink, local_bias, needle_gain):
 * nil is the default; C reads 0, a negative and NaN as the default too and
 * turns inf into NaN keys, so each must be a positive finite float here. */
static float gen_strength(lua_State *L, const char *k, double def)
{
    double v = opt_num(L, 1, k, def);
    if (!(v > 0 && isfinite((float)v)))
        luaL_error(L, "generate: %s must be a positive finite number (nil: %s), got %s", k, num_text(L, def),
                   num_text(L, v));
    return (float)v;
}

static int l_generate(lua_State *L)
{
    lstate *S = get_state(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    check_opts(L, 1, "sale.generate", generate_opts, 0);
    sale_attention_args a;
    sale_attention_args_init(&a);
    a.batch = opt_int(L, 1, "B", 1);
    a.heads_q = opt_int(L, 1, "Hq", 4);
    a.heads_kv = opt_int(L, 1, "Hkv", 1);
    a.seq_len = opt_int(L, 1, "N", 4096);
    a.head_dim = opt_int(L, 1, "D", 128);
    a.dtype = (sale_dtype)parse_dtype(L, opt_str(L, 1, "dtype", "bf16"));
    int gpu = parse_device(L, S, opt_str(L, 1, "device", "cpu"));
    sale_gen_options g;
    memset(&g, 0, sizeof g);
    g.seed = (uint64_t)opt_int(L, 1, "seed", 1);
    g.structured = opt_bool(L, 1, "structured", 1);
    g.needles = opt_int(L, 1, "needles", 0);
    g.rope_base = gen_strength(L, "rope_base", 500000);
    g.sink = gen_strength(L, "sink", 4);
    g.local_bias = gen_strength(L, "local_bias", 1);
    g.needle_gain = gen_strength(L, "needle_gain", 6);
    if (a.batch <= 0 || a.heads_q <= 0 || a.heads_kv <= 0 || a.seq_len <= 0 || a.head_dim <= 0)
        return luaL_error(L, "generate: B, Hq, Hkv, N, D must be positive");
    if (a.heads_q % a.heads_kv)
        return luaL_error(L, "generate: Hq (%d) must be a multiple of Hkv (%d)", a.heads_q, a.heads_kv);
    if (g.needles < 0)
        return luaL_error(L, "generate: needles must not be negative");
    if ((int64_t)a.batch * a.heads_q * g.needles > INT_MAX)
        return luaL_error(L, "generate: B * Hq * needles (%d * %d * %d) is too large", a.batch, a.heads_q, g.needles);
    /* sale_generate_qkv has no context to say why it refuses: its rules here */
    if (a.head_dim % 2)
        return luaL_error(L, "generate: D must be even, got %d", a.head_dim);
    if (g.structured && a.head_dim < 16)
        return luaL_error(L, "generate: structured inputs need D >= 16, got %d (structured=false gives i.i.d. inputs)",
                          a.head_dim);

    int qs[4] = {a.batch, a.heads_q, a.seq_len, a.head_dim}, ks[4] = {a.batch, a.heads_kv, a.seq_len, a.head_dim};
    tensor *q = tensor_new(L, S, 0, a.dtype, qs);
    tensor *k = tensor_new(L, S, 0, a.dtype, ks);
    tensor *v = tensor_new(L, S, 0, a.dtype, ks);
    int maxn = a.batch * a.heads_q * g.needles, nn = 0;
    sale_needle *nd = lua_newuserdatauv(L, (size_t)(maxn > 0 ? maxn : 1) * sizeof *nd, 0); /* GC-owned scratch */
    sale_status st = sale_generate_qkv(&a, &g, q->ptr, k->ptr, v->ptr, maxn ? nd : NULL, maxn, &nn);
    if (st) /* not fail(): the context's message would be an earlier call's */
        return luaL_error(L, "generate: %s: %s", sale_status_name(st),
                          st == SALE_ERR_NOMEM ? "out of host memory" : "the generator refused these inputs");
    lua_createtable(L, nn, 0);
    for (int i = 0; i < nn; i++) {
        lua_createtable(L, 0, 4);
        lua_pushinteger(L, nd[i].batch);
        lua_setfield(L, -2, "batch");
        lua_pushinteger(L, nd[i].head_q);
        lua_setfield(L, -2, "head");
        lua_pushinteger(L, nd[i].query);
        lua_setfield(L, -2, "query");
        lua_pushinteger(L, nd[i].key);
        lua_setfield(L, -2, "key");
        lua_rawseti(L, -2, i + 1);
    }
    lua_remove(L, -2); /* the scratch: stack is q k v needles */
    if (gpu) {
        tensor *h[3] = {q, k, v};
        for (int i = 0; i < 3; i++) {
            tensor *d = tensor_new(L, S, 1, h[i]->dtype, h[i]->shape);
            if ((st = sale_dev_upload(S->ctx, d->ptr, h[i]->ptr, h[i]->bytes)))
                return fail(L, S, st, "generate: uploading");
        }
        /* q k v needles qg kg vg -> qg kg vg needles */
        lua_rotate(L, -4, 3);
        tensor_release_ud(h[0]);
        tensor_release_ud(h[1]);
        tensor_release_ud(h[2]);
    }
    return 4;
}

/* t as a tau: in [0, 1) as the C float it becomes (NaN refused), checked as
 * a double before the narrowing; name says which in the message */
static double tau_value(lua_State *L, double t, const char *name)
{
    if (!(t >= 0 && t < 1 && (float)t < 1.0f))
        luaL_error(L, "%s: must be in [0, 1), got %s", name, num_text(L, t));
    return t;
}

/* ------------------------------------------------------------ attention */

typedef struct attn_call {
    sale_attention_args a;
    float *tau; /* GC-owned */
    tensor *q, *k, *v;
} attn_call;

static const char *const reference_opts[] = {"q", "k", "v", "tau", "block_q", "block_k", "block_seg",
                                             "local_window", "est_bits", "thr", "mode", "dense_below", "scale",
                                             "model", "layer", NULL};
static const char *const attention_opts[] = {"q", "k", "v", "tau", "block_q", "block_k", "block_seg",
                                             "local_window", "est_bits", "thr", "mode", "dense_below", "scale",
                                             "model", "layer", "out", "stats", "mask", NULL};

static void read_attn_args(lua_State *L, lstate *S, attn_call *c, int want_gpu)
{
    (void)S;
    luaL_checktype(L, 1, LUA_TTABLE);
    check_opts(L, 1, want_gpu ? "sale.attention" : "sale.reference", want_gpu ? attention_opts : reference_opts, 0);
    sale_attention_args *a = &c->a;
    sale_attention_args_init(a);
    const char *names[3] = {"q", "k", "v"};
    tensor *t[3];
    for (int i = 0; i < 3; i++) {
        lua_getfield(L, 1, names[i]);
        if (!luaL_testudata(L, -1, TENSOR_MT))
            luaL_error(L, "%s must be a tensor, got %s", names[i], luaL_typename(L, -1));
        t[i] = check_tensor(L, -1);
        lua_pop(L, 1); /* the argument table keeps it alive */
        if (t[i]->gpu != want_gpu)
            luaL_error(L, "%s is on the %s; %s takes %s tensors (t:to(\"%s\"))", names[i], t[i]->gpu ? "gpu" : "cpu",
                       want_gpu ? "sale.attention" : "sale.reference", want_gpu ? "gpu" : "cpu",
                       want_gpu ? "gpu" : "cpu");
    }
    c->q = t[0];
    c->k = t[1];
    c->v = t[2];
    if (t[1]->dtype != t[0]->dtype || t[2]->dtype != t[0]->dtype)
        luaL_error(L, "q, k, v must share one dtype");
    if (t[0]->shape[0] != t[1]->shape[0] || t[0]->shape[2] != t[1]->shape[2] || t[0]->shape[3] != t[1]->shape[3] ||
        memcmp(t[1]->shape, t[2]->shape, sizeof t[1]->shape))
        luaL_error(L, "shapes do not match: q [%d,%d,%d,%d], k [%d,%d,%d,%d], v [%d,%d,%d,%d]", t[0]->shape[0],
                   t[0]->shape[1], t[0]->shape[2], t[0]->shape[3], t[1]->shape[0], t[1]->shape[1], t[1]->shape[2],
                   t[1]->shape[3], t[2]->shape[0], t[2]->shape[1], t[2]->shape[2], t[2]->shape[3]);
    a->batch = t[0]->shape[0];
    a->heads_q = t[0]->shape[1];
    a->heads_kv = t[1]->shape[1];
    a->seq_len = t[0]->shape[2];
    a->head_dim = t[0]->shape[3];
    a->dtype = t[0]->dtype;
    a->q = t[0]->ptr;
    a->k = t[1]->ptr;
    a->v = t[2]->ptr;
    a->block_q = opt_int(L, 1, "block_q", 0);
    a->block_k = opt_int(L, 1, "block_k", 0);
    a->block_seg = opt_int(L, 1, "block_seg", 0);
    a->local_window = opt_int(L, 1, "local_window", 0);
    a->est_bits = opt_int(L, 1, "est_bits", 0);
    const char *thr = opt_str(L, 1, "thr", NULL);
    if (thr && (a->thr = sale_thr_parse(thr)) < 0)
        luaL_error(L, "thr: unknown threshold variant '%s' (run, fixed)", thr);
    a->dense_below = opt_int(L, 1, "dense_below", 0);
    a->scale = (float)opt_num(L, 1, "scale", 0);
    const char *mode = opt_str(L, 1, "mode", "auto"); /* C's default (sale_attention_args_init) */
    if (!strcmp(mode, "fused"))
        a->mode = SALE_MODE_FUSED;
    else if (!strcmp(mode, "two_pass") || !strcmp(mode, "two-pass"))
        a->mode = SALE_MODE_TWO_PASS;
    else if (!strcmp(mode, "dense"))
        a->mode = SALE_MODE_DENSE;
    else if (!strcmp(mode, "plain"))
        a->mode = SALE_MODE_PLAIN;
    else if (!strcmp(mode, "auto"))
        a->mode = SALE_MODE_AUTO;
    else
        luaL_error(L, "mode: unknown mode '%s' (auto, the default: two_pass on sm_90, fused elsewhere; fused, "
                      "two_pass, dense, plain)",
                   mode);
    /* tau: a number for every head, or a list with one per query head. Only
     * an absent tau means the default (0.004): C reads tau_default 0 as the
     * default, so a scalar <= 1e-5 (a dense head) goes in as a per-head list,
     * as Python does. Checked as a double, before the narrowing to float. */
    int ty = lua_getfield(L, 1, "tau");
    if (ty == LUA_TNUMBER) {
        double t = tau_value(L, lua_tonumber(L, -1), "tau");
        if (t > 1e-5)
            a->tau_default = (float)t;
        else {
            int n = a->heads_q;
            c->tau = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof(float), 0);
            lua_insert(L, -2); /* under the number, alive for the call as below */
            for (int i = 0; i < n; i++)
                c->tau[i] = (float)t;
            a->tau = c->tau;
        }
    } else if (ty == LUA_TTABLE) {
        int n = (int)lua_rawlen(L, -1);
        if (n != a->heads_q)
            luaL_error(L, "tau: %d values for %d query heads", n, a->heads_q);
        /* the buffer stays on the stack under the tau table, alive for this
         * call (callers index their stack absolutely); the caller's table is
         * left as it was */
        c->tau = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof(float), 0);
        lua_insert(L, -2);
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, -1, i + 1);
            if (lua_type(L, -1) != LUA_TNUMBER)
                luaL_error(L, "tau[%d] must be a number, got %s", i + 1, luaL_typename(L, -1));
            char name[32];
            snprintf(name, sizeof name, "tau[%d]", i + 1);
            c->tau[i] = (float)tau_value(L, lua_tonumber(L, -1), name);
            lua_pop(L, 1);
        }
        a->tau = c->tau;
    } else if (ty != LUA_TNIL)
        luaL_error(L, "tau must be a number or a list of per-head numbers, got %s", luaL_typename(L, -1));
    lua_pop(L, 1);
    /* the thresholds stored for (model, layer) (sale calibrate) instead of tau */
    const char *model = opt_str(L, 1, "model", NULL);
    if (model) {
        if (ty != LUA_TNIL)
            luaL_error(L, "model: per-head thresholds come from tau or from (model, layer), not both");
        a->model = model; /* the table holds the string for the call */
        if (lua_getfield(L, 1, "layer") == LUA_TNIL) /* layer 0 is a layer, not a default */
            luaL_error(L, "model: give layer= too (the layer whose stored thresholds to use)");
        lua_pop(L, 1);
        a->layer = opt_int(L, 1, "layer", 0);
        if (a->layer < 0)
            luaL_error(L, "layer: must be >= 0, got %d", a->layer);
    } else if (lua_getfield(L, 1, "layer") != LUA_TNIL) {
        luaL_error(L, "layer: given without model");
    } else {
        lua_pop(L, 1);
    }
}

/* fail() for an attention call: when the library refuses block_seg or
 * local_window and the call did not give it, the value in the message is
 * the default, and the field the caller set is block_k: say so. */
static int attn_fail(lua_State *L, lstate *S, sale_status st, const char *what, const sale_attention_args *a)
{
    const char *m = S->ctx ? sale_last_error(S->ctx) : NULL;
    static const char *const dep[] = {"block_seg", "local_window"};
    for (int i = 0; m && a->block_k && i < 2; i++) {
        size_t l = strlen(dep[i]);
        if (!strncmp(m, dep[i], l) && m[l] == ':' && lua_getfield(L, 1, dep[i]) == LUA_TNIL) {
            lua_pop(L, 1);
            /* the default is the value the message shows */
            const char *v = strrchr(m, ' ');
            return luaL_error(L, "%s: %s: %s (%s was not given: %s is its default, which does not fit block_k %d; give %s "
                                 "or a smaller block_k)",
                              what, sale_status_name(st), m, dep[i], v ? v + 1 : "?", a->block_k, dep[i]);
        }
    }
    return fail(L, S, st, what);
}

static void push_stats(lua_State *L, const sale_stats *s)
{
    lua_createtable(L, 0, 5);
    lua_pushnumber(L, s->density);
    lua_setfield(L, -2, "density");
    lua_pushinteger(L, (lua_Integer)s->kept_blocks);
    lua_setfield(L, -2, "kept");
    lua_pushinteger(L, (lua_Integer)s->causal_blocks);
    lua_setfield(L, -2, "causal");
    lua_pushboolean(L, s->dense_fallback);
    lua_setfield(L, -2, "dense_fallback");
}

/* sale.reference{...} -> out, stats, mask (host tensors) */
static int l_reference(lua_State *L)
{
    lstate *S = get_state(L);
    attn_call c = {0};
    read_attn_args(L, S, &c, 0);
    sale_attention_args *a = &c.a;
    tensor *out = tensor_new(L, S, 0, a->dtype, c.q->shape); /* 2 */
    int out_idx = lua_gettop(L);
    a->out = out->ptr;
    mask *m = mask_new(L, a->batch, a->heads_q, sale_num_qblocks(a), sale_num_kblocks(a), a->block_q ? a->block_q : 64,
                       a->block_k ? a->block_k : 32);
    int mask_idx = lua_gettop(L);
    a->mask = m->bits;
    sale_stats st;
    memset(&st, 0, sizeof st);
    a->stats = &st;
    sale_status s = sale_reference_attention(S->ctx, a);
    if (s)
        return attn_fail(L, S, s, "reference", a);
    lua_pushvalue(L, out_idx);
    push_stats(L, &st);
    lua_pushvalue(L, mask_idx);
    return 3;
}

/* sale.attention{...} -> out, stats|nil, mask|nil (GPU tensors) */
static int l_attention(lua_State *L)
{
    lstate *S = get_state(L);
    attn_call c = {0};
    luaL_checktype(L, 1, LUA_TTABLE);
    int want_stats = opt_bool(L, 1, "stats", 1), want_mask = opt_bool(L, 1, "mask", 0);
    read_attn_args(L, S, &c, 1);
    sale_attention_args *a = &c.a;
    int out_idx;
    if (lua_getfield(L, 1, "out") != LUA_TNIL) {
        tensor *o = check_tensor(L, -1);
        if (!o->gpu || o->dtype != a->dtype || memcmp(o->shape, c.q->shape, sizeof o->shape))
            return luaL_error(L, "out must be a gpu tensor of q's shape and dtype");
        a->out = o->ptr;
    } else {
        lua_pop(L, 1);
        a->out = tensor_new(L, S, 1, a->dtype, c.q->shape)->ptr;
    }
    out_idx = lua_gettop(L);
    sale_stats st;
    memset(&st, 0, sizeof st);
    if (want_stats)
        a->stats = &st;
    mask *m = NULL;
    tensor *dmask = NULL;
    int mask_idx = 0;
    if (want_mask) {
        m = mask_new(L, a->batch, a->heads_q, sale_num_qblocks(a), sale_num_kblocks(a), a->block_q ? a->block_q : 64,
                     a->block_k ? a->block_k : 32);
        mask_idx = lua_gettop(L);
        size_t bytes = mask_words(m) * sizeof(uint32_t);
        int words_shape[4] = {1, 1, 1, (int)((bytes + 3) / 4)};
        dmask = tensor_new(L, S, 1, SALE_DTYPE_F32, words_shape); /* stays on the stack while in use */
        a->mask = dmask->ptr;
    }
    sale_status s = sale_attention(S->ctx, a, NULL);
    if (s)
        return attn_fail(L, S, s, "attention", a);
    if (m) {
        s = sale_dev_download(S->ctx, m->bits, dmask->ptr, mask_words(m) * sizeof(uint32_t));
        if (s)
            return fail(L, S, s, "attention: downloading the mask");
    }
    lua_pushvalue(L, out_idx);
    if (want_stats)
        push_stats(L, &st);
    else
        lua_pushnil(L);
    if (m)
        lua_pushvalue(L, mask_idx);
    else
        lua_pushnil(L);
    return 3;
}

/* ------------------------------------------------------------- metrics */

static int l_rel_l1(lua_State *L)
{
    lstate *S = get_state(L);
    tensor *x = check_tensor(L, 1), *y = check_tensor(L, 2);
    if (memcmp(x->shape, y->shape, sizeof x->shape))
        return luaL_error(L, "rel_l1: shapes differ");
    int ox, oy;
    const void *hx = host_view(L, S, x, &ox);
    const void *hy = host_view(L, S, y, &oy);
    size_t n = x->bytes / dtype_size(x->dtype);
    double num = 0, den = 0;
    int finite = 1;
    for (size_t i = 0; i < n && finite; i++) {
        double a = elem_get(hx, x->dtype, i), b = elem_get(hy, y->dtype, i);
        finite = isfinite(a) && isfinite(b);
        num += fabs(a - b);
        den += fabs(b);
    }
    if (ox)
        free((void *)hx);
    if (oy)
        free((void *)hy);
    /* a NaN or an infinity on either side is no score at all, never 0 */
    lua_pushnumber(L, !finite ? (double)NAN : den > 0 ? num / den : (num > 0 ? HUGE_VAL : 0.0));
    return 1;
}

/* sale.needle_recall(mask, needles[, block_q, block_k]) -> recall, hit, total */
static int l_needle_recall(lua_State *L)
{
    mask *m = luaL_checkudata(L, 1, MASK_MT);
    luaL_checktype(L, 2, LUA_TTABLE);
    int bq = opt_int_arg(L, 3, m->block_q), bk = opt_int_arg(L, 4, m->block_k);
    if (bq <= 0 || bk <= 0)
        return luaL_error(L, "needle_recall: block sizes must be positive");
    static const char *const needle_opts[] = {"batch", "head", "query", "key", NULL};
    /* the range of each field: batch, head, query, key */
    const int64_t lim[4] = {m->B, m->H, (int64_t)m->nqb * bq, (int64_t)m->nkb * bk};
    int n = (int)lua_rawlen(L, 2), hit = 0;
    for (int i = 1; i <= n; i++) {
        char where[64];
        snprintf(where, sizeof where, "sale.needle_recall: needle %d", i);
        if (lua_rawgeti(L, 2, i) != LUA_TTABLE)
            return luaL_error(L, "%s must be a table {batch=, head=, query=, key=}, got %s", where,
                              luaL_typename(L, -1));
        check_opts(L, -1, where, needle_opts, 0);
        int v[4];
        for (int f = 0; f < 4; f++) {
            int ty = lua_getfield(L, -1, needle_opts[f]);
            if (ty == LUA_TNIL)
                return luaL_error(L, "%s: %s is missing (a needle is {batch=, head=, query=, key=})", where,
                                  needle_opts[f]);
            int isint = 0;
            lua_Integer x = ty == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
            if (!isint)
                return luaL_error(L, "%s: %s must be an integer, got %s", where, needle_opts[f],
                                  ty == LUA_TNUMBER ? num_text(L, lua_tonumber(L, -1)) : luaL_typename(L, -1));
            if (x < 0 || x >= lim[f])
                return luaL_error(L, "%s: %s is %I, must be in [0, %I)", where, needle_opts[f], x,
                                  (lua_Integer)lim[f]);
            v[f] = (int)x;
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        int r = mask_bit(m, v[0], v[1], v[2] / bq, v[3] / bk);
        if (r < 0)
            return luaL_error(L, "%s (batch %d, head %d, query %d, key %d) lies outside the mask", where, v[0], v[1],
                              v[2], v[3]);
        hit += r;
    }
    lua_pushnumber(L, n ? (double)hit / n : 1.0);
    lua_pushinteger(L, hit);
    lua_pushinteger(L, n);
    return 3;
}

/* ---------------------------------------------------------------- time */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int l_clock(lua_State *L)
{
    lua_pushnumber(L, now_s());
    return 1;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

typedef struct evpair {
    sale_ctx *ctx;
    sale_event *e0, *e1;
} evpair;

static int evpair_gc(lua_State *L)
{
    evpair *p = lua_touserdata(L, 1);
    if (p->e0)
        sale_event_destroy(p->ctx, p->e0);
    if (p->e1)
        sale_event_destroy(p->ctx, p->e1);
    p->e0 = p->e1 = NULL;
    return 0;
}

/* sale.time(fn, {warmup=3, reps=10, host=false}) -> median ms, min ms
 * (warmup in [0, 100000], reps in [1, 100000]).
 * With a GPU: CUDA events on the default stream around each call of fn (which
 * queues work with sale.attention); without one (or host=true): the host clock. */
static int l_time(lua_State *L)
{
    lstate *S = get_state(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int warmup = 3, reps = 10, host = 0;
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_istable(L, 2)) {
        static const char *const time_opts[] = {"warmup", "reps", "host", NULL};
        check_opts(L, 2, "sale.time", time_opts, 0);
        warmup = opt_int(L, 2, "warmup", warmup);
        reps = opt_int(L, 2, "reps", reps);
        host = opt_bool(L, 2, "host", 0);
    }
    /* both bounded, so warmup + reps cannot overflow */
    if (warmup < 0 || warmup > 100000)
        return luaL_error(L, "sale.time: warmup must be in [0, 100000], got %d", warmup);
    if (reps < 1 || reps > 100000)
        return luaL_error(L, "sale.time: reps must be in [1, 100000], got %d", reps);
    int gpu = !host && has_gpu(S);
    float *ms = lua_newuserdatauv(L, (size_t)reps * sizeof(float), 0);
    evpair *ev = NULL;
    if (gpu) {
        ev = lua_newuserdatauv(L, sizeof *ev, 0);
        *ev = (evpair){S->ctx, NULL, NULL};
        lua_newtable(L);
        lua_pushcfunction(L, evpair_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        sale_status st = sale_event_create(S->ctx, &ev->e0);
        if (!st)
            st = sale_event_create(S->ctx, &ev->e1);
        if (st)
            return fail(L, S, st, "time: creating events");
    }
    for (int i = 0; i < warmup + reps; i++) {
        double t0 = 0;
        sale_status st = SALE_OK;
        if (gpu) {
            if ((st = sale_dev_sync(S->ctx)) || (st = sale_event_record(S->ctx, ev->e0, NULL)))
                return fail(L, S, st, "time");
        } else
            t0 = now_s();
        lua_pushvalue(L, 1);
        lua_call(L, 0, 0);
        float t;
        if (gpu) {
            if ((st = sale_event_record(S->ctx, ev->e1, NULL)) || (st = sale_event_elapsed(S->ctx, ev->e0, ev->e1, &t)))
                return fail(L, S, st, "time");
        } else
            t = (float)((now_s() - t0) * 1e3);
        if (i >= warmup)
            ms[i - warmup] = t;
    }
    qsort(ms, (size_t)reps, sizeof *ms, cmp_float);
    double med = reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]);
    lua_pushnumber(L, med);
    lua_pushnumber(L, ms[0]);
    return 2;
}

/* --------------------------------------------------------------- tables */

typedef struct col {
    const char *key, *title, *fmt;
    size_t key_len, title_len;
} col;

/* Keeps the string at the top of the stack alive for the call: it goes into
 * the anchor table at `anchor` (popped), and its pointer is returned. A column
 * named by a number is converted into a string that nothing else holds, and a
 * columns table may be changed while the rows are read (a __tostring), so
 * every string a column points to is held here. */
static const char *anchor_top(lua_State *L, int anchor, size_t *len)
{
    const char *s = lua_tolstring(L, -1, len);
    lua_rawseti(L, anchor, (lua_Integer)lua_rawlen(L, anchor) + 1);
    return s;
}

/* The string field k of the column table at the top, anchored; NULL if nil. */
static const char *col_str(lua_State *L, int anchor, const char *k, const char *where, size_t *len)
{
    int ty = lua_getfield(L, -1, k);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        *len = 0;
        return NULL;
    }
    if (ty != LUA_TSTRING)
        luaL_error(L, "%s: %s must be a string, got %s", where, k, luaL_typename(L, -1));
    return anchor_top(L, anchor, len);
}

/* fn names the caller in messages; anchor: a table on the stack that holds
 * the columns' strings until the caller returns */
static int read_cols(lua_State *L, int idx, int anchor, col *cols, int max, const char *fn)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    int n = (int)lua_rawlen(L, idx);
    if (n > max)
        luaL_error(L, "%s: at most %d columns, got %d", fn, max, n);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        col *c = &cols[i];
        c->fmt = NULL;
        if (lua_type(L, -1) == LUA_TSTRING) {
            lua_pushvalue(L, -1);
            c->key = c->title = anchor_top(L, anchor, &c->key_len);
            c->title_len = c->key_len;
        } else if (lua_istable(L, -1)) {
            static const char *const col_opts[] = {"fmt", "title", NULL};
            char where[64];
            snprintf(where, sizeof where, "%s: column %d", fn, i + 1);
            check_opts(L, -1, where, col_opts, 1);
            int ty = lua_rawgeti(L, -1, 1);
            if (ty != LUA_TSTRING && ty != LUA_TNUMBER)
                luaL_error(L, "%s: the name ([1]) must be a string or a number, got %s", where, luaL_typename(L, -1));
            lua_pushvalue(L, -1); /* a number is converted in this copy, which the anchor keeps */
            lua_tostring(L, -1);
            c->key = anchor_top(L, anchor, &c->key_len);
            lua_pop(L, 1);
            c->title = col_str(L, anchor, "title", where, &c->title_len);
            size_t fl;
            c->fmt = col_str(L, anchor, "fmt", where, &fl);
            if (c->fmt && strlen(c->fmt) != fl)
                luaL_error(L, "%s: fmt holds a NUL byte", where);
            if (!c->title) {
                c->title = c->key;
                c->title_len = c->key_len;
            }
        } else
            luaL_error(L, "%s: column %d must be a name or {name, fmt=, title=}, got %s", fn, i + 1,
                       luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    return n;
}

/* Pushes x formatted by fmt (one numeric conversion, check_fmt), of any length. */
static void push_number(lua_State *L, const char *fmt, double x)
{
    int n = snprintf(NULL, 0, fmt, x);
    if (n < 0)
        luaL_error(L, "cannot format %f with \"%s\"", x, fmt);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, (size_t)n + 1);
    snprintf(p, (size_t)n + 1, fmt, x);
    luaL_pushresultsize(&b, (size_t)n);
}

/* Pushes row[c] (the row at index row); the name may hold any byte. */
static int get_cell(lua_State *L, int row, const col *c)
{
    lua_pushlstring(L, c->key, c->key_len);
    return lua_gettable(L, row);
}

/* Pushes the text of row[col], of any length and any bytes. Numbers: fmt,
 * else integers as integers and others with %.4g. Returns whether it is a
 * number. */
static int cell_text(lua_State *L, int row, const col *c)
{
    int ty = get_cell(L, row, c);
    int num = ty == LUA_TNUMBER;
    if (num) {
        double x = lua_tonumber(L, -1);
        if (c->fmt)
            push_number(L, c->fmt, x);
        else if (lua_isinteger(L, -1))
            lua_pushfstring(L, "%I", lua_tointeger(L, -1));
        else
            push_number(L, "%.4g", x);
    } else if (ty == LUA_TNIL) {
        lua_pushliteral(L, "");
    } else if (ty == LUA_TBOOLEAN) {
        lua_pushstring(L, lua_toboolean(L, -1) ? "yes" : "no");
    } else {
        luaL_tolstring(L, -1, NULL);
    }
    lua_remove(L, -2);
    return num;
}

/* Formats with a user fmt must be one numeric conversion. */
static void check_fmt(lua_State *L, const col *c)
{
    if (!c->fmt)
        return;
    const char *p = strchr(c->fmt, '%');
    if (!p || strchr(p + 1, '%') || !p[strspn(p + 1, "-+ #0123456789.") + 1] ||
        !strchr("eEfFgG", p[strspn(p + 1, "-+ #0123456789.") + 1]))
        luaL_error(L, "column %s: fmt must hold one %%f, %%e or %%g conversion, got \"%s\"", c->title, c->fmt);
}

#define MAX_COLS 64

/* Adds n blanks to the buffer. */
static void add_blanks(luaL_Buffer *b, size_t n)
{
    while (n--)
        luaL_addchar(b, ' ');
}

/* Adds one cell of width w, right-aligned when num; the last cell of a line
 * has no trailing blanks (they are noise), its separator included. */
static void add_cell(luaL_Buffer *b, int first, int last, int num, size_t w, const char *v, size_t l)
{
    size_t pad = l < w ? w - l : 0;
    if (last) {
        while (l && v[l - 1] == ' ')
            l--;
        if (!l)
            return; /* blanks all the way back to the separator */
    }
    if (!first)
        luaL_addstring(b, "  ");
    if (num)
        add_blanks(b, pad);
    luaL_addlstring(b, v, l);
    if (!num && !last)
        add_blanks(b, pad);
}

/* Pushes the text of the table (rows at 1, columns at 2); fn names the caller. */
static int format_table(lua_State *L, const char *fn)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    col cols[MAX_COLS];
    lua_newtable(L); /* the columns' strings */
    int nc = read_cols(L, 2, lua_gettop(L), cols, MAX_COLS, fn);
    for (int c = 0; c < nc; c++)
        check_fmt(L, &cols[c]);
    int nr = (int)lua_rawlen(L, 1);
    /* cells as strings in a Lua table: cells[r*nc+c] */
    lua_createtable(L, nr * nc, 0);
    int cells = lua_gettop(L);
    size_t width[MAX_COLS];
    int isnum[MAX_COLS];
    for (int c = 0; c < nc; c++) {
        width[c] = cols[c].title_len;
        isnum[c] = 1;
    }
    for (int r = 0; r < nr; r++) {
        lua_rawgeti(L, 1, r + 1);
        if (!lua_istable(L, -1))
            return luaL_error(L, "%s: row %d is not a table", fn, r + 1);
        int row = lua_gettop(L);
        for (int c = 0; c < nc; c++) {
            int num = cell_text(L, row, &cols[c]);
            size_t l = lua_rawlen(L, -1);
            if (!num && l)
                isnum[c] = 0;
            if (l > width[c])
                width[c] = l;
            lua_rawseti(L, cells, (lua_Integer)r * nc + c + 1);
        }
        lua_pop(L, 1);
    }
    luaL_Buffer out;
    luaL_buffinit(L, &out);
    /* the header keeps its padding, as it always has: no cell of it is a last one */
    for (int c = 0; c < nc; c++)
        add_cell(&out, c == 0, 0, isnum[c], width[c], cols[c].title, cols[c].title_len);
    luaL_addchar(&out, '\n');
    for (int c = 0; c < nc; c++) {
        if (c)
            luaL_addstring(&out, "  ");
        for (size_t i = 0; i < width[c]; i++)
            luaL_addchar(&out, '-');
    }
    luaL_addchar(&out, '\n');
    for (int r = 0; r < nr; r++) {
        for (int c = 0; c < nc; c++) {
            lua_rawgeti(L, cells, (lua_Integer)r * nc + c + 1);
            size_t l;
            const char *v = lua_tolstring(L, -1, &l);
            lua_pop(L, 1); /* the cells table holds it */
            add_cell(&out, c == 0, c == nc - 1, isnum[c], width[c], v, l);
        }
        luaL_addchar(&out, '\n');
    }
    luaL_pushresult(&out);
    return 1;
}

static int l_format_table(lua_State *L) { return format_table(L, "sale.format_table"); }

static int l_table(lua_State *L)
{
    lua_settop(L, 2);
    format_table(L, "sale.table"); /* called, not lua_call'ed: its errors name the script's line */
    size_t l;
    const char *s = lua_tolstring(L, -1, &l);
    /* printed on behalf of the script, like its own print() */
    fwrite(s, 1, l, stdout);
    fflush(stdout);
    return 0;
}

/* One CSV field (RFC 4180): quoted when it holds a comma, a quote, a line
 * break or a NUL, quotes doubled; every byte is written. */
static void csv_field(FILE *f, const char *s, size_t l)
{
    static const char special[] = ",\"\n\r";
    int quote = 0;
    for (size_t i = 0; i < l && !quote; i++)
        quote = !s[i] || strchr(special, s[i]);
    if (!quote) {
        fwrite(s, 1, l, f);
        return;
    }
    fputc('"', f);
    for (size_t i = 0; i < l; i++) {
        if (s[i] == '"')
            fputc('"', f);
        fputc(s[i], f);
    }
    fputc('"', f);
}

typedef struct csv_file {
    FILE *f;
} csv_file;

static int csv_file_gc(lua_State *L)
{
    csv_file *c = lua_touserdata(L, 1);
    if (c->f)
        fclose(c->f);
    c->f = NULL;
    return 0;
}

/* sale.csv(path, rows, columns): numbers at full precision unless fmt is given. */
static int l_csv(lua_State *L)
{
    const char *path = check_name_arg(L, 1, "sale.csv: path");
    luaL_checktype(L, 2, LUA_TTABLE);
    col cols[MAX_COLS];
    lua_newtable(L); /* the columns' strings */
    int nc = read_cols(L, 3, lua_gettop(L), cols, MAX_COLS, "sale.csv");
    for (int c = 0; c < nc; c++)
        check_fmt(L, &cols[c]);
    int nr = (int)lua_rawlen(L, 2);
    /* the file is owned by a userdata so that an error on the way closes it */
    csv_file *cf = lua_newuserdatauv(L, sizeof *cf, 0);
    cf->f = NULL;
    lua_newtable(L);
    lua_pushcfunction(L, csv_file_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    if (!(cf->f = fopen(path, "w")))
        return luaL_error(L, "csv: cannot write %s", path);
    FILE *f = cf->f;
    for (int c = 0; c < nc; c++) {
        if (c)
            fputc(',', f);
        csv_field(f, cols[c].title, cols[c].title_len);
    }
    fputc('\n', f);
    for (int r = 0; r < nr; r++) {
        lua_rawgeti(L, 2, r + 1);
        if (!lua_istable(L, -1))
            return luaL_error(L, "sale.csv: row %d is not a table", r + 1);
        int row = lua_gettop(L);
        for (int c = 0; c < nc; c++) {
            if (c)
                fputc(',', f);
            int ty = get_cell(L, row, &cols[c]);
            if (ty == LUA_TNUMBER && lua_isinteger(L, -1))
                lua_pushfstring(L, "%I", lua_tointeger(L, -1));
            else if (ty == LUA_TNUMBER)
                push_number(L, cols[c].fmt ? cols[c].fmt : "%.15g", lua_tonumber(L, -1));
            else if (ty == LUA_TBOOLEAN)
                lua_pushstring(L, lua_toboolean(L, -1) ? "true" : "false");
            else if (ty == LUA_TSTRING)
                lua_pushvalue(L, -1);
            else
                lua_pushliteral(L, "");
            size_t l;
            const char *s = lua_tolstring(L, -1, &l);
            csv_field(f, s, l);
            lua_pop(L, 2);
        }
        fputc('\n', f);
        lua_pop(L, 1);
    }
    cf->f = NULL;
    int bad = ferror(f);
    if (fclose(f) || bad)
        return luaL_error(L, "csv: write error on %s", path);
    return 0;
}

/* sale.thresholds(model, layer) -> {tau_head0, ...}, {{budget=, budget_abs=,
 * samples=, created=, density=, error=, thr=}, ...} (thr: "run", "fixed", or
 * nil when the variant was not recorded); or nil, reason when head 0 has
 * none (cache file, fleet file, then the config). */
static int l_thresholds(lua_State *L)
{
    lstate *S = get_state(L);
    const char *model = check_name_arg(L, 1, "sale.thresholds: model");
    int layer = check_int(L, 2);
    lua_newtable(L);
    int taus = lua_gettop(L);
    lua_newtable(L);
    int metas = taus + 1;
    int h = 0;
    for (;; h++) {
        /* heads are 0..n-1: read one more head each time until one is missing */
        float tau[1];
        sale_threshold_meta m[1];
        float *all = malloc((size_t)(h + 1) * sizeof(float));
        sale_threshold_meta *mall = malloc((size_t)(h + 1) * sizeof *mall);
        if (!all || !mall) {
            free(all), free(mall);
            return luaL_error(L, "thresholds: out of memory");
        }
        sale_status st = sale_thresholds_get(S->ctx, model, layer, all, h + 1, mall);
        if (st == SALE_OK) /* (all and mall hold nothing on a failure) */
            tau[0] = all[h], m[0] = mall[h];
        free(all), free(mall);
        if (st == SALE_ERR_NOT_FOUND)
            break;
        if (st)
            return fail(L, S, st, "thresholds");
        lua_pushnumber(L, tau[0]);
        lua_rawseti(L, taus, h + 1);
        lua_createtable(L, 0, 7);
        lua_pushnumber(L, m[0].budget), lua_setfield(L, -2, "budget");
        lua_pushboolean(L, m[0].budget_abs), lua_setfield(L, -2, "budget_abs");
        lua_pushinteger(L, m[0].samples), lua_setfield(L, -2, "samples");
        lua_pushinteger(L, (lua_Integer)m[0].created), lua_setfield(L, -2, "created");
        lua_pushnumber(L, m[0].density), lua_setfield(L, -2, "density");
        lua_pushnumber(L, m[0].error), lua_setfield(L, -2, "error");
        if (m[0].thr && sale_thr_name(m[0].thr))
            lua_pushstring(L, sale_thr_name(m[0].thr)), lua_setfield(L, -2, "thr");
        lua_rawseti(L, metas, h + 1);
    }
    if (h == 0) {
        lua_pushnil(L);
        lua_pushstring(L, sale_last_error(S->ctx));
        return 2;
    }
    return 2;
}

/* -------------------------------------------------------------- module */

static const luaL_Reg tensor_methods[] = {
    {"to", tensor_to}, {"get", tensor_get}, {"free", tensor_release}, {NULL, NULL}};

static const luaL_Reg sale_funcs[] = {
    {"key", l_key},
    {"key_format", l_key_format},
    {"compile", l_compile},
    {"get_kernel", l_get_kernel},
    {"has_gpu", l_has_gpu},
    {"device", l_device},
    {"tensor_random", l_tensor_random},
    {"tensor_zeros", l_tensor_zeros},
    {"generate", l_generate},
    {"reference", l_reference},
    {"attention", l_attention},
    {"rel_l1", l_rel_l1},
    {"needle_recall", l_needle_recall},
    {"time", l_time},
    {"clock", l_clock},
    {"format_table", l_format_table},
    {"table", l_table},
    {"csv", l_csv},
    {"thresholds", l_thresholds},
    {NULL, NULL},
};

/* Builds the module table (with the state as upvalue of every function) and
 * the metatables; leaves the module on the stack. */
static void open_sale(lua_State *L, sale_ctx *ctx)
{
    lstate *S = lua_newuserdatauv(L, sizeof *S, 0);
    *S = (lstate){.ctx = ctx};
    int st = lua_gettop(L);

    luaL_newmetatable(L, TENSOR_MT);
    lua_pushvalue(L, st);
    luaL_setfuncs(L, tensor_methods, 1);
    lua_pushcfunction(L, tensor_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, tensor_release);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, tensor_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    luaL_newmetatable(L, KEY_MT);
    lua_pushcfunction(L, key_index);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    luaL_newmetatable(L, MASK_MT);
    lua_pushcfunction(L, mask_kept);
    lua_setfield(L, -2, "kept");
    lua_pushcfunction(L, mask_count);
    lua_setfield(L, -2, "count");
    lua_pushcfunction(L, mask_group_overlap);
    lua_setfield(L, -2, "group_overlap");
    lua_pushcfunction(L, mask_index);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_newtable(L);
    lua_pushvalue(L, st);
    luaL_setfuncs(L, sale_funcs, 1);
    lua_pushstring(L, SALE_VERSION_STRING);
    lua_setfield(L, -2, "version");
    lua_remove(L, st);
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

typedef struct script_job {
    sale_ctx *ctx;
    const char *path;
    int argc;
    char **argv;
} script_job;

/* Runs under lua_pcall so that no Lua error (memory included) escapes. */
static int script_main(lua_State *L)
{
    script_job *job = lua_touserdata(L, 1);
    lua_settop(L, 0);
    luaL_openlibs(L);
    open_sale(L, job->ctx);
    lua_pushvalue(L, -1);
    lua_setglobal(L, "sale");
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "sale"); /* require("sale") works too */
    lua_settop(L, 0);

    /* arg as the standalone interpreter sets it: arg[0] the script */
    lua_createtable(L, job->argc, 1);
    lua_pushstring(L, job->path);
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < job->argc; i++) {
        lua_pushstring(L, job->argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");

    lua_pushcfunction(L, traceback);
    int msgh = lua_gettop(L);
    if (luaL_loadfilex(L, job->path, "t") != LUA_OK)
        return lua_error(L);
    for (int i = 0; i < job->argc; i++)
        lua_pushstring(L, job->argv[i]);
    if (lua_pcall(L, job->argc, 0, msgh) != LUA_OK)
        return lua_error(L);
    return 0;
}

sale_status lsale_run_script(sale_ctx *ctx, const char *path, int argc, char **argv, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = 0;
    if (!path) {
        snprintf(err, errlen, "run: no script");
        return SALE_ERR_INVALID;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return SALE_ERR_IO;
    }
    fclose(f);
    lua_State *L = luaL_newstate();
    if (!L) {
        snprintf(err, errlen, "run: cannot create a Lua state");
        return SALE_ERR_NOMEM;
    }
    /* argv may start with the script itself, as main's argv does */
    if (argc > 0 && argv && argv[0] && !strcmp(argv[0], path)) {
        argc--;
        argv++;
    }
    script_job job = {ctx, path, argc < 0 ? 0 : argc, argv};
    sale_status st = SALE_OK;
    lua_pushcfunction(L, script_main);
    lua_pushlightuserdata(L, &job);
    int rc = lua_pcall(L, 1, 0, 0);
    fflush(stdout);
    if (rc != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        snprintf(err, errlen, "%s", m ? m : "(error object is not a string)");
        st = SALE_ERR_LUA;
    }
    lua_close(L); /* runs __gc: host and device buffers are released here */
    return st;
}
