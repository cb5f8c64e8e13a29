/* lsale_config.c — the configuration file (sale.lua) read in a sandboxed Lua
 * state and validated into a sale_config, with errors that name the file, the
 * line and the field ("sale.lua:12: fleet.block_k[2] must be 16, 32 or 64, got 24").
 *
 * Format: the file sets globals (cache, defaults, arch, fleet, tuning,
 * thresholds; see examples/fleet.lua). Any other global is an error (typo
 * protection): helpers must be `local`. Sandbox: a fresh lua_State with the
 * base functions (no dofile, loadfile, print, collectgarbage; load takes text
 * only), string (no dump), table, math, utf8, coroutine, and os.getenv /
 * os.time / os.clock / os.date only; no io, require, package or debug. Each
 * refused name raises "<name> is not available in the config sandbox". Runs
 * are bounded by an instruction count, a wall clock and a memory cap; the
 * wall clock also covers C calls (see "Limits" below).
 *
 * Lines: globals are assigned through a proxy environment whose __newindex
 * records the line of the assignment; nested fields are located by scanning
 * the source text from the line where their global's assignment starts.
 * arch_defaults hold the defaults already overlaid with the arch's fields. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "config.h"

#define SBX_MEM_LIMIT (64u << 20)
#define SBX_INSTR_LIMIT 20000000LL
#define SBX_HOOK_EVERY 1000
#define SBX_WALL_LIMIT_S 5

/* #pragma weak: config loading must not drag the whole key module into
 * builds that lack it; where it is linked, every fleet combination is
 * checked by the library's own rules too. */
#pragma weak sale_key_validate

/* ------------------------------------------------------------ defaults */

void cfg_defaults_init(sale_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->defaults = (cfg_defaults){.block_q = 64, .block_k = 32, .block_seg = 128, .local_window = 128,
                                   .est_bits = 0, .dense_below = 1024, .tau = 0.004f};
    cfg_fleet *f = &cfg->fleet;
    const int archs[] = {80, 86, 89, 90};
    for (int i = 0; i < 4; i++)
        f->archs[f->n_archs++] = archs[i];
    f->head_dims[f->n_head_dims++] = 64;
    f->head_dims[f->n_head_dims++] = 128;
    /* every family a fleet runs; plain (version 0: for reading and checking,
     * slow) is compiled on first use, or by naming it in fleet.families */
    for (int i = 0; i <= SALE_FAMILY_DENSE; i++)
        f->families[f->n_families++] = (sale_family)i;
    f->dtypes[f->n_dtypes++] = SALE_DTYPE_BF16;
    f->dtypes[f->n_dtypes++] = SALE_DTYPE_F16;
    f->block_qs[f->n_block_qs++] = 64;
    f->block_ks[f->n_block_ks++] = 32;
    f->block_segs[f->n_block_segs++] = 128;
    f->local_windows[f->n_local_windows++] = 128;
    /* both variants: fixed is a call's default on Hopper (its select is the
     * wgmma estimation; README "Hopper"), run elsewhere, and a fleet file made
     * with the defaults must serve either without a compile on the GPU host */
    f->thrs[f->n_thrs++] = SALE_THR_RUN;
    f->thrs[f->n_thrs++] = SALE_THR_FIXED;
    cfg_tuning *t = &cfg->tuning;
    t->warps[t->n_warps++] = 4;
    t->warps[t->n_warps++] = 8;
    for (int s = 1; s <= 3; s++)
        t->stages[t->n_stages++] = s;
    t->budget_s = 0;
    snprintf(t->strategy, sizeof t->strategy, "exhaustive");
}

void cfg_free(sale_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->thresholds);
    cfg->thresholds = NULL;
    cfg->n_thresholds = 0;
}

/* ---------------------------------------------------------------- find */

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Why p is no config file: stat's reason, or what it is instead (errno is
 * stale once stat succeeded). */
static const char *not_file_why(const char *p)
{
    struct stat st;
    if (stat(p, &st) != 0)
        return strerror(errno);
    return S_ISDIR(st.st_mode) ? "a directory, not a file" : "not a regular file";
}

int cfg_find(const char *explicit_path, char *out, size_t outlen, char *err, size_t errlen)
{
    char buf[1024];
    const char *env;
    if (err && errlen)
        err[0] = 0;
    if (explicit_path && explicit_path[0]) {
        if (!file_exists(explicit_path)) {
            snprintf(err, errlen, "config file %s: %s", explicit_path, not_file_why(explicit_path));
            return -1;
        }
        snprintf(out, outlen, "%s", explicit_path);
        return 1;
    }
    /* $SALE_CONFIG is as explicit as a flag: naming a missing file is an error. */
    if ((env = getenv("SALE_CONFIG")) && env[0]) {
        if (!file_exists(env)) {
            snprintf(err, errlen, "$SALE_CONFIG=%s: %s", env, not_file_why(env));
            return -1;
        }
        snprintf(out, outlen, "%s", env);
        return 1;
    }
    if ((env = getenv("XDG_CONFIG_HOME")) && env[0])
        snprintf(buf, sizeof buf, "%s/sale/sale.lua", env);
    else if ((env = getenv("HOME")) && env[0])
        snprintf(buf, sizeof buf, "%s/.config/sale/sale.lua", env);
    else
        return 0;
    if (!file_exists(buf))
        return 0;
    snprintf(out, outlen, "%s", buf);
    return 1;
}

/* ------------------------------------------------------------- sandbox */

/* Limits. A hook cannot interrupt a C function, so the wall clock is
 * checked wherever control passes through the sandbox: every SBX_HOOK_EVERY
 * instructions, on every call (a C function calling C functions through
 * metamethods, e.g. table.concat with __index = table.concat, passes here),
 * and on every allocation that grows. What is left are the standard
 * library's loops that neither allocate nor call: those are bounded before
 * they start (sbx_rep, sbx_tabfn), and finalizers, which Lua runs with hooks
 * off, are refused (sbx_setmetatable). No watchdog thread: it could only set
 * a flag that these same places would have to poll. */
typedef struct sbx {
    size_t used, limit;
    long long instr;
    struct timespec deadline; /* armed: wall clock checked from here on */
    int armed;
    int mem_hit, time_hit, wall_hit;
    int wall_line; /* line the wall clock stopped, 0 if not known */
    int last_line; /* the line the hook last saw running (an allocation that fails cannot ask) */
} sbx;

/* 1 once the armed deadline has passed (and from then on). */
static int sbx_past_deadline(sbx *s)
{
    if (s->wall_hit)
        return 1;
    if (!s->armed)
        return 0;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
    if (t.tv_sec < s->deadline.tv_sec || (t.tv_sec == s->deadline.tv_sec && t.tv_nsec < s->deadline.tv_nsec))
        return 0;
    s->wall_hit = s->time_hit = 1;
    return 1;
}

static void *sbx_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    sbx *s = ud;
    if (!ptr)
        osize = 0;
    if (nsize == 0) {
        free(ptr);
        s->used -= osize;
        return NULL;
    }
    if (nsize > osize && s->used + (nsize - osize) > s->limit) {
        s->mem_hit = 1;
        return NULL;
    }
    if (nsize > osize && sbx_past_deadline(s))
        return NULL; /* Lua raises "not enough memory"; the flags say why */
    void *p = realloc(ptr, nsize);
    if (!p)
        return NULL;
    s->used = s->used - osize + nsize;
    return p;
}

/* Position prefix of the innermost Lua function ("sale.lua:7: "). */
static void lua_pos(lua_State *L, luaL_Buffer *b)
{
    lua_Debug ar;
    for (int lvl = 0; lua_getstack(L, lvl, &ar); lvl++) {
        lua_getinfo(L, "Sl", &ar);
        if (ar.currentline > 0) {
            lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
            luaL_addvalue(b);
            return;
        }
    }
}

/* The line of the innermost Lua function that has one, 0 if none. */
static int current_line(lua_State *L)
{
    lua_Debug fr;
    for (int lvl = 0; lua_getstack(L, lvl, &fr); lvl++)
        if (lua_getinfo(L, "l", &fr) && fr.currentline > 0)
            return fr.currentline;
    return 0;
}

static void sbx_hook(lua_State *L, lua_Debug *ar)
{
    void *ud;
    lua_getallocf(L, &ud);
    sbx *s = ud;
    if (ar->event == LUA_HOOKCOUNT) {
        s->instr += SBX_HOOK_EVERY;
        const int line = current_line(L);
        if (line)
            s->last_line = line;
    }
    int over_instr = s->instr > SBX_INSTR_LIMIT;
    if (s->time_hit || over_instr || sbx_past_deadline(s)) {
        /* Once over, stay over: the hook now fires on every instruction and
         * raises again, so a pcall that caught the error cannot go on. */
        if (!s->time_hit)
            lua_sethook(L, sbx_hook, LUA_MASKCOUNT | LUA_MASKCALL, 1);
        s->time_hit = 1;
        if (s->wall_hit && !s->wall_line)
            s->wall_line = current_line(L);
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        lua_pos(L, &b);
        if (s->wall_hit)
            lua_pushfstring(L, "limit exceeded: wall-clock %d s in the config sandbox", (int)SBX_WALL_LIMIT_S);
        else
            lua_pushfstring(L, "time limit exceeded (%d million instructions) in the config sandbox",
                            (int)(SBX_INSTR_LIMIT / 1000000));
        luaL_addvalue(&b);
        luaL_pushresult(&b);
        lua_error(L);
    }
}

static const char *const forbidden_globals[] = {"io",      "require", "package", "debug",   "dofile",
                                                "loadfile", "print",  "collectgarbage", "loadstring",
                                                "module",  "setfenv", "getfenv", NULL};

static int is_forbidden(const char *k)
{
    for (int i = 0; forbidden_globals[i]; i++)
        if (strcmp(k, forbidden_globals[i]) == 0)
            return 1;
    return 0;
}

/* __index of the proxy environment: upvalues data, allowed. */
static int env_index(lua_State *L)
{
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL)
        return 1;
    if (lua_type(L, 2) == LUA_TSTRING && is_forbidden(lua_tostring(L, 2)))
        return luaL_error(L, "%s is not available in the config sandbox", lua_tostring(L, 2));
    lua_pushnil(L);
    return 1;
}

/* __newindex of the proxy environment: upvalues data, lines. */
static int env_newindex(lua_State *L)
{
    lua_Debug ar;
    int line = 0;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "l", &ar))
        line = ar.currentline;
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, lua_upvalueindex(1));
    lua_pushvalue(L, 2);
    lua_pushinteger(L, line);
    lua_rawset(L, lua_upvalueindex(2));
    return 0;
}

static int lib_refuse(lua_State *L)
{
    const char *lib = lua_tostring(L, lua_upvalueindex(1));
    if (lua_type(L, 2) == LUA_TSTRING)
        return luaL_error(L, "%s.%s is not available in the config sandbox", lib, lua_tostring(L, 2));
    lua_pushnil(L);
    return 1;
}

/* 1 when the sandbox's time limit has fired (see sbx_hook). */
static int sbx_over(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ((sbx *)ud)->time_hit;
}

/* pcall / xpcall that never swallow the limit: upvalue 1 the real one. */
static int sbx_pcall(lua_State *L)
{
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    if (sbx_over(L))
        return luaL_error(L, "time limit exceeded in the config sandbox (it cannot be caught)");
    return lua_gettop(L);
}

/* Lua patterns backtrack: ".-.-.-.-b" over 3000 bytes runs for hours inside
 * one C call where no hook fires. Before calling the real function, bound
 * the worst case, (subject length + 1) ^ (quantifiers + 1 unless anchored),
 * and refuse patterns beyond it. 1e8 steps is under a second: a call let
 * through ends soon after the wall clock. Upvalues: real function, its name, the
 * index of its "plain" argument (0: none). */
#define SBX_PATTERN_COST 1e8
static int sbx_strfn(lua_State *L)
{
    size_t n = 0, pl = 0;
    const char *subj = lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER ? lua_tolstring(L, 1, &n) : NULL;
    const char *pat = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &pl) : NULL;
    int plain_arg = (int)lua_tointeger(L, lua_upvalueindex(3));
    if (subj && pat && !(plain_arg && lua_toboolean(L, plain_arg))) {
        int k = pl && pat[0] == '^' ? 0 : 1, inset = 0;
        for (size_t i = 0; i < pl; i++) {
            char c = pat[i];
            if (c == '%') {
                if (i + 1 < pl && (pat[i + 1] == 'b' || pat[i + 1] == 'f'))
                    k++; /* %b and %f scan too */
                i++;
            } else if (inset) {
                if (c == ']') inset = 0;
            } else if (c == '[') {
                inset = 1;
                if (i + 1 < pl && pat[i + 1] == '^') i++;
                if (i + 1 < pl && pat[i + 1] == ']') i++;
            } else if (i > 0 && (c == '*' || c == '+' || c == '-')) {
                k++;
            }
        }
        double cost = 1;
        for (int j = 0; j < k && cost <= SBX_PATTERN_COST; j++)
            cost *= (double)n + 1;
        if (cost > SBX_PATTERN_COST)
            return luaL_error(L, "limit exceeded: string.%s with pattern '%s' over %d bytes could run for hours "
                                 "(%d backtracking repetitions); simplify the pattern or use plain find",
                              lua_tostring(L, lua_upvalueindex(2)), pl > 40 ? "(long)" : pat, (int)n, k);
    }
    int top = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, top, LUA_MULTRET);
    return lua_gettop(L);
}

/* string.rep of an empty string with an empty separator allocates nothing
 * and loops n times: ("").rep(2^60) would run for years inside one C call.
 * Its result is "" whatever n is. Upvalue: the real function. */
static int sbx_rep(lua_State *L)
{
    size_t l = 0, lsep = 0;
    luaL_checklstring(L, 1, &l);
    luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
    if (l + lsep == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    int top = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, top, 1);
    return 1;
}

/* The table functions loop over index ranges with raw reads and writes that
 * neither allocate nor call when the slots are nil: table.move({}, 1, 2^40,
 * 1) or table.insert on a table whose border is 2^40 (t[1], t[2], t[4], ...
 * set) run for hours in one C call. Bound the range by what the sandbox's
 * memory could hold, before the call. A __len metamethod is refused: the
 * real function would call it again and could be told another length.
 * Upvalues: real function, its name. */
#define SBX_MAX_RANGE ((lua_Integer)(SBX_MEM_LIMIT / 16))
static int sbx_tabfn(lua_State *L)
{
    const char *name = lua_tostring(L, lua_upvalueindex(2));
    int top = lua_gettop(L);
    lua_Integer lo = 1, hi = 0;
    if (strcmp(name, "move") == 0) {
        lo = luaL_checkinteger(L, 2);
        hi = luaL_checkinteger(L, 3);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        if (luaL_getmetafield(L, 1, "__len") != LUA_TNIL)
            return luaL_error(L, "table.%s of a table with a __len metamethod is not available in the config sandbox",
                              name);
        hi = (lua_Integer)lua_rawlen(L, 1);
        if (strcmp(name, "concat") == 0) {
            lo = luaL_optinteger(L, 3, 1);
            hi = luaL_optinteger(L, 4, hi);
        } else if (strcmp(name, "insert") == 0 && top >= 3) {
            lo = luaL_checkinteger(L, 2);
        } else if (strcmp(name, "remove") == 0 && top >= 2) {
            lo = luaL_optinteger(L, 2, hi);
        }
    }
    /* hi - lo, exact in unsigned arithmetic when hi >= lo */
    unsigned long long span = (unsigned long long)hi - (unsigned long long)lo;
    if (hi >= lo && span >= (unsigned long long)SBX_MAX_RANGE) {
        char n[32];
        snprintf(n, sizeof n, "%llu", span + 1 ? span + 1 : span);
        return luaL_error(L, "limit exceeded: table.%s over %s elements in the config sandbox (at most %d)", name, n,
                          (int)SBX_MAX_RANGE);
    }
    lua_settop(L, top);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, top, LUA_MULTRET);
    return lua_gettop(L);
}

/* setmetatable that refuses __gc: Lua runs finalizers with hooks off, so a
 * finalizer that loops would escape every limit (and hang lua_close).
 * Upvalue: the real function. */
static int sbx_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        int t = lua_rawget(L, 2);
        lua_pop(L, 1);
        if (t != LUA_TNIL)
            return luaL_error(L, "__gc metamethods are not available in the config sandbox");
    }
    int top = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, top, 1);
    return 1;
}

/* rawset that refuses the config environment: a global set behind
 * __newindex would bypass the settings and the unknown-global check.
 * Upvalues: real rawset, proxy env. */
static int sbx_rawset(lua_State *L)
{
    if (lua_rawequal(L, 1, lua_upvalueindex(2)))
        return luaL_error(L, "rawset on the config environment (_G) is not allowed in the config sandbox; assign the "
                             "global instead");
    int top = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, top, 1);
    return 1;
}

/* Text-only load whose chunks see the sandbox environment. Upvalues: real
 * load, proxy env. */
static int sbx_load(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TSTRING && lua_tostring(L, 1)[0] == LUA_SIGNATURE[0])
        return luaL_error(L, "load of binary chunks is not available in the config sandbox");
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    if (n >= 2)
        lua_pushvalue(L, 2);
    else
        lua_pushnil(L); /* load's own default name: the chunk text */
    lua_pushstring(L, "t");
    if (n >= 4)
        lua_pushvalue(L, 4);
    else
        lua_pushvalue(L, lua_upvalueindex(2));
    lua_call(L, 4, 2);
    return 2;
}

/* Builds the sandbox and leaves on the stack: proxy env, data, lines. */
static void sbx_setup(lua_State *L)
{
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
    luaL_requiref(L, LUA_COLIBNAME, luaopen_coroutine, 1);
    luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0);
    int os_real = lua_gettop(L);
    int g = os_real - 6;

    /* string: no dump, also through ("").dump */
    int str = g + 1;
    lua_pushnil(L);
    lua_setfield(L, str, "dump");
    lua_newtable(L);
    lua_pushstring(L, "string");
    lua_pushcclosure(L, lib_refuse, 1);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, str);
    static const struct {
        const char *name;
        int plain_arg;
    } pfn[] = {{"find", 4}, {"match", 0}, {"gmatch", 0}, {"gsub", 0}};
    for (int i = 0; i < 4; i++) {
        lua_getfield(L, str, pfn[i].name);
        lua_pushstring(L, pfn[i].name);
        lua_pushinteger(L, pfn[i].plain_arg);
        lua_pushcclosure(L, sbx_strfn, 3);
        lua_setfield(L, str, pfn[i].name);
    }
    lua_getfield(L, str, "rep");
    lua_pushcclosure(L, sbx_rep, 1);
    lua_setfield(L, str, "rep");
    static const char *const tfn[] = {"concat", "insert", "remove", "move", "sort", NULL};
    for (int i = 0; tfn[i]; i++) {
        lua_getfield(L, g + 2, tfn[i]);
        lua_pushstring(L, tfn[i]);
        lua_pushcclosure(L, sbx_tabfn, 2);
        lua_setfield(L, g + 2, tfn[i]);
    }

    lua_newtable(L); /* allowed */
    int allowed = lua_gettop(L);
    static const char *const base_ok[] = {"assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall",
                                          "select", "tonumber", "tostring", "type", "rawequal", "rawget",
                                          "rawlen", "rawset", "setmetatable", "getmetatable", "_VERSION", NULL};
    for (int i = 0; base_ok[i]; i++) {
        lua_getfield(L, g, base_ok[i]);
        lua_setfield(L, allowed, base_ok[i]);
    }
    lua_pushvalue(L, str);
    lua_setfield(L, allowed, "string");
    lua_pushvalue(L, g + 2);
    lua_setfield(L, allowed, "table");
    lua_pushvalue(L, g + 3);
    lua_setfield(L, allowed, "math");
    lua_pushvalue(L, g + 4);
    lua_setfield(L, allowed, "utf8");
    lua_pushvalue(L, g + 5);
    lua_setfield(L, allowed, "coroutine");

    lua_newtable(L); /* restricted os */
    static const char *const os_ok[] = {"getenv", "time", "clock", "date", "difftime", NULL};
    for (int i = 0; os_ok[i]; i++) {
        lua_getfield(L, os_real, os_ok[i]);
        lua_setfield(L, -2, os_ok[i]);
    }
    lua_newtable(L);
    lua_pushstring(L, "os");
    lua_pushcclosure(L, lib_refuse, 1);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_setfield(L, allowed, "os");

    lua_newtable(L); /* proxy env */
    int env = lua_gettop(L);
    lua_newtable(L); /* data */
    int data = lua_gettop(L);
    lua_newtable(L); /* lines */
    int lines = lua_gettop(L);

    lua_getfield(L, g, "load");
    lua_pushvalue(L, env);
    lua_pushcclosure(L, sbx_load, 2);
    lua_setfield(L, allowed, "load");
    lua_pushvalue(L, env);
    lua_setfield(L, allowed, "_G");
    for (int i = 0; i < 2; i++) {
        lua_getfield(L, allowed, i ? "xpcall" : "pcall");
        lua_pushcclosure(L, sbx_pcall, 1);
        lua_setfield(L, allowed, i ? "xpcall" : "pcall");
    }
    lua_getfield(L, allowed, "rawset");
    lua_pushvalue(L, env);
    lua_pushcclosure(L, sbx_rawset, 2);
    lua_setfield(L, allowed, "rawset");
    lua_getfield(L, allowed, "setmetatable");
    lua_pushcclosure(L, sbx_setmetatable, 1);
    lua_setfield(L, allowed, "setmetatable");

    lua_newtable(L); /* metatable of env */
    lua_pushvalue(L, data);
    lua_pushvalue(L, allowed);
    lua_pushcclosure(L, env_index, 2);
    lua_setfield(L, -2, "__index");
    lua_pushvalue(L, data);
    lua_pushvalue(L, lines);
    lua_pushcclosure(L, env_newindex, 2);
    lua_setfield(L, -2, "__newindex");
    lua_pushstring(L, "the config environment's metatable is locked");
    lua_setfield(L, -2, "__metatable"); /* setmetatable(_G, ...) is refused */
    lua_setmetatable(L, env);

    /* keep env, data, lines; drop the rest */
    lua_rotate(L, g, 3);
    lua_settop(L, g + 2);
}

/* ---------------------------------------------------------- validation */

typedef struct vctx {
    lua_State *L;
    const char *name; /* file name as shown in messages */
    const char *src;
    size_t srclen;
    int lines_idx, data_idx;
    char *err;
    size_t errlen;
    int failed;
} vctx;

static void verr(vctx *v, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void verr(vctx *v, int line, const char *fmt, ...)
{
    if (v->failed)
        return;
    v->failed = 1;
    int n = line > 0 ? snprintf(v->err, v->errlen, "%s:%d: ", v->name, line) : snprintf(v->err, v->errlen, "%s: ", v->name);
    if (n < 0 || (size_t)n >= v->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->err + n, v->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static int is_ident(int c) { return isalnum(c) || c == '_'; }

/* Start of line `line` (1-based) in the source, or NULL. */
static const char *line_start(const vctx *v, int line)
{
    const char *p = v->src, *end = v->src + v->srclen;
    for (int l = 1; l < line && p < end; p++)
        if (*p == '\n')
            l++;
    return p < end ? p : NULL;
}

/* Does `key` appear as an assigned field (`key =`, `["key"] =`, `[key] =`)
 * at position p of a line? Returns its length past the '=' or 0. */
static int key_at(const char *p, const char *lim, const char *key, int before)
{
    size_t kl = strlen(key);
    const char *q = p;
    if (*q == '[') {
        q++;
        while (q < lim && (*q == ' ' || *q == '\t'))
            q++;
        if (q < lim && (*q == '"' || *q == '\'')) {
            char quote = *q++;
            if ((size_t)(lim - q) < kl + 1 || strncmp(q, key, kl) != 0 || q[kl] != quote)
                return 0;
            q += kl + 1;
        } else {
            if ((size_t)(lim - q) < kl || strncmp(q, key, kl) != 0 || (q + kl < lim && is_ident(q[kl])))
                return 0;
            q += kl;
        }
        while (q < lim && (*q == ' ' || *q == '\t'))
            q++;
        if (q >= lim || *q != ']')
            return 0;
        q++;
    } else {
        if (is_ident(before) || (size_t)(lim - q) < kl || strncmp(q, key, kl) != 0 || (q + kl < lim && is_ident(q[kl])))
            return 0;
        q += kl;
    }
    while (q < lim && (*q == ' ' || *q == '\t'))
        q++;
    if (q >= lim || *q != '=' || (q + 1 < lim && q[1] == '='))
        return 0;
    return 1;
}

/* First line >= from where key is assigned; `last` makes it the last line
 * <= from instead. 0 if none. Text after "--" on a line is ignored. */
static int find_key_line(const vctx *v, int from, const char *key, int last)
{
    if (!v->src || !key)
        return 0;
    const char *p = last ? v->src : line_start(v, from), *end = v->src + v->srclen;
    int line = last ? 1 : from, found = 0;
    while (p && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *lim = nl ? nl : end;
        char in_str = 0;
        for (const char *q = p; q < lim; q++) {
            if (!in_str && q + 1 < lim && q[0] == '-' && q[1] == '-')
                break;
            if (!in_str && key_at(q, lim, key, q > p ? q[-1] : ' ')) {
                if (!last)
                    return line;
                found = line;
                break;
            }
            if (*q == '"' || *q == '\'') {
                if (!in_str)
                    in_str = *q;
                else if (*q == in_str && q[-1] != '\\')
                    in_str = 0;
            }
        }
        if (last && line >= from)
            break;
        if (!nl)
            break;
        p = nl + 1;
        line++;
    }
    return found;
}

/* A path of keys from a global down to a field: line of the deepest one found. */
typedef struct vpath {
    const char *keys[4];
    int n;
    char text[160];
} vpath;

static int path_line(const vctx *v, const vpath *path)
{
    lua_State *L = v->L;
    lua_pushstring(L, path->keys[0]);
    lua_rawget(L, v->lines_idx);
    int end = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    int line = find_key_line(v, end, path->keys[0], 1);
    if (!line)
        return end;
    for (int i = 1; i < path->n; i++) {
        int l = find_key_line(v, line, path->keys[i], 0);
        if (!l)
            break;
        line = l;
    }
    return line;
}

static void vpath_text(vpath *p)
{
    size_t n = 0;
    p->text[0] = 0;
    for (int i = 0; i < p->n; i++) {
        const char *k = p->keys[i];
        int ident = isalpha((unsigned char)k[0]) || k[0] == '_';
        for (const char *c = k; *c && ident; c++)
            ident = is_ident((unsigned char)*c);
        int isnum = k[0] && strspn(k, "0123456789") == strlen(k);
        const char *fmt = i == 0 ? "%s" : ident ? ".%s" : isnum ? "[%s]" : "[\"%s\"]";
        int w = snprintf(p->text + n, sizeof p->text - n, fmt, k);
        if (w < 0 || (size_t)w >= sizeof p->text - n)
            break;
        n += (size_t)w;
    }
}

static vpath vpath_of(const vpath *parent, const char *key)
{
    vpath p = {.n = 0};
    if (parent) {
        p = *parent;
    }
    if (p.n < 4)
        p.keys[p.n++] = key;
    vpath_text(&p);
    return p;
}

#define FAIL(v, path, ...) verr((v), path_line((v), (path)), __VA_ARGS__)

static const char *type_of(lua_State *L, int idx) { return luaL_typename(L, idx); }

/* Number at idx into *out; path names the field. */
static int get_number(vctx *v, const vpath *p, int idx, double *out)
{
    if (lua_type(v->L, idx) != LUA_TNUMBER) {
        FAIL(v, p, "%s must be a number, got %s", p->text, type_of(v->L, idx));
        return 0;
    }
    *out = lua_tonumber(v->L, idx);
    return 1;
}

static int get_int(vctx *v, const vpath *p, int idx, int *out)
{
    double d;
    if (!get_number(v, p, idx, &d))
        return 0;
    lua_Integer i;
    if (!lua_isinteger(v->L, idx) && !(d == (double)(lua_Integer)d)) {
        FAIL(v, p, "%s must be an integer, got %g", p->text, d);
        return 0;
    }
    i = lua_isinteger(v->L, idx) ? lua_tointeger(v->L, idx) : (lua_Integer)d;
    if (i < -1000000000 || i > 1000000000) {
        FAIL(v, p, "%s is out of range, got %lld", p->text, (long long)i);
        return 0;
    }
    *out = (int)i;
    return 1;
}

static int get_string(vctx *v, const vpath *p, int idx, char *out, size_t outlen)
{
    if (lua_type(v->L, idx) != LUA_TSTRING) {
        FAIL(v, p, "%s must be a string, got %s", p->text, type_of(v->L, idx));
        return 0;
    }
    size_t len;
    const char *s = lua_tolstring(v->L, idx, &len);
    if (len >= outlen) {
        FAIL(v, p, "%s is too long (%zu bytes, at most %zu)", p->text, len, outlen - 1);
        return 0;
    }
    memcpy(out, s, len + 1);
    return 1;
}

static int check_table(vctx *v, const vpath *p, int idx)
{
    if (lua_type(v->L, idx) != LUA_TTABLE) {
        FAIL(v, p, "%s must be a table, got %s", p->text, type_of(v->L, idx));
        return 0;
    }
    return 1;
}

/* Every key of the table at idx must be one of `known`. */
static int check_known(vctx *v, const vpath *p, int idx, const char *const *known, const char *what)
{
    lua_State *L = v->L;
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        int ok = 0;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (int i = 0; known[i] && !ok; i++)
                ok = strcmp(lua_tostring(L, -1), known[i]) == 0;
        if (!ok) {
            char list[256] = "";
            size_t n = 0;
            for (int i = 0; known[i]; i++) {
                int w = snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", known[i]);
                if (w < 0 || (size_t)w >= sizeof list - n)
                    break;
                n += (size_t)w;
            }
            char kbuf[64];
            if (lua_type(L, -1) == LUA_TSTRING)
                snprintf(kbuf, sizeof kbuf, "%s", lua_tostring(L, -1));
            else if (lua_type(L, -1) == LUA_TNUMBER)
                snprintf(kbuf, sizeof kbuf, "%g", lua_tonumber(L, -1));
            else
                snprintf(kbuf, sizeof kbuf, "(%s)", type_of(L, -1));
            vpath sub = vpath_of(p, kbuf);
            const vpath *at = lua_type(L, -1) == LUA_TSTRING ? &sub : p;
            if (p->n == 0)
                FAIL(v, at, "unknown %s '%s' (known: %s)", what, kbuf, list);
            else
                FAIL(v, at, "%s: unknown %s '%s' (known: %s)", p->text, what, kbuf, list);
            lua_pop(L, 1);
            return 0;
        }
    }
    return 1;
}

/* ---- rules shared with the key module (kept here so messages can name the file) */

static int arch_from_name(const char *s)
{
    static const struct { const char *n; int code; } a[] = {
        {"sm_80", 80}, {"sm_86", 86}, {"sm_89", 89}, {"sm_90", 90}, {"sm_90a", SALE_ARCH_SM90A}};
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++)
        if (strcmp(s, a[i].n) == 0)
            return a[i].code;
    return -1;
}

static const char *arch_to_name(int code)
{
    switch (code) {
    case 80: return "sm_80";
    case 86: return "sm_86";
    case 89: return "sm_89";
    case 90: return "sm_90";
    case SALE_ARCH_SM90A: return "sm_90a";
    default: return "?";
    }
}

static const char *const family_names[] = {"quantize", "fused", "select", "attend", "dense", "plain", NULL};

static int is_hopper(int arch) { return arch == 90 || arch == SALE_ARCH_SM90A; }

/* Rules of one value; 0 with the error set if broken. */
static int rule_block_q(vctx *v, const vpath *p, int x)
{
    if (x != 64 && x != 128) {
        FAIL(v, p, "%s must be 64 or 128, got %d", p->text, x);
        return 0;
    }
    return 1;
}

static int rule_block_k(vctx *v, const vpath *p, int x)
{
    if (x != 16 && x != 32 && x != 64) { /* sale_key_validate's rule */
        FAIL(v, p, "%s must be 16, 32 or 64, got %d", p->text, x);
        return 0;
    }
    return 1;
}

static int rule_seg(vctx *v, const vpath *p, int seg, int bk, const char *bk_origin)
{
    if (seg <= 0 || seg % bk) {
        FAIL(v, p, "%s must be a multiple of block_k (%d%s), got %d", p->text, bk, bk_origin, seg);
        return 0;
    }
    if (seg / bk > 32) {
        FAIL(v, p, "%s must span at most 32 blocks of block_k (%d%s), got %d (%d blocks)", p->text, bk, bk_origin,
             seg, seg / bk);
        return 0;
    }
    return 1;
}

static int rule_window(vctx *v, const vpath *p, int w, int bk, const char *bk_origin)
{
    if (w < 0 || w % bk) {
        FAIL(v, p, "%s must be a non-negative multiple of block_k (%d%s), got %d", p->text, bk, bk_origin, w);
        return 0;
    }
    return 1;
}

static int rule_est_bits(vctx *v, const vpath *p, int bits, int arch)
{
    if (bits != 4 && bits != 8) {
        FAIL(v, p, "%s must be 4 or 8, got %d", p->text, bits);
        return 0;
    }
    if (bits == 4 && is_hopper(arch)) {
        FAIL(v, p, "%s = 4 is refused on %s: int4 mma is emulated there (use 8)", p->text, arch_to_name(arch));
        return 0;
    }
    return 1;
}

static int rule_head_dim(vctx *v, const vpath *p, int d)
{
    if (d != 64 && d != 128) {
        FAIL(v, p, "%s must be 64 or 128, got %d", p->text, d);
        return 0;
    }
    return 1;
}

/* ---- sections */

static const char *const defaults_fields[] = {"block_q",  "block_k",     "block_seg", "local_window",
                                              "est_bits", "dense_below", "tau",       "thr",
                                              NULL};

/* "run" / "fixed" (sale_thr_parse, not linked here: see #pragma weak above) */
static int thr_of_name(const char *s)
{
    return !strcmp(s, "run") ? SALE_THR_RUN : !strcmp(s, "fixed") ? SALE_THR_FIXED : -1;
}

/* Reads the fields present in the table at idx into d (others untouched);
 * set[] marks which were present. arch: for est_bits (0 = any). */
static void read_defaults(vctx *v, const vpath *p, int idx, cfg_defaults *d, int set[8], int arch)
{
    lua_State *L = v->L;
    if (!check_table(v, p, idx) || !check_known(v, p, idx, defaults_fields, "field"))
        return;
    for (int i = 0; defaults_fields[i] && !v->failed; i++) {
        const char *f = defaults_fields[i];
        vpath fp = vpath_of(p, f);
        lua_pushstring(L, f);
        if (lua_rawget(L, idx) == LUA_TNIL) {
            lua_pop(L, 1);
            continue;
        }
        set[i] = 1;
        int x = 0;
        double t;
        switch (i) {
        case 0:
            if (get_int(v, &fp, -1, &x) && rule_block_q(v, &fp, x))
                d->block_q = x;
            break;
        case 1:
            if (get_int(v, &fp, -1, &x) && rule_block_k(v, &fp, x))
                d->block_k = x;
            break;
        case 2:
            if (get_int(v, &fp, -1, &x))
                d->block_seg = x;
            break;
        case 3:
            if (get_int(v, &fp, -1, &x))
                d->local_window = x;
            break;
        case 4:
            if (get_int(v, &fp, -1, &x) && rule_est_bits(v, &fp, x, arch))
                d->est_bits = x;
            break;
        case 5:
            if (get_int(v, &fp, -1, &x))
                d->dense_below = x;
            break;
        case 6:
            if (get_number(v, &fp, -1, &t)) {
                if (!(t > 0 && t < 1))
                    FAIL(v, &fp, "%s must be in (0, 1), got %g", fp.text, t);
                else
                    d->tau = (float)t;
            }
            break;
        case 7: {
            char s[16];
            if (get_string(v, &fp, -1, s, sizeof s)) {
                int th = thr_of_name(s);
                if (th < 0)
                    FAIL(v, &fp, "%s: unknown threshold variant '%s' (known: run, fixed)", fp.text, s);
                else
                    d->thr = th;
            }
            break;
        }
        }
        lua_pop(L, 1);
    }
}

/* Cross-field rules of merged defaults; the message points at whichever
 * field was set in this table (seg/window), naming where block_k came from. */
static void check_defaults(vctx *v, const vpath *p, const cfg_defaults *d, const int set[8], int bk_set_here)
{
    const char *origin = bk_set_here ? "" : ", from defaults";
    if (set[2] || set[1]) {
        vpath fp = vpath_of(p, set[2] ? "block_seg" : "block_k");
        if (!set[2]) {
            if (d->block_seg % d->block_k || d->block_seg / d->block_k > 32)
                FAIL(v, &fp, "%s = %d does not divide block_seg (%d) into at most 32 blocks", fp.text, d->block_k,
                     d->block_seg);
        } else
            rule_seg(v, &fp, d->block_seg, d->block_k, origin);
    }
    if (set[3] || set[1]) {
        vpath fp = vpath_of(p, set[3] ? "local_window" : "block_k");
        if (!set[3]) {
            if (d->local_window % d->block_k)
                FAIL(v, &fp, "%s = %d does not divide local_window (%d)", fp.text, d->block_k, d->local_window);
        } else
            rule_window(v, &fp, d->local_window, d->block_k, origin);
    }
}

static void read_cache(vctx *v, int idx, sale_config *c)
{
    static const char *const known[] = {"path", "fleet", NULL};
    vpath p = vpath_of(NULL, "cache");
    if (!check_table(v, &p, idx) || !check_known(v, &p, idx, known, "field"))
        return;
    char *dst[2] = {c->cache_path, c->fleet_cache};
    size_t cap[2] = {sizeof c->cache_path, sizeof c->fleet_cache};
    for (int i = 0; i < 2 && !v->failed; i++) {
        vpath fp = vpath_of(&p, known[i]);
        lua_pushstring(v->L, known[i]);
        if (lua_rawget(v->L, idx) != LUA_TNIL) {
            char tmp[512];
            if (get_string(v, &fp, -1, tmp, sizeof tmp)) {
                const char *home = getenv("HOME");
                if (tmp[0] == '\0')
                    FAIL(v, &fp, "%s must not be empty", fp.text);
                else if (tmp[0] == '~' && tmp[1] == '/' && home)
                    snprintf(dst[i], cap[i], "%s%s", home, tmp + 1);
                else
                    snprintf(dst[i], cap[i], "%s", tmp);
            }
        }
        lua_pop(v->L, 1);
    }
}

typedef int (*elem_fn)(vctx *v, const vpath *p, int idx, void *out, int i);

/* A list (or a single value) at idx, each element through fn into out[i]. */
static int read_list(vctx *v, const vpath *p, int idx, elem_fn fn, void *out, int *n)
{
    lua_State *L = v->L;
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE) {
        vpath ep = *p;
        if (!fn(v, &ep, idx, out, 0))
            return 0;
        *n = 1;
        return 1;
    }
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    lua_Integer count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        lua_pop(L, 1);
    }
    if (count != len) {
        FAIL(v, p, "%s must be a list {a, b, ...}", p->text);
        return 0;
    }
    if (len == 0) {
        FAIL(v, p, "%s must not be empty", p->text);
        return 0;
    }
    if (len > CFG_MAX_LIST) {
        FAIL(v, p, "%s has %lld entries, at most %d", p->text, (long long)len, CFG_MAX_LIST);
        return 0;
    }
    for (lua_Integer i = 1; i <= len; i++) {
        char num[24];
        snprintf(num, sizeof num, "%lld", (long long)i);
        vpath ep = *p;
        snprintf(ep.text + strlen(ep.text), sizeof ep.text - strlen(ep.text), "[%s]", num);
        lua_rawgeti(L, idx, i);
        int ok = fn(v, &ep, lua_gettop(L), out, (int)(i - 1));
        lua_pop(L, 1);
        if (!ok)
            return 0;
    }
    *n = (int)len;
    return 1;
}

static int el_arch(vctx *v, const vpath *p, int idx, void *out, int i)
{
    char s[32];
    if (!get_string(v, p, idx, s, sizeof s))
        return 0;
    int a = arch_from_name(s);
    if (a < 0) {
        FAIL(v, p, "%s: unknown architecture '%s' (known: sm_80, sm_86, sm_89, sm_90)", p->text, s);
        return 0;
    }
    if (a == SALE_ARCH_SM90A) { /* prewarm's own error was the key layer's, later */
        FAIL(v, p, "%s: the fleet names devices: sm_90 (prewarm compiles its sm_90a kernels with it), got '%s'",
             p->text, s);
        return 0;
    }
    ((int *)out)[i] = a;
    return 1;
}

static int el_head_dim(vctx *v, const vpath *p, int idx, void *out, int i)
{
    int x;
    if (!get_int(v, p, idx, &x) || !rule_head_dim(v, p, x))
        return 0;
    ((int *)out)[i] = x;
    return 1;
}

static int el_family(vctx *v, const vpath *p, int idx, void *out, int i)
{
    char s[32];
    if (!get_string(v, p, idx, s, sizeof s))
        return 0;
    for (int f = 0; family_names[f]; f++)
        if (strcmp(s, family_names[f]) == 0) {
            ((sale_family *)out)[i] = (sale_family)f;
            return 1;
        }
    FAIL(v, p, "%s: unknown family '%s' (known: quantize, fused, select, attend, dense)", p->text, s);
    return 0;
}

static int el_dtype(vctx *v, const vpath *p, int idx, void *out, int i)
{
    char s[32];
    if (!get_string(v, p, idx, s, sizeof s))
        return 0;
    if (strcmp(s, "bf16") == 0)
        ((sale_dtype *)out)[i] = SALE_DTYPE_BF16;
    else if (strcmp(s, "f16") == 0)
        ((sale_dtype *)out)[i] = SALE_DTYPE_F16;
    else {
        FAIL(v, p, "%s: unknown dtype '%s' (known: bf16, f16)", p->text, s);
        return 0;
    }
    return 1;
}

static int el_block_q(vctx *v, const vpath *p, int idx, void *out, int i)
{
    int x;
    if (!get_int(v, p, idx, &x) || !rule_block_q(v, p, x))
        return 0;
    ((int *)out)[i] = x;
    return 1;
}

static int el_block_k(vctx *v, const vpath *p, int idx, void *out, int i)
{
    int x;
    if (!get_int(v, p, idx, &x) || !rule_block_k(v, p, x))
        return 0;
    ((int *)out)[i] = x;
    return 1;
}

static int el_positive(vctx *v, const vpath *p, int idx, void *out, int i)
{
    int x;
    if (!get_int(v, p, idx, &x))
        return 0;
    if (x <= 0) {
        FAIL(v, p, "%s must be positive, got %d", p->text, x);
        return 0;
    }
    ((int *)out)[i] = x;
    return 1;
}

static int el_nonneg(vctx *v, const vpath *p, int idx, void *out, int i)
{
    int x;
    if (!get_int(v, p, idx, &x))
        return 0;
    if (x < 0) {
        FAIL(v, p, "%s must not be negative, got %d", p->text, x);
        return 0;
    }
    ((int *)out)[i] = x;
    return 1;
}

static int el_warps(vctx *v, const vpath *p, int idx, void *out, int i)
{
    int x;
    if (!get_int(v, p, idx, &x))
        return 0;
    if (x != 1 && x != 2 && x != 4 && x != 8 && x != 16) {
        FAIL(v, p, "%s must be 1, 2, 4, 8 or 16, got %d", p->text, x);
        return 0;
    }
    ((int *)out)[i] = x;
    return 1;
}

static int el_stages(vctx *v, const vpath *p, int idx, void *out, int i)
{
    int x;
    if (!get_int(v, p, idx, &x))
        return 0;
    if (x < 1 || x > 7) {
        FAIL(v, p, "%s must be between 1 and 7, got %d", p->text, x);
        return 0;
    }
    ((int *)out)[i] = x;
    return 1;
}

static int el_thr(vctx *v, const vpath *p, int idx, void *out, int i)
{
    char s[16];
    if (!get_string(v, p, idx, s, sizeof s))
        return 0;
    int th = thr_of_name(s);
    if (th < 0) {
        FAIL(v, p, "%s: unknown threshold variant '%s' (known: run, fixed)", p->text, s);
        return 0;
    }
    ((int *)out)[i] = th;
    return 1;
}

static void read_fleet(vctx *v, int idx, cfg_fleet *f)
{
    static const char *const known[] = {"archs",   "head_dims", "families",  "dtypes",       "block_q",
                                        "block_k", "block_seg", "local_window", "thr",         NULL};
    struct { elem_fn fn; void *out; int *n; } sl[] = {
        {el_arch, f->archs, &f->n_archs},          {el_head_dim, f->head_dims, &f->n_head_dims},
        {el_family, f->families, &f->n_families},  {el_dtype, f->dtypes, &f->n_dtypes},
        {el_block_q, f->block_qs, &f->n_block_qs}, {el_block_k, f->block_ks, &f->n_block_ks},
        {el_positive, f->block_segs, &f->n_block_segs}, {el_nonneg, f->local_windows, &f->n_local_windows},
        {el_thr, f->thrs, &f->n_thrs},
    };
    vpath p = vpath_of(NULL, "fleet");
    if (!check_table(v, &p, idx) || !check_known(v, &p, idx, known, "field"))
        return;
    for (int i = 0; known[i] && !v->failed; i++) {
        vpath fp = vpath_of(&p, known[i]);
        lua_pushstring(v->L, known[i]);
        if (lua_rawget(v->L, idx) != LUA_TNIL)
            read_list(v, &fp, -1, sl[i].fn, sl[i].out, sl[i].n);
        lua_pop(v->L, 1);
    }
    if (v->failed)
        return;
    /* every combination the prewarm will build must be legal */
    for (int s = 0; s < f->n_block_segs && !v->failed; s++)
        for (int k = 0; k < f->n_block_ks && !v->failed; k++) {
            vpath fp = vpath_of(&p, "block_seg");
            char t[40];
            snprintf(t, sizeof t, "[%d]", s + 1);
            strncat(fp.text, t, sizeof fp.text - strlen(fp.text) - 1);
            rule_seg(v, &fp, f->block_segs[s], f->block_ks[k], ", from fleet.block_k");
        }
    for (int w = 0; w < f->n_local_windows && !v->failed; w++)
        for (int k = 0; k < f->n_block_ks && !v->failed; k++) {
            vpath fp = vpath_of(&p, "local_window");
            char t[40];
            snprintf(t, sizeof t, "[%d]", w + 1);
            strncat(fp.text, t, sizeof fp.text - strlen(fp.text) - 1);
            rule_window(v, &fp, f->local_windows[w], f->block_ks[k], ", from fleet.block_k");
        }
}

static void read_tuning(vctx *v, int idx, cfg_tuning *t)
{
    static const char *const known[] = {"warps", "stages", "budget_s", "strategy", NULL};
    vpath p = vpath_of(NULL, "tuning");
    lua_State *L = v->L;
    if (!check_table(v, &p, idx) || !check_known(v, &p, idx, known, "field"))
        return;
    vpath fp = vpath_of(&p, "warps");
    lua_pushstring(L, "warps");
    if (lua_rawget(L, idx) != LUA_TNIL)
        read_list(v, &fp, -1, el_warps, t->warps, &t->n_warps);
    lua_pop(L, 1);
    fp = vpath_of(&p, "stages");
    lua_pushstring(L, "stages");
    if (!v->failed && lua_rawget(L, idx) != LUA_TNIL)
        read_list(v, &fp, -1, el_stages, t->stages, &t->n_stages);
    lua_pop(L, 1);
    fp = vpath_of(&p, "budget_s");
    lua_pushstring(L, "budget_s");
    double b;
    if (!v->failed && lua_rawget(L, idx) != LUA_TNIL && get_number(v, &fp, -1, &b)) {
        if (!(b > 0) || isinf(b)) /* 1/0 is no budget: the CLI refuses it too */
            FAIL(v, &fp, "%s must be a positive number of seconds, got %g", fp.text, b);
        else
            t->budget_s = b;
    }
    lua_pop(L, 1);
    fp = vpath_of(&p, "strategy");
    lua_pushstring(L, "strategy");
    char s[32];
    if (!v->failed && lua_rawget(L, idx) != LUA_TNIL && get_string(v, &fp, -1, s, sizeof s)) {
        if (strcmp(s, "exhaustive") && strcmp(s, "halving") && strcmp(s, "random"))
            FAIL(v, &fp, "%s must be \"exhaustive\", \"halving\" or \"random\", got \"%s\"", fp.text, s);
        else
            snprintf(t->strategy, sizeof t->strategy, "%s", s);
    }
    lua_pop(L, 1);
}

/* thresholds = { [model] = { [layer] = {tau_head0, tau_head1, ...} } }, layers
 * from 0. A model's table that is a Lua list ({ {...}, {...} }: layers 1..n,
 * no 0) is refused: its first layer would silently land on layer 1. [L] = false
 * says "no thresholds for layer L", the way to give layers 1..n alone. */
static void read_thresholds(vctx *v, int idx, cfg_threshold **out, int *nout)
{
    lua_State *L = v->L;
    vpath p = vpath_of(NULL, "thresholds");
    if (!check_table(v, &p, idx))
        return;
    int cap = 0, n = 0;
    cfg_threshold *th = NULL;
    lua_pushnil(L);
    while (!v->failed && lua_next(L, idx)) {
        int model_idx = lua_gettop(L);
        if (lua_type(L, -2) != LUA_TSTRING) {
            FAIL(v, &p, "thresholds: model names must be strings, got %s", type_of(L, -2));
            lua_pop(L, 1);
            break;
        }
        const char *model = lua_tostring(L, -2);
        vpath mp = vpath_of(&p, model);
        if (strlen(model) >= sizeof th->model) {
            FAIL(v, &mp, "%s: model name longer than %zu bytes", mp.text, sizeof th->model - 1);
        } else if (check_table(v, &mp, model_idx)) {
            int has0 = 0, nlayers = 0, maxlayer = -1;
            lua_pushnil(L);
            while (!v->failed && lua_next(L, model_idx)) {
                int layer_idx = lua_gettop(L);
                /* [2^32] must not wrap to layer 0 */
                if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 0 || lua_tointeger(L, -2) > INT_MAX) {
                    char got[32];
                    if (lua_isinteger(L, -2))
                        snprintf(got, sizeof got, "%lld", (long long)lua_tointeger(L, -2));
                    else
                        snprintf(got, sizeof got, "%s", type_of(L, -2));
                    FAIL(v, &mp, "%s: layers must be integers in [0, %d] ([0] = {...}), got %s", mp.text, INT_MAX,
                         got);
                    lua_pop(L, 1);
                    break;
                }
                int layer = (int)lua_tointeger(L, -2);
                has0 |= layer == 0;
                nlayers++;
                if (layer > maxlayer)
                    maxlayer = layer;
                char lbuf[24];
                snprintf(lbuf, sizeof lbuf, "%d", layer);
                vpath lp = vpath_of(&mp, lbuf);
                if (lua_type(L, layer_idx) == LUA_TBOOLEAN && !lua_toboolean(L, layer_idx)) {
                    /* [L] = false: none for this layer */
                } else if (check_table(v, &lp, layer_idx)) {
                    int len = (int)lua_rawlen(L, layer_idx);
                    if (len == 0)
                        FAIL(v, &lp, "%s must be a non-empty list of per-head taus", lp.text);
                    for (int h = 1; h <= len && !v->failed; h++) {
                        vpath hp = lp;
                        char hb[24];
                        snprintf(hb, sizeof hb, "[%d]", h);
                        strncat(hp.text, hb, sizeof hp.text - strlen(hp.text) - 1);
                        lua_rawgeti(L, layer_idx, h);
                        double t;
                        if (get_number(v, &hp, -1, &t)) {
                            if (!(t >= 0 && t < 1))
                                FAIL(v, &hp, "%s must be in [0, 1), got %g", hp.text, t);
                            else if (n >= CFG_MAX_THRESH)
                                FAIL(v, &hp, "thresholds: more than %d entries", CFG_MAX_THRESH);
                            else {
                                if (n == cap) {
                                    int nc = cap ? cap * 2 : 256;
                                    cfg_threshold *nt = realloc(th, (size_t)nc * sizeof *nt);
                                    if (!nt) {
                                        FAIL(v, &hp, "out of memory");
                                        lua_pop(L, 1);
                                        break;
                                    }
                                    th = nt;
                                    cap = nc;
                                }
                                snprintf(th[n].model, sizeof th[n].model, "%s", model);
                                th[n].layer = layer;
                                th[n].head = h - 1;
                                th[n].tau = (float)t;
                                n++;
                            }
                        }
                        lua_pop(L, 1);
                    }
                }
                lua_pop(L, 1);
            }
            if (!v->failed && !has0 && nlayers > 0 && nlayers == maxlayer)
                FAIL(v, &mp,
                     "%s: layers count from 0, and this table has layers 1..%d and no layer 0: a list "
                     "{ {...}, {...} } starts at 1. Write [0] = {...}, [1] = {...}, ...; or [0] = false "
                     "if layer 0 has no thresholds",
                     mp.text, maxlayer);
        }
        lua_pop(L, 1);
    }
    if (v->failed) {
        free(th);
        return;
    }
    *out = th;
    *nout = n;
}

static int lines_of(vctx *v, const char *global)
{
    lua_pushstring(v->L, global);
    lua_rawget(v->L, v->lines_idx);
    int l = (int)lua_tointeger(v->L, -1);
    lua_pop(v->L, 1);
    return l;
}

static const char *const top_fields[] = {"cache", "defaults", "arch", "fleet", "tuning", "thresholds", NULL};

static void validate(vctx *v, sale_config *c)
{
    lua_State *L = v->L;
    int data = v->data_idx;

    /* unknown globals first: a typo would otherwise surface as a missing section */
    lua_pushnil(L);
    while (lua_next(L, data)) {
        lua_pop(L, 1);
        int ok = 0;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (int i = 0; top_fields[i] && !ok; i++)
                ok = strcmp(lua_tostring(L, -1), top_fields[i]) == 0;
        if (!ok) {
            const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
            verr(v, lines_of(v, k),
                 "unknown setting '%s' (known: cache, defaults, arch, fleet, tuning, thresholds; use `local` for helpers)",
                 k);
            lua_pop(L, 1);
            return;
        }
    }

    int dset[8] = {0};
    lua_pushstring(L, "cache");
    if (lua_rawget(L, data) != LUA_TNIL)
        read_cache(v, lua_gettop(L), c);
    lua_pop(L, 1);

    vpath dp = vpath_of(NULL, "defaults");
    lua_pushstring(L, "defaults");
    if (!v->failed && lua_rawget(L, data) != LUA_TNIL) {
        read_defaults(v, &dp, lua_gettop(L), &c->defaults, dset, 0);
        if (!v->failed)
            check_defaults(v, &dp, &c->defaults, dset, dset[1]);
    }
    lua_pop(L, 1);

    lua_pushstring(L, "fleet");
    if (!v->failed && lua_rawget(L, data) != LUA_TNIL)
        read_fleet(v, lua_gettop(L), &c->fleet);
    lua_pop(L, 1);

    /* arch overrides, merged over the defaults */
    int arch_set_est[8] = {0};
    int arch_codes_seen[8] = {0}, n_seen = 0;
    vpath ap = vpath_of(NULL, "arch");
    lua_pushstring(L, "arch");
    if (!v->failed && lua_rawget(L, data) != LUA_TNIL && check_table(v, &ap, lua_gettop(L))) {
        int aidx = lua_gettop(L);
        static const char *const names[] = {"sm_80", "sm_86", "sm_89", "sm_90", "sm_90a", NULL};
        if (check_known(v, &ap, aidx, names, "architecture")) {
            for (int i = 0; names[i] && !v->failed; i++) {
                lua_pushstring(L, names[i]);
                if (lua_rawget(L, aidx) != LUA_TNIL) {
                    vpath p = vpath_of(&ap, names[i]);
                    int code = arch_from_name(names[i]);
                    if (c->n_arch_defaults >= 4) {
                        FAIL(v, &p, "arch: at most 4 architectures may have their own defaults");
                    } else {
                        cfg_defaults d = c->defaults;
                        int set[8] = {0};
                        read_defaults(v, &p, lua_gettop(L), &d, set, code);
                        if (!v->failed)
                            check_defaults(v, &p, &d, set, set[1]);
                        if (!v->failed) {
                            c->arch_defaults[c->n_arch_defaults] = d;
                            c->arch_default_codes[c->n_arch_defaults++] = code;
                            arch_codes_seen[n_seen] = code;
                            arch_set_est[n_seen++] = set[4];
                        }
                    }
                }
                lua_pop(L, 1);
            }
        }
    }
    lua_pop(L, 1);

    /* a 4-bit default must not reach a Hopper arch of the fleet */
    if (!v->failed && c->defaults.est_bits == 4)
        for (int i = 0; i < c->fleet.n_archs && !v->failed; i++) {
            int a = c->fleet.archs[i], overridden = 0;
            for (int j = 0; j < n_seen; j++)
                overridden |= arch_codes_seen[j] == a && arch_set_est[j];
            if (is_hopper(a) && !overridden) {
                vpath p = vpath_of(&dp, "est_bits");
                FAIL(v, &p, "defaults.est_bits = 4 would apply to %s of the fleet, where int4 mma is emulated: set arch.%s.est_bits = 8",
                     arch_to_name(a), arch_to_name(a));
            }
        }

    lua_pushstring(L, "tuning");
    if (!v->failed && lua_rawget(L, data) != LUA_TNIL)
        read_tuning(v, lua_gettop(L), &c->tuning);
    lua_pop(L, 1);

    lua_pushstring(L, "thresholds");
    if (!v->failed && lua_rawget(L, data) != LUA_TNIL) {
        cfg_threshold *th = NULL;
        int n = 0;
        read_thresholds(v, lua_gettop(L), &th, &n);
        if (!v->failed) {
            c->thresholds = th;
            c->n_thresholds = n;
        }
    }
    lua_pop(L, 1);

    /* the library's own rules over every fleet combination, where linked;
     * duplicates dropped and the count bounded first (16 copies in each of
     * 8 lists would be 4.3e9 combinations to check) */
    if (!v->failed && sale_key_validate) {
        const cfg_fleet *f = &c->fleet;
        vpath fp = vpath_of(NULL, "fleet");
        char nerr[512];
        if (cfg_fleet_normalize(&c->fleet, nerr, sizeof nerr) != 0) {
            FAIL(v, &fp, "%s", nerr);
            return;
        }
        for (int a = 0; a < f->n_archs; a++)
            for (int h = 0; h < f->n_head_dims; h++)
                for (int fa = 0; fa < f->n_families; fa++)
                    for (int q = 0; q < f->n_block_qs; q++)
                        for (int k = 0; k < f->n_block_ks; k++)
                            for (int s = 0; s < f->n_block_segs; s++)
                                for (int w = 0; w < f->n_local_windows; w++)
                                    for (int d = 0; d < f->n_dtypes; d++) {
                                        sale_key key;
                                        memset(&key, 0, sizeof key);
                                        key.family = f->families[fa];
                                        key.head_dim = f->head_dims[h];
                                        key.block_q = f->block_qs[q];
                                        key.block_k = f->block_ks[k];
                                        key.block_seg = f->block_segs[s];
                                        key.local_window = f->local_windows[w];
                                        key.dtype = f->dtypes[d];
                                        key.causal = 1;
                                        key.arch = f->archs[a];
                                        char kerr[256];
                                        kerr[0] = 0;
                                        if (sale_key_validate(&key, kerr, sizeof kerr) != SALE_OK) {
                                            FAIL(v, &fp, "fleet: the combination %s, head_dim %d, %s, block_q %d, block_k %d, block_seg %d, local_window %d is refused: %s",
                                                 arch_to_name(key.arch), key.head_dim, family_names[key.family],
                                                 key.block_q, key.block_k, key.block_seg, key.local_window, kerr);
                                            return;
                                        }
                                    }
    }
}

/* ---------------------------------------------------------------- load */

typedef struct load_job {
    const char *chunkname; /* "@name" */
    const char *display;
    const char *text;
    size_t len;
    sale_config *cfg;
    char *err;
    size_t errlen;
    int invalid; /* validation failed (SALE_ERR_INVALID) */
} load_job;

/* Everything that touches Lua runs here, under lua_pcall. */
static int cfg_main(lua_State *L)
{
    load_job *job = lua_touserdata(L, 1);
    lua_settop(L, 0);
    sbx_setup(L); /* 1 env, 2 data, 3 lines */
    if (luaL_loadbufferx(L, job->text, job->len, job->chunkname, "t") != LUA_OK)
        return lua_error(L);
    lua_pushvalue(L, 1);
    if (!lua_setupvalue(L, -2, 1))
        lua_pop(L, 1);
    void *ud;
    lua_getallocf(L, &ud);
    sbx *s = ud;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &s->deadline);
    s->deadline.tv_sec += (time_t)SBX_WALL_LIMIT_S;
    s->armed = 1;
    s->instr = 0;
    /* coroutines created by the chunk inherit this hook */
    lua_sethook(L, sbx_hook, LUA_MASKCOUNT | LUA_MASKCALL, SBX_HOOK_EVERY);
    int base = lua_gettop(L) - 1;
    lua_call(L, 0, LUA_MULTRET);
    lua_sethook(L, NULL, 0, 0);
    s->armed = 0; /* what follows is ours: validation */
    /* `return { fleet = ..., cache = ... }` is the same as setting those globals */
    if (lua_gettop(L) > base) {
        if (lua_type(L, base + 1) == LUA_TTABLE) {
            lua_pushnil(L);
            while (lua_next(L, base + 1)) {
                if (lua_type(L, -2) != LUA_TSTRING)
                    return luaL_error(L, "%s: the returned table has a non-string key (%s)", job->display,
                                      luaL_typename(L, -2));
                lua_pushvalue(L, -2);
                if (lua_rawget(L, 2) != LUA_TNIL)
                    return luaL_error(L, "%s: %s is both set as a global and in the returned table", job->display,
                                      lua_tostring(L, -3));
                lua_pop(L, 1);
                lua_pushvalue(L, -2);
                lua_insert(L, -2);
                lua_rawset(L, 2);
            }
        } else if (!lua_isnil(L, base + 1)) {
            return luaL_error(L, "%s: a config returns a table of settings or nothing, not a %s", job->display,
                              luaL_typename(L, base + 1));
        }
        lua_settop(L, base);
    }

    vctx v = {.L = L, .name = job->display, .src = job->text, .srclen = job->len, .data_idx = 2, .lines_idx = 3,
              .err = job->err, .errlen = job->errlen};
    validate(&v, job->cfg);
    job->invalid = v.failed;
    return 0;
}

static int dedup_ints(int *v, int n)
{
    int m = 0;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < m && !seen; j++)
            seen = v[j] == v[i];
        if (!seen)
            v[m++] = v[i];
    }
    return m;
}

int cfg_fleet_normalize(cfg_fleet *f, char *err, size_t errlen)
{
    f->n_archs = dedup_ints(f->archs, f->n_archs);
    f->n_head_dims = dedup_ints(f->head_dims, f->n_head_dims);
    f->n_families = dedup_ints((int *)f->families, f->n_families);
    f->n_dtypes = dedup_ints((int *)f->dtypes, f->n_dtypes);
    f->n_block_qs = dedup_ints(f->block_qs, f->n_block_qs);
    f->n_block_ks = dedup_ints(f->block_ks, f->n_block_ks);
    f->n_block_segs = dedup_ints(f->block_segs, f->n_block_segs);
    f->n_local_windows = dedup_ints(f->local_windows, f->n_local_windows);
    if (f->n_thrs < 1) /* a fleet built by hand before thr existed: run */
        f->thrs[f->n_thrs++] = SALE_THR_RUN;
    f->n_thrs = dedup_ints(f->thrs, f->n_thrs);
    double combos = (double)f->n_archs * f->n_head_dims * f->n_families * f->n_dtypes * f->n_block_qs *
                    f->n_block_ks * f->n_block_segs * f->n_local_windows * f->n_thrs;
    if (combos > CFG_MAX_COMBINATIONS) {
        if (err && errlen)
            snprintf(err, errlen,
                     "fleet: %.0f combinations (%d archs x %d head_dims x %d families x %d dtypes x %d block_q x "
                     "%d block_k x %d block_seg x %d local_window x %d thr) is more than %d; narrow the lists",
                     combos, f->n_archs, f->n_head_dims, f->n_families, f->n_dtypes, f->n_block_qs, f->n_block_ks,
                     f->n_block_segs, f->n_local_windows, f->n_thrs, CFG_MAX_COMBINATIONS);
        return -1;
    }
    return 0;
}

sale_status cfg_load_string(const char *chunkname, const char *text, sale_config *cfg, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = 0;
    if (!chunkname || !chunkname[0])
        chunkname = "sale.lua";
    if (!text || !cfg) {
        snprintf(err, errlen, "%s: no text or no config", chunkname);
        return SALE_ERR_INVALID;
    }
    const char *display = (chunkname[0] == '@' || chunkname[0] == '=') ? chunkname + 1 : chunkname;
    size_t cl = strlen(display) + 2;
    char *cn = malloc(cl);
    if (!cn) {
        snprintf(err, errlen, "%s: out of memory", display);
        return SALE_ERR_NOMEM;
    }
    snprintf(cn, cl, "@%s", display);

    sbx s = {.limit = SBX_MEM_LIMIT};
    lua_State *L = lua_newstate(sbx_alloc, &s);
    if (!L) {
        free(cn);
        snprintf(err, errlen, "%s: cannot create a Lua state", display);
        return SALE_ERR_NOMEM;
    }
    /* Work on a copy; the caller's config changes only on success. */
    sale_config tmp = *cfg;
    tmp.thresholds = NULL;
    tmp.n_thresholds = 0;
    tmp.n_arch_defaults = 0;
    load_job job = {.chunkname = cn, .display = display, .text = text, .len = strlen(text), .cfg = &tmp,
                    .err = err, .errlen = errlen};
    sale_status st = SALE_OK;
    lua_pushcfunction(L, cfg_main);
    lua_pushlightuserdata(L, &job);
    int rc = lua_pcall(L, 1, 0, 0);
    if (rc != LUA_OK) {
        if (s.wall_hit && s.wall_line > 0)
            snprintf(err, errlen, "%s:%d: limit exceeded: wall-clock %d s in the config sandbox", display,
                     s.wall_line, (int)SBX_WALL_LIMIT_S);
        else if (s.wall_hit)
            snprintf(err, errlen, "%s: limit exceeded: wall-clock %d s in the config sandbox", display,
                     (int)SBX_WALL_LIMIT_S);
        else if ((rc == LUA_ERRMEM || s.mem_hit) && s.last_line > 0)
            snprintf(err, errlen, "%s:%d: memory limit exceeded (%u MB) in the config sandbox", display, s.last_line,
                     (unsigned)(SBX_MEM_LIMIT >> 20));
        else if (rc == LUA_ERRMEM || s.mem_hit)
            snprintf(err, errlen, "%s: memory limit exceeded (%u MB) in the config sandbox", display,
                     (unsigned)(SBX_MEM_LIMIT >> 20));
        else {
            const char *m = lua_tostring(L, -1);
            if (s.time_hit && (!m || !strstr(m, "limit exceeded")))
                snprintf(err, errlen, "%s: time limit exceeded in the config sandbox", display);
            else if (m)
                snprintf(err, errlen, "%s", m);
            else /* error({}) has no position to give: name the file at least */
                snprintf(err, errlen, "%s: error raised with a %s value, not a message", display,
                         luaL_typename(L, -1));
        }
        st = SALE_ERR_LUA;
    } else if (job.invalid) {
        st = SALE_ERR_INVALID;
    } else if (cfg_fleet_normalize(&tmp.fleet, err, errlen) != 0) {
        size_t ml = strlen(err);
        if (ml + strlen(display) + 3 < errlen) {
            memmove(err + strlen(display) + 2, err, ml + 1);
            memcpy(err, display, strlen(display));
            memcpy(err + strlen(display), ": ", 2);
        }
        st = SALE_ERR_INVALID;
    }
    lua_close(L);
    free(cn);
    if (st != SALE_OK) {
        free(tmp.thresholds);
        return st;
    }
    if (tmp.n_thresholds == 0 && cfg->thresholds) {
        /* thresholds not set by this file: keep the caller's */
        tmp.thresholds = cfg->thresholds;
        tmp.n_thresholds = cfg->n_thresholds;
    } else {
        free(cfg->thresholds);
    }
    if (tmp.n_arch_defaults == 0) {
        tmp.n_arch_defaults = cfg->n_arch_defaults;
    }
    snprintf(tmp.path, sizeof tmp.path, "%s", display);
    *cfg = tmp;
    return SALE_OK;
}

sale_status cfg_load(const char *path, sale_config *cfg, char *err, size_t errlen)
{
    if (!path) {
        snprintf(err, errlen, "config: no path");
        return SALE_ERR_INVALID;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return SALE_ERR_IO;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += r;
        if (len + 1 == cap) {
            if (cap >= (16u << 20))
                break;
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    int ferr = ferror(f);
    fclose(f);
    if (!buf) {
        snprintf(err, errlen, "%s: out of memory", path);
        return SALE_ERR_NOMEM;
    }
    if (ferr) {
        free(buf);
        snprintf(err, errlen, "%s: read error", path);
        return SALE_ERR_IO;
    }
    if (len + 1 == cap) {
        free(buf);
        snprintf(err, errlen, "%s: larger than 16 MB", path);
        return SALE_ERR_INVALID;
    }
    buf[len] = 0;
    if (memchr(buf, 0, len)) {
        free(buf);
        snprintf(err, errlen, "%s: not a text file (binary chunks are not accepted)", path);
        return SALE_ERR_INVALID;
    }
    sale_status st = cfg_load_string(path, buf, cfg, err, errlen);
    free(buf);
    return st;
}
