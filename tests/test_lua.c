/* test_lua.c — the Lua layer: the config file (loading, sandbox, validation
 * messages with file:line), and scripts run through lsale_run_script on the
 * CPU reference (the examples included, their output checked). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "sale.h"

#ifndef SALE_SOURCE_DIR
#define SALE_SOURCE_DIR "."
#endif

#ifdef __SANITIZE_ADDRESS__
/* Under ASan a malloc beyond its limit aborts the run instead of returning
 * NULL; the out-of-memory paths of the scripts are tested here. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }
#endif

static char g_dir[256];
static char g_err[8192];

static void make_dir(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/sale_lua_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}

static void remove_dir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    int rc = system(cmd);
    (void)rc;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t r = fread(b, 1, (size_t)n, f);
    b[r] = 0;
    fclose(f);
    return b;
}

/* Loads a config text as "sale.lua"; returns the status, message in g_err. */
static sale_status load_text(const char *text, sale_config *cfg)
{
    cfg_defaults_init(cfg);
    g_err[0] = 0;
    return cfg_load_string("sale.lua", text, cfg, g_err, sizeof g_err);
}

/* ------------------------------------------------------------- loading */

TestSuite(config, .init = make_dir, .fini = remove_dir);

Test(config, every_field_of_a_good_file_is_applied)
{
    char path[512];
    snprintf(path, sizeof path, "%s/sale.lua", g_dir);
    write_file(path, "cache = { path = '/var/cache/sale/kernels.db', fleet = '/opt/sale/fleet.db' }\n"
                     "defaults = { block_q = 128, block_k = 64, block_seg = 256, local_window = 192,\n"
                     "             tau = 0.01, dense_below = 2048, est_bits = 8 }\n"
                     "arch = { sm_90 = { est_bits = 8, block_k = 32, block_seg = 128, local_window = 128 },\n"
                     "         sm_89 = { est_bits = 4 } }\n"
                     "fleet = { archs = {'sm_89','sm_90'}, head_dims = {128}, families = {'fused','dense'},\n"
                     "          dtypes = {'f16'}, block_q = {64,128}, block_k = {16,32}, block_seg = {64,128},\n"
                     "          local_window = {64} }\n"
                     "tuning = { warps = {4,8,16}, stages = {2,3}, budget_s = 90, strategy = 'halving' }\n"
                     "thresholds = { ['llama-3.1-8b'] = { [0] = {0.004, 0.002}, [1] = {0.001} } }\n");
    sale_config c;
    cfg_defaults_init(&c);
    sale_status st = cfg_load(path, &c, g_err, sizeof g_err);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_str_eq(c.path, path);
    cr_expect_str_eq(c.cache_path, "/var/cache/sale/kernels.db");
    cr_expect_str_eq(c.fleet_cache, "/opt/sale/fleet.db");
    cr_expect_eq(c.defaults.block_q, 128);
    cr_expect_eq(c.defaults.block_k, 64);
    cr_expect_eq(c.defaults.block_seg, 256);
    cr_expect_eq(c.defaults.local_window, 192);
    cr_expect_float_eq(c.defaults.tau, 0.01f, 1e-7);
    cr_expect_eq(c.defaults.dense_below, 2048);
    cr_expect_eq(c.defaults.est_bits, 8);
    cr_assert_eq(c.n_arch_defaults, 2);
    for (int i = 0; i < 2; i++) {
        const cfg_defaults *d = &c.arch_defaults[i];
        if (c.arch_default_codes[i] == 90) {
            cr_expect_eq(d->block_k, 32);
            cr_expect_eq(d->block_seg, 128);
            cr_expect_eq(d->block_q, 128, "arch overrides sit on top of the defaults");
            cr_expect_eq(d->est_bits, 8);
        } else {
            cr_expect_eq(c.arch_default_codes[i], 89);
            cr_expect_eq(d->est_bits, 4);
            cr_expect_eq(d->block_k, 64);
        }
    }
    cr_expect_eq(c.fleet.n_archs, 2);
    cr_expect_eq(c.fleet.archs[0], 89);
    cr_expect_eq(c.fleet.archs[1], 90);
    cr_expect_eq(c.fleet.n_head_dims, 1);
    cr_expect_eq(c.fleet.head_dims[0], 128);
    cr_expect_eq(c.fleet.n_families, 2);
    cr_expect_eq(c.fleet.families[0], SALE_FAMILY_FUSED);
    cr_expect_eq(c.fleet.families[1], SALE_FAMILY_DENSE);
    cr_expect_eq(c.fleet.n_dtypes, 1);
    cr_expect_eq(c.fleet.dtypes[0], SALE_DTYPE_F16);
    cr_expect_eq(c.fleet.n_block_qs, 2);
    cr_expect_eq(c.fleet.n_block_ks, 2);
    cr_expect_eq(c.fleet.block_ks[1], 32);
    cr_expect_eq(c.fleet.n_block_segs, 2);
    cr_expect_eq(c.fleet.n_local_windows, 1);
    cr_expect_eq(c.fleet.local_windows[0], 64);
    cr_expect_eq(c.tuning.n_warps, 3);
    cr_expect_eq(c.tuning.warps[2], 16);
    cr_expect_eq(c.tuning.n_stages, 2);
    cr_expect_float_eq(c.tuning.budget_s, 90.0, 1e-9);
    cr_expect_str_eq(c.tuning.strategy, "halving");
    cr_assert_eq(c.n_thresholds, 3);
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        const cfg_threshold *t = &c.thresholds[i];
        cr_expect_str_eq(t->model, "llama-3.1-8b");
        if (t->layer == 0 && t->head == 1) {
            cr_expect_float_eq(t->tau, 0.002f, 1e-7);
            seen++;
        }
        if (t->layer == 1 && t->head == 0) {
            cr_expect_float_eq(t->tau, 0.001f, 1e-7);
            seen++;
        }
    }
    cr_expect_eq(seen, 2);
    cfg_free(&c);
}

Test(config, defaults_without_a_file)
{
    sale_config c;
    cfg_defaults_init(&c);
    cr_expect_eq(c.fleet.n_archs, 4);
    cr_expect_eq(c.fleet.n_head_dims, 2);
    cr_expect_eq(c.fleet.n_families, SALE_FAMILY_PLAIN, "every family but plain (version 0) by default");
    cr_expect_eq(c.fleet.n_dtypes, 2);
    cr_expect_eq(c.defaults.block_q, 64);
    cr_expect_eq(c.defaults.block_k, 32);
    cr_expect_eq(c.defaults.block_seg, 128);
    cr_expect_eq(c.path[0], 0);
    /* an empty file changes nothing */
    cr_assert_eq(load_text("-- nothing here\n", &c), SALE_OK, "%s", g_err);
    cr_expect_eq(c.fleet.n_archs, 4);
    cfg_free(&c);
}

Test(config, helpers_locals_and_text_load_are_allowed)
{
    sale_config c;
    sale_status st = load_text("local function pow2(n) local t = {} for i = 0, n do t[#t+1] = 16 << i end return t end\n"
                               "local f = load('return 0.002')\n"
                               "local home = os.getenv('HOME')\n"
                               "defaults = { tau = f(), block_k = pow2(2)[2] }\n"
                               "fleet = { block_k = 16, head_dims = 64 }\n",
                               &c);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_float_eq(c.defaults.tau, 0.002f, 1e-7);
    cr_expect_eq(c.defaults.block_k, 32);
    cr_expect_eq(c.fleet.n_block_ks, 1, "a single value stands for a list of one");
    cr_expect_eq(c.fleet.head_dims[0], 64);
    cfg_free(&c);
}

Test(config, a_failed_load_leaves_the_config_untouched)
{
    sale_config c;
    cr_assert_eq(load_text("defaults = { block_k = 64 }\nfleet = { archs = {'sm_99'} }\n", &c), SALE_ERR_INVALID);
    cr_expect_eq(c.defaults.block_k, 32);
    cr_expect_eq(c.fleet.n_archs, 4);
    cfg_free(&c);
}

Test(config, found_by_flag_then_env_then_xdg)
{
    char a[512], b[512], xdg[512], out[512], err[512];
    snprintf(a, sizeof a, "%s/a.lua", g_dir);
    snprintf(b, sizeof b, "%s/b.lua", g_dir);
    snprintf(xdg, sizeof xdg, "%s/sale", g_dir);
    mkdir(xdg, 0755);
    strncat(xdg, "/sale.lua", sizeof xdg - strlen(xdg) - 1);
    write_file(a, "");
    write_file(b, "");
    write_file(xdg, "");
    setenv("XDG_CONFIG_HOME", g_dir, 1);
    setenv("SALE_CONFIG", b, 1);
    cr_expect_eq(cfg_find(a, out, sizeof out, err, sizeof err), 1);
    cr_expect_str_eq(out, a);
    cr_expect_eq(cfg_find(NULL, out, sizeof out, err, sizeof err), 1);
    cr_expect_str_eq(out, b);
    unsetenv("SALE_CONFIG");
    cr_expect_eq(cfg_find(NULL, out, sizeof out, err, sizeof err), 1);
    cr_expect_str_eq(out, xdg);
    unlink(xdg);
    cr_expect_eq(cfg_find(NULL, out, sizeof out, err, sizeof err), 0, "no file: defaults");
    char missing[512];
    snprintf(missing, sizeof missing, "%s/missing.lua", g_dir);
    cr_expect_eq(cfg_find(missing, out, sizeof out, err, sizeof err), -1);
    cr_expect(strstr(err, "missing.lua") != NULL, "%s", err);
    setenv("SALE_CONFIG", missing, 1);
    cr_expect_eq(cfg_find(NULL, out, sizeof out, err, sizeof err), -1, "a named but missing $SALE_CONFIG is an error");
    unsetenv("SALE_CONFIG");
}

/* ------------------------------------------------------------- sandbox */

static void expect_refused(const char *text, const char *message)
{
    sale_config c;
    sale_status st = load_text(text, &c);
    cr_expect_eq(st, SALE_ERR_LUA, "%s -> %s", text, g_err);
    cr_expect_str_eq(g_err, message, "for: %s", text);
    cfg_free(&c);
}

Test(sandbox, io_is_refused) { expect_refused("local f = io.open('/etc/passwd')\n", "sale.lua:1: io is not available in the config sandbox"); }
Test(sandbox, os_execute_is_refused)
{
    expect_refused("defaults = {}\n\nos.execute('touch /tmp/pwned')\n",
                   "sale.lua:3: os.execute is not available in the config sandbox");
}
Test(sandbox, os_remove_is_refused) { expect_refused("os.remove('x')", "sale.lua:1: os.remove is not available in the config sandbox"); }
Test(sandbox, require_is_refused) { expect_refused("local s = require('socket')", "sale.lua:1: require is not available in the config sandbox"); }
Test(sandbox, package_is_refused) { expect_refused("package.loadlib('x', 'y')", "sale.lua:1: package is not available in the config sandbox"); }
Test(sandbox, debug_is_refused) { expect_refused("debug.sethook()", "sale.lua:1: debug is not available in the config sandbox"); }
Test(sandbox, dofile_is_refused) { expect_refused("dofile('/etc/sale.lua')", "sale.lua:1: dofile is not available in the config sandbox"); }
Test(sandbox, loadfile_is_refused) { expect_refused("loadfile('/etc/sale.lua')", "sale.lua:1: loadfile is not available in the config sandbox"); }
Test(sandbox, collectgarbage_is_refused) { expect_refused("collectgarbage('stop')", "sale.lua:1: collectgarbage is not available in the config sandbox"); }
Test(sandbox, print_is_refused) { expect_refused("print('hi')", "sale.lua:1: print is not available in the config sandbox"); }
Test(sandbox, string_dump_is_refused)
{
    expect_refused("local s = string.dump(function() end)", "sale.lua:1: string.dump is not available in the config sandbox");
    expect_refused("local s = ('x'):dump()", "sale.lua:1: string.dump is not available in the config sandbox");
}
Test(sandbox, binary_chunks_are_refused)
{
    expect_refused("local f = load('\\27Lua\\84\\0')", "sale.lua:1: load of binary chunks is not available in the config sandbox");
}
Test(sandbox, loaded_text_sees_the_sandbox_too)
{
    sale_config c;
    cr_expect_eq(load_text("local f = load('return io')\nf()", &c), SALE_ERR_LUA);
    cr_expect_str_eq(g_err, "[string \"return io\"]:1: io is not available in the config sandbox");
}
Test(sandbox, infinite_loop_hits_the_time_limit)
{
    sale_config c;
    cr_expect_eq(load_text("local x = 0\nwhile true do x = x + 1 end\n", &c), SALE_ERR_LUA);
    cr_expect(strstr(g_err, "sale.lua:2: time limit exceeded") == g_err, "%s", g_err);
    cr_expect(strstr(g_err, "config sandbox") != NULL, "%s", g_err);
}
Test(sandbox, huge_allocation_hits_the_memory_limit)
{
    sale_config c;
    cr_expect_eq(load_text("local s = string.rep('x', 1 << 30)\n", &c), SALE_ERR_LUA);
    cr_expect_str_eq(g_err, "sale.lua: memory limit exceeded (64 MB) in the config sandbox");
    /* a loop that fills memory is named by its line (the docs audit: no line was given) */
    cr_expect_eq(load_text("local t = {} for i = 1, 1e9 do t[i] = {i} end\n", &c), SALE_ERR_LUA);
    cr_expect_str_eq(g_err, "sale.lua:1: memory limit exceeded (64 MB) in the config sandbox");
    cr_expect_eq(load_text("local t = {}\nlocal n = 0\nwhile true do\n  n = n + 1\n  t[n] = {n, n}\nend\n", &c),
                 SALE_ERR_LUA);
    cr_expect(strstr(g_err, "sale.lua:4: memory limit") == g_err || strstr(g_err, "sale.lua:5: memory limit") == g_err,
              "%s", g_err);
}
Test(sandbox, syntax_and_runtime_errors_name_file_and_line)
{
    sale_config c;
    cr_expect_eq(load_text("defaults = {\n  block_q = 64\n  block_k = 32,\n}\n", &c), SALE_ERR_LUA);
    cr_expect(strncmp(g_err, "sale.lua:3:", 11) == 0, "%s", g_err);
    cr_expect_eq(load_text("\n\nerror('no fleet for you')\n", &c), SALE_ERR_LUA);
    cr_expect_str_eq(g_err, "sale.lua:3: no fleet for you");
}

/* ---------------------------------------------------------- validation */

static void expect_invalid(const char *text, const char *message)
{
    sale_config c;
    sale_status st = load_text(text, &c);
    cr_expect_eq(st, SALE_ERR_INVALID, "%s -> %s", text, g_err);
    cr_expect_str_eq(g_err, message, "for:\n%s", text);
    cfg_free(&c);
}

Test(validation, block_k_not_a_multiple_of_16_names_line_and_field)
{
    expect_invalid("-- fleet\n"
                   "fleet = {\n"
                   "  archs = { 'sm_90' },\n"
                   "  block_k = { 32,\n"
                   "              24 },\n"
                   "}\n",
                   "sale.lua:4: fleet.block_k[2] must be 16, 32 or 64, got 24");
    expect_invalid("\n\ndefaults = { block_q = 64,\n  block_k = 24 }\n",
                   "sale.lua:4: defaults.block_k must be 16, 32 or 64, got 24");
}

Test(validation, each_rule_has_its_message)
{
    expect_invalid("defaults = { block_seg = 80 }", "sale.lua:1: defaults.block_seg must be a multiple of block_k (32, from defaults), got 80");
    expect_invalid("defaults = {\n block_seg = 2048 }",
                   "sale.lua:2: defaults.block_seg must span at most 32 blocks of block_k (32, from defaults), got 2048 (64 blocks)");
    expect_invalid("defaults = { local_window = 100 }",
                   "sale.lua:1: defaults.local_window must be a non-negative multiple of block_k (32, from defaults), got 100");
    expect_invalid("defaults = { block_q = 32 }", "sale.lua:1: defaults.block_q must be 64 or 128, got 32");
    expect_invalid("defaults = { tau = 0 }", "sale.lua:1: defaults.tau must be in (0, 1), got 0");
    expect_invalid("defaults = { tau = 1.5 }", "sale.lua:1: defaults.tau must be in (0, 1), got 1.5");
    expect_invalid("defaults = { tau = 'small' }", "sale.lua:1: defaults.tau must be a number, got string");
    expect_invalid("defaults = { block_q = 64.5 }", "sale.lua:1: defaults.block_q must be an integer, got 64.5");
    expect_invalid("fleet = { head_dims = { 64, 256 } }", "sale.lua:1: fleet.head_dims[2] must be 64 or 128, got 256");
    expect_invalid("fleet = { archs = { 'sm_75' } }",
                   "sale.lua:1: fleet.archs[1]: unknown architecture 'sm_75' (known: sm_80, sm_86, sm_89, sm_90)");
    expect_invalid("fleet = { families = { 'fused', 'sparse' } }",
                   "sale.lua:1: fleet.families[2]: unknown family 'sparse' (known: quantize, fused, select, attend, dense)");
    expect_invalid("fleet = { dtypes = { 'fp8' } }", "sale.lua:1: fleet.dtypes[1]: unknown dtype 'fp8' (known: bf16, f16)");
    expect_invalid("fleet = { block_k = {32, 64}, block_seg = {96} }",
                   "sale.lua:1: fleet.block_seg[1] must be a multiple of block_k (64, from fleet.block_k), got 96");
    expect_invalid("fleet = { archs = {} }", "sale.lua:1: fleet.archs must not be empty");
    expect_invalid("tuning = {\n  budget_s = 0 }", "sale.lua:2: tuning.budget_s must be a positive number of seconds, got 0");
    expect_invalid("tuning = { budget_s = 1/0 }", "sale.lua:1: tuning.budget_s must be a positive number of seconds, got inf");
    expect_invalid("tuning = { strategy = 'greedy' }",
                   "sale.lua:1: tuning.strategy must be \"exhaustive\", \"halving\" or \"random\", got \"greedy\"");
    expect_invalid("tuning = { warps = { 4, 3 } }", "sale.lua:1: tuning.warps[2] must be 1, 2, 4, 8 or 16, got 3");
    expect_invalid("cache = { path = 42 }", "sale.lua:1: cache.path must be a string, got number");
    expect_invalid("thresholds = {\n  ['llama-3.1-8b'] = {\n    [0] = { 0.004, 1.5 } } }",
                   "sale.lua:3: thresholds[\"llama-3.1-8b\"][0][2] must be in [0, 1), got 1.5");
}

Test(validation, four_bit_estimation_is_refused_on_hopper)
{
    expect_invalid("arch = {\n  sm_89 = { est_bits = 4 },\n  sm_90 = {\n    est_bits = 4 } }",
                   "sale.lua:4: arch.sm_90.est_bits = 4 is refused on sm_90: int4 mma is emulated there (use 8)");
    expect_invalid("defaults = { est_bits = 4 }",
                   "sale.lua:1: defaults.est_bits = 4 would apply to sm_90 of the fleet, where int4 mma is emulated: "
                   "set arch.sm_90.est_bits = 8");
    sale_config c;
    cr_expect_eq(load_text("defaults = { est_bits = 4 }\narch = { sm_90 = { est_bits = 8 } }\n", &c), SALE_OK, "%s",
                 g_err);
    cfg_free(&c);
}

Test(validation, unknown_top_level_keys_are_named)
{
    expect_invalid("defaults = {}\n\nfleeet = { archs = {'sm_90'} }\n",
                   "sale.lua:3: unknown setting 'fleeet' (known: cache, defaults, arch, fleet, tuning, thresholds; use `local` "
                   "for helpers)");
}

Test(validation, unknown_nested_keys_are_named)
{
    expect_invalid("fleet = {\n  archs = {'sm_90'},\n  blockk = {32},\n}\n",
                   "sale.lua:3: fleet: unknown field 'blockk' (known: archs, head_dims, families, dtypes, block_q, "
                   "block_k, block_seg, local_window, thr)");
    expect_invalid("defaults = { taus = 0.1 }",
                   "sale.lua:1: defaults: unknown field 'taus' (known: block_q, block_k, block_seg, local_window, "
                   "est_bits, dense_below, tau, thr)");
    expect_invalid("arch = { sm_91 = {} }",
                   "sale.lua:1: arch: unknown architecture 'sm_91' (known: sm_80, sm_86, sm_89, sm_90, sm_90a)");
    expect_invalid("tuning = { budget = 10 }",
                   "sale.lua:1: tuning: unknown field 'budget' (known: warps, stages, budget_s, strategy)");
    expect_invalid("cache = { dir = '/tmp' }", "sale.lua:1: cache: unknown field 'dir' (known: path, fleet)");
}

Test(validation, a_file_path_is_named_in_messages)
{
    char path[512];
    snprintf(path, sizeof path, "%s/sale.lua", g_dir);
    write_file(path, "-- a\n-- b\ndefaults = { block_k = 24 }\n");
    sale_config c;
    cfg_defaults_init(&c);
    cr_assert_eq(cfg_load(path, &c, g_err, sizeof g_err), SALE_ERR_INVALID);
    char want[700];
    snprintf(want, sizeof want, "%s:3: defaults.block_k must be 16, 32 or 64, got 24", path);
    cr_expect_str_eq(g_err, want);
    cfg_free(&c);
}

/* ------------------------------------------------------------ examples */

Test(examples, fleet_lua_loads_through_cfg_load)
{
    sale_config c;
    cfg_defaults_init(&c);
    sale_status st = cfg_load(SALE_SOURCE_DIR "/examples/fleet.lua", &c, g_err, sizeof g_err);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_eq(c.fleet.n_archs, 4);
    cr_expect_eq(c.n_arch_defaults, 4);
    cr_expect_str_eq(c.tuning.strategy, "halving");
    cr_expect_gt(c.n_thresholds, 1000);
    cr_expect_str_eq(c.fleet_cache, "/opt/sale/fleet.db");
    cfg_free(&c);
}

Test(examples, every_example_script_parses)
{
    const char *names[] = {"fleet.lua", "explore_blocks.lua", "needles.lua", "kernel_info.lua"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/examples/%s", SALE_SOURCE_DIR, names[i]);
        lua_State *L = luaL_newstate();
        int rc = luaL_loadfilex(L, path, "t");
        cr_expect_eq(rc, LUA_OK, "%s: %s", path, lua_tostring(L, -1));
        lua_close(L);
    }
}

/* -------------------------------------------------------------- scripts */

static sale_ctx *g_ctx;

static void script_init(void)
{
    make_dir();
    sale_options o = {0};
    o.cache_path = ":memory:";
    sale_status st = sale_create(&g_ctx, &o);
    cr_assert_eq(st, SALE_OK, "sale_create: %s", g_ctx ? sale_last_error(g_ctx) : "");
}

static void script_fini(void)
{
    sale_destroy(g_ctx);
    remove_dir();
}

/* Runs a script with stdout captured into *out (heap). */
static sale_status run_captured(const char *path, int argc, char **argv, char **out)
{
    char cap[512];
    snprintf(cap, sizeof cap, "%s/stdout.txt", g_dir);
    fflush(stdout);
    int saved = dup(1);
    int fd = open(cap, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(saved >= 0 && fd >= 0);
    dup2(fd, 1);
    close(fd);
    g_err[0] = 0;
    sale_status st = lsale_run_script(g_ctx, path, argc, argv, g_err, sizeof g_err);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    *out = read_file(cap);
    cr_assert_not_null(*out);
    return st;
}

static sale_status run_text(const char *text, int argc, char **argv, char **out)
{
    char path[512];
    snprintf(path, sizeof path, "%s/script.lua", g_dir);
    write_file(path, text);
    return run_captured(path, argc, argv, out);
}

static int count_lines(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

TestSuite(scripts, .init = script_init, .fini = script_fini, .timeout = 600);

Test(scripts, an_error_returns_file_line_and_a_traceback)
{
    char path[512], *out;
    snprintf(path, sizeof path, "%s/err.lua", g_dir);
    write_file(path, "local function f()\n  local t = nil\n  return t.x\nend\nf()\n");
    sale_status st = run_captured(path, 0, NULL, &out);
    cr_expect_eq(st, SALE_ERR_LUA);
    char want[600];
    snprintf(want, sizeof want, "%s:3: attempt to index a nil value", path);
    cr_expect(strstr(g_err, want) == g_err, "%s", g_err);
    cr_expect(strstr(g_err, "stack traceback:") != NULL, "%s", g_err);
    cr_expect(strstr(g_err, "err.lua:5:") != NULL, "the traceback names the caller: %s", g_err);
    free(out);
}

Test(scripts, library_errors_become_lua_errors_with_the_reason)
{
    char *out;
    sale_status st = run_text("local q, k, v = sale.generate{N = 256, D = 64, Hq = 2, Hkv = 1}\n"
                              "local ok, e = pcall(sale.reference, {q = q, k = k, v = v, block_k = 24})\n"
                              "assert(not ok)\n"
                              "print(e)\n"
                              "sale.reference{q = q, k = k, v = v, block_seg = 48}\n",
                              0, NULL, &out);
    cr_expect_eq(st, SALE_ERR_LUA);
    cr_expect(strstr(out, "block_k") != NULL, "%s", out);
    cr_expect(strstr(g_err, "script.lua:5:") != NULL, "%s", g_err);
    cr_expect(strstr(g_err, "block_seg") != NULL, "%s", g_err);
    free(out);
}

Test(scripts, arg_and_varargs_like_the_interpreter)
{
    char *out;
    char *argv[] = {"4096", "gpu"};
    sale_status st = run_text("print(#arg, arg[1], arg[2], select('#', ...), ...)\n"
                              "print(arg[0]:match('script.lua$') ~= nil, io ~= nil, os.time() > 0)\n",
                              2, argv, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_str_eq(out, "2\t4096\tgpu\t2\t4096\tgpu\ntrue\ttrue\ttrue\n", "%s", out);
    free(out);
}

Test(scripts, reference_tensors_masks_and_metrics)
{
    char *out;
    sale_status st = run_text(
        "local q, k, v, needles = sale.generate{B=1, Hq=2, Hkv=1, N=1024, D=64, needles=2, seed=3}\n"
        "assert(q.device == 'cpu' and q.dtype == 'bf16')\n"
        "assert(q.shape[1] == 1 and q.shape[2] == 2 and q.shape[3] == 1024 and q.shape[4] == 64)\n"
        "assert(k.shape[2] == 1 and q.bytes == 2*1024*64*2)\n"
        "assert(#needles > 0 and needles[1].key < needles[1].query)\n"
        "local ref, ds = sale.reference{q=q, k=k, v=v, mode='dense'}\n"
        "assert(ds.density == 1)\n"
        "local exact = sale.reference{q=q, k=k, v=v, tau=1e-7, dense_below=-1}\n"
        "assert(sale.rel_l1(exact, ref) < 1e-2, 'tau -> 0 is dense attention')\n"
        "local out, s, m = sale.reference{q=q, k=k, v=v, tau=0.01, dense_below=-1, block_q=64, block_k=32}\n"
        "assert(s.density > 0 and s.density < 1, s.density)\n"
        "assert(m.nqb == 16 and m.nkb == 32 and m.H == 2)\n"
        "assert(m:kept(0, 0, 15, 0), 'the sink is always kept')\n"
        "assert(m:kept(0, 1, 15, 31), 'the diagonal is always kept')\n"
        "assert(not m:kept(0, 0, 0, 31), 'above the diagonal is never kept')\n"
        "assert(m:count() == s.kept)\n"
        "local r, hit, total = sale.needle_recall(m, needles)\n"
        "assert(total == #needles and r == hit / total)\n"
        "local e = sale.rel_l1(out, ref)\n"
        "assert(e > 0 and e < 0.2, e)\n"
        "assert(sale.rel_l1(ref, ref) == 0)\n"
        "local t = sale.tensor_random{B=1, H=1, N=8, D=64, dtype='f32', seed=5}\n"
        "assert(t:get(0,0,7,63) ~= 0 and t.numel == 512)\n"
        "local ms = sale.time(function() local x = 0 for i = 1, 1000 do x = x + i end end, {warmup=1, reps=3, host=true})\n"
        "assert(ms >= 0)\n"
        "print(string.format('density %.3f recall %.2f', s.density, r))\n",
        0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect(strstr(out, "density 0.") == out, "%s", out);
    free(out);
}

/* mask:group_overlap against a brute force over mask:kept, and its bounds:
 * union <= kept <= group x union; group 1 is the plain count; a group that
 * does not divide the heads is refused. */
Test(scripts, mask_group_overlap_equals_brute_force)
{
    char *out;
    sale_status st = run_text(
        "local q, k, v = sale.generate{B=2, Hq=4, Hkv=2, N=1100, D=64, seed=9}\n"
        "local _, s, m = sale.reference{q=q, k=k, v=v, tau=0.004, dense_below=-1, block_q=64, block_k=32}\n"
        "for _, g in ipairs{1, 2, 4} do\n"
        "  local kept, union = m:group_overlap(g)\n"
        "  local bk, bu = 0, 0\n"
        "  for b = 0, m.B - 1 do for h0 = 0, m.H - 1, g do for qb = 0, m.nqb - 1 do for kb = 0, m.nkb - 1 do\n"
        "    local any = false\n"
        "    for h = h0, h0 + g - 1 do if m:kept(b, h, qb, kb) then bk = bk + 1; any = true end end\n"
        "    if any then bu = bu + 1 end\n"
        "  end end end end\n"
        "  assert(kept == bk and union == bu, string.format('g %d: %d/%d against %d/%d', g, kept, union, bk, bu))\n"
        "  assert(kept == s.kept and union <= kept and kept <= g * union)\n"
        "  if g == 1 then assert(union == kept) end\n"
        "  if g > 1 then assert(union < kept, 'the sink and the diagonal are every head\\'s') end\n"
        "end\n"
        "local ok, err = pcall(m.group_overlap, m, 3)\n"
        "assert(not ok and err:find('must divide'), err)\n"
        "print('ok')\n",
        0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect(strstr(out, "ok") == out, "%s", out);
    free(out);
}

/* Per-head tau as a list: the caller's tables are left as they were (the
 * buffer of floats used to be stored into the argument table as a field),
 * and equal per-head values give the scalar's result. */
Test(scripts, per_head_tau_leaves_the_callers_tables_alone)
{
    char *out;
    sale_status st = run_text(
        "local q, k, v = sale.generate{B=1, Hq=2, Hkv=1, N=512, D=64, seed=4}\n"
        "local args = {q=q, k=k, v=v, tau={0.01, 0.01}, dense_below=-1}\n"
        "local before = 0 for _ in pairs(args) do before = before + 1 end\n"
        "local a, sa = sale.reference(args)\n"
        "local after = 0 for kk in pairs(args) do after = after + 1 end\n"
        "assert(after == before, 'reference added fields to its argument table')\n"
        "assert(#args.tau == 2 and args.tau[1] == 0.01)\n"
        "local b, sb = sale.reference{q=q, k=k, v=v, tau=0.01, dense_below=-1}\n"
        "assert(sale.rel_l1(a, b) == 0 and sa.kept == sb.kept)\n"
        "local guarded = setmetatable({q=q, k=k, v=v, tau={0.01, 0.01}, dense_below=-1},\n"
        "  {__newindex = function() error('written to') end})\n"
        "sale.reference(guarded)\n"
        "print('ok')\n",
        0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect(strstr(out, "ok") == out, "%s", out);
    free(out);
}

Test(scripts, tables_are_aligned_and_csv_is_written)
{
    char *out, csv[512], text[2048];
    snprintf(csv, sizeof csv, "%s/t.csv", g_dir);
    snprintf(text, sizeof text,
             "local rows = { {name='a', n=1, x=0.5}, {name='long name', n=100, x=0.25, mark='*'} }\n"
             "sale.table(rows, {'name', 'n', {'x', fmt='%%.3f', title='value'}, 'mark'})\n"
             "sale.csv('%s', rows, {'name', 'n', 'x', 'mark'})\n",
             csv);
    sale_status st = run_text(text, 0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_str_eq(out,
                     "name         n  value  mark\n"
                     "---------  ---  -----  ----\n"
                     "a            1  0.500\n"
                     "long name  100  0.250  *\n");
    char *c = read_file(csv);
    cr_assert_not_null(c);
    cr_expect_str_eq(c, "name,n,x,mark\na,1,0.5,\nlong name,100,0.25,*\n");
    free(c);
    free(out);
}

Test(scripts, gpu_calls_without_a_device_fail_clearly)
{
    char *out;
    sale_status st = run_text("if sale.has_gpu() then print('has gpu') return end\n"
                              "local ok, e = pcall(sale.generate, {N=256, D=64, device='gpu'})\n"
                              "assert(not ok) print(e)\n",
                              0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    if (strstr(out, "has gpu")) {
        free(out);
        cr_skip_test("a GPU is present; this test checks the message without one");
    }
    cr_expect(strstr(out, "no CUDA device") != NULL, "%s", out);
    free(out);
}

Test(scripts, keys_and_compile_from_lua)
{
    char *out;
    sale_status st = run_text("local k = sale.key('fused:d=128,bq=64,bk=32,seg=128,win=128,dt=bf16,est=8,arch=sm_90')\n"
                              "assert(k.family == 'fused' and k.head_dim == 128 and k.arch == 'sm_90')\n"
                              "local k2 = sale.key{family='quantize', head_dim=64, arch='sm_80'}\n"
                              "assert(k2.head_dim == 64 and k2.text:match('^quantize:'))\n"
                              "local ok, e = pcall(sale.key, {family='fused', block_k=24})\n"
                              "assert(not ok and e:match('block_k'), e)\n"
                              "local info = sale.compile(k2)\n"
                              "assert(info.cubin_bytes > 0 and info.registers > 0, 'compiled')\n"
                              "print(info.key)\n",
                              0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect(strstr(out, "quantize:") == out, "%s", out);
    free(out);
}

Test(scripts, explore_blocks_runs_on_the_cpu_and_marks_the_front)
{
    char *out, csv[512];
    snprintf(csv, sizeof csv, "%s/explore.csv", g_dir);
    char *argv[] = {"512", "cpu", csv};
    sale_status st = run_captured(SALE_SOURCE_DIR "/examples/explore_blocks.lua", 3, argv, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect(strstr(out, "SALE block sweep: N=512") == out, "%s", out);
    cr_expect(strstr(out, "density") && strstr(out, "rel_l1") && strstr(out, "front"), "%s", out);
    cr_expect(strstr(out, "54 settings, ") != NULL, "%s", out);
    cr_expect(strstr(out, "on the Pareto front (lower density, lower rel_l1)") != NULL, "%s", out);
    cr_expect_gt(count_lines(out, "  *\n"), 0, "some rows are on the front:\n%s", out);
    char *c = read_file(csv);
    cr_assert_not_null(c);
    cr_expect_eq(count_lines(c, "\n"), 55, "%s", c);
    /* every row: density in (0, 1], a small error, a front mark or none */
    char *line = strchr(c, '\n') + 1;
    int front = 0;
    while (*line) {
        int bq, bk, seg;
        double tau, dens, err, ms, sp;
        char mark[8] = "";
        int n = sscanf(line, "%d,%d,%d,%lf,%lf,%lf,%lf,%lf,%7s", &bq, &bk, &seg, &tau, &dens, &err, &ms, &sp, mark);
        cr_expect_geq(n, 8, "%s", line);
        cr_expect(dens > 0 && dens <= 1, "%s", line);
        cr_expect(err >= 0 && err < 0.05, "%s", line);
        front += mark[0] == '*';
        line = strchr(line, '\n') + 1;
    }
    cr_expect_gt(front, 0);
    free(c);
    free(out);
}

/* kernel_info.lua: a real NVRTC compile of a good key prints what ptxas
 * reports; a bad key is named with its reason and fails the script, after
 * the good one was printed */
Test(scripts, kernel_info_prints_registers_and_names_bad_keys)
{
    char *out;
    char *argv[] = {"quantize:d=64,dt=bf16,arch=sm_80"};
    sale_status st = run_captured(SALE_SOURCE_DIR "/examples/kernel_info.lua", 1, argv, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect(strstr(out, "quantize:") == out, "%s", out);
    cr_expect(strstr(out, "sale_quantize_kernel: ") != NULL, "%s", out);
    int regs = 0;
    const char *r = strstr(out, "kernel: ");
    cr_assert_not_null(r, "%s", out);
    cr_expect_eq(sscanf(r, "kernel: %d registers", &regs), 1, "%s", out);
    cr_expect(regs > 0 && regs <= 255, "%d registers", regs);
    free(out);
    char *argv2[] = {"quantize:d=64,dt=bf16,arch=sm_80", "fused:d=128,bk=24,arch=sm_90"};
    st = run_captured(SALE_SOURCE_DIR "/examples/kernel_info.lua", 2, argv2, &out);
    cr_expect_neq(st, SALE_OK, "a key that does not compile fails the script");
    cr_expect(strstr(g_err, "1 of 2 keys did not compile: fused:d=128,bk=24,arch=sm_90") != NULL, "%s", g_err);
    cr_expect(strstr(out, "sale_quantize_kernel: ") != NULL, "the good key is still printed: %s", out);
    cr_expect(strstr(out, "does not compile: ") != NULL && strstr(out, "block_k") != NULL, "%s", out);
    free(out);
}

Test(scripts, needles_reports_which_settings_keep_every_needle)
{
    char *out, csv[512];
    snprintf(csv, sizeof csv, "%s/needles.csv", g_dir);
    char *argv[] = {"1024", "cpu", csv};
    sale_status st = run_captured(SALE_SOURCE_DIR "/examples/needles.lua", 3, argv, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect(strstr(out, "needles: N=1024, Hq=2, ") == out, "%s", out);
    cr_expect(strstr(out, "every needle") != NULL, "%s", out);
    cr_expect(strstr(out, "keep every needle: ") != NULL, "%s", out);
    cr_expect(strstr(out, " of 30 settings") != NULL, "%s", out);
    char *c = read_file(csv);
    cr_assert_not_null(c);
    cr_expect_eq(count_lines(c, "\n"), 31);
    free(c);
    free(out);
}

/* The threshold variant: defaults.thr and fleet.thr in the config, thr= in
 * keys and in sale.reference / sale.attention from scripts. */
Test(config, thr_in_defaults_and_fleet)
{
    sale_config c;
    cr_assert_eq(load_text("defaults = { thr = 'fixed' }\nfleet = { thr = { 'run', 'fixed', 'run' } }\n", &c), SALE_OK,
                 "%s", g_err);
    cr_expect_eq(c.defaults.thr, SALE_THR_FIXED);
    cr_expect_eq(c.fleet.n_thrs, 2, "duplicates dropped");
    cr_expect_eq(c.fleet.thrs[0], SALE_THR_RUN);
    cr_expect_eq(c.fleet.thrs[1], SALE_THR_FIXED);
    cfg_free(&c);
    cfg_defaults_init(&c);
    cr_expect_eq(c.defaults.thr, 0, "unset (the device's default at tune time)");
    cr_expect_eq(c.fleet.n_thrs, 2, "a default fleet holds both variants (fixed: Hopper's fast select)");
    cr_expect_eq(c.fleet.thrs[0], SALE_THR_RUN);
    cr_expect_eq(c.fleet.thrs[1], SALE_THR_FIXED);
    cfg_free(&c);
    expect_invalid("defaults = { thr = 'sometimes' }",
                   "sale.lua:1: defaults.thr: unknown threshold variant 'sometimes' (known: run, fixed)");
    expect_invalid("fleet = { thr = { 'run', 'late' } }",
                   "sale.lua:1: fleet.thr[2]: unknown threshold variant 'late' (known: run, fixed)");
}

Test(scripts, thr_in_keys_and_reference_calls)
{
    char *out;
    sale_status st = run_text(
        "local k = sale.key{family='fused', thr='fixed', arch='sm_89'}\n"
        "assert(k.thr == 'fixed' and k.text:find(',thr=fixed$'), k.text)\n"
        "assert(sale.key('select:arch=sm_90').thr == '*')\n"
        "assert(not pcall(sale.key, {family='fused', thr='late'}))\n"
        "local q, k, v = sale.generate{B=1, Hq=2, Hkv=1, N=2048, D=64, seed=4}\n"
        "local a = {q=q, k=k, v=v, tau=0.01, dense_below=-1, block_k=16, block_seg=32, local_window=32}\n"
        "local _, sr, mr = sale.reference(a)\n"
        "a.thr = 'fixed'\n"
        "local _, sf, mf = sale.reference(a)\n"
        "assert(sf.kept > sr.kept, 'fixed keeps more')\n"
        "for qb = 0, mr.nqb - 1 do for kb = 0, mr.nkb - 1 do\n"
        "  if mr:kept(0, 0, qb, kb) then assert(mf:kept(0, 0, qb, kb), 'superset') end\n"
        "end end\n"
        "a.thr = 'late'\n"
        "local ok, e = pcall(sale.reference, a)\n"
        "assert(not ok and e:find('thr'), e)\n"
        "print(string.format('run %d fixed %d', sr.kept, sf.kept))\n",
        0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect(strstr(out, "run ") == out, "%s", out);
    free(out);
}

/* model= / layer= in sale.reference: the stored thresholds, in the variant
 * they were calibrated with (thr nil), the other variant refused with the
 * library's reason; tau and model together, or layer alone, refused */
Test(scripts, reference_by_model_and_layer_runs_the_stored_variant)
{
    float tau[2] = {0.01f, 0.01f};
    sale_threshold_meta m = {.budget = 0.02, .density = -1, .error = -1, .thr = SALE_THR_FIXED};
    cr_assert_eq(sale_thresholds_put(g_ctx, "lua-model", 2, tau, 2, &m), SALE_OK, "%s", sale_last_error(g_ctx));
    char *out;
    sale_status st = run_text(
        "local q, k, v = sale.generate{B=1, Hq=2, Hkv=1, N=2048, D=64, seed=4}\n"
        "local base = {q=q, k=k, v=v, dense_below=-1, block_k=16, block_seg=32, local_window=32}\n"
        "local function with(t) local r = {} for x, y in pairs(base) do r[x] = y end\n"
        "  for x, y in pairs(t) do r[x] = y end return r end\n"
        "local _, sf, mf = sale.reference(with{tau=0.01, thr='fixed'})\n"
        "local _, sr, mr = sale.reference(with{tau=0.01, thr='run'})\n"
        "assert(sf.kept ~= sr.kept, 'run and fixed keep the same blocks here')\n"
        "local _, sm, mm = sale.reference(with{model='lua-model', layer=2})\n"
        "assert(sm.kept == sf.kept, 'thr nil with stored fixed thresholds: ' .. sm.kept .. ' vs ' .. sf.kept)\n"
        "for qb = 0, mf.nqb - 1 do for kb = 0, mf.nkb - 1 do for h = 0, 1 do\n"
        "  assert(mm:kept(0, h, qb, kb) == mf:kept(0, h, qb, kb), 'mask differs from fixed')\n"
        "end end end\n"
        "local ok, e = pcall(sale.reference, with{model='lua-model', layer=2, thr='run'})\n"
        "assert(not ok and e:find('calibrated with thr=fixed'), e)\n"
        "ok, e = pcall(sale.reference, with{model='lua-model', layer=2, tau=0.01})\n"
        "assert(not ok and e:find('not both'), e)\n"
        "ok, e = pcall(sale.reference, with{layer=2})\n"
        "assert(not ok and e:find('without model'), e)\n"
        "ok, e = pcall(sale.reference, with{model='lua-model', layer=7})\n"
        "assert(not ok and e:find('layer 7'), e)\n"
        "print('kept ' .. sm.kept)\n",
        0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect(strstr(out, "kept ") == out, "%s", out);
    free(out);
}

/* A tensor that cannot be allocated: the message names its shape and bytes
 * and the script's line (lua_pushfstring has no %zu: it raised "invalid
 * option '%z' to 'lua_pushfstring'" with no position). 2^60 bytes exceed any
 * address space, overcommit or not. */
Test(scripts, out_of_memory_names_the_size_and_the_line)
{
    char *out;
    sale_status st = run_text(
        "print(select(2, pcall(function() return sale.tensor_random{B=65536, H=65536, N=65536, D=2048} end)))\n"
        "print(select(2, pcall(function() return sale.tensor_zeros{B=65536, H=65536, N=65536, D=1024, dtype='f32'} "
        "end)))\n"
        "print(select(2, pcall(function() return sale.generate{B=65536, Hq=65536, Hkv=65536, N=65536, D=2048} end)))\n"
        "sale.tensor_random{B=65536, H=65536, N=65536, D=2048, dtype='f16'}\n",
        0, NULL, &out);
    cr_expect_eq(st, SALE_ERR_LUA);
    const char *want[] = {
        "script.lua:1: out of memory for a 65536 x 65536 x 65536 x 2048 bf16 tensor (1152921504606846976 bytes)\n",
        "script.lua:2: out of memory for a 65536 x 65536 x 65536 x 1024 f32 tensor (1152921504606846976 bytes)\n",
        "script.lua:3: out of memory for a 65536 x 65536 x 65536 x 2048 bf16 tensor (1152921504606846976 bytes)\n"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_expect(strstr(out, want[i]) != NULL, "want %s in:\n%s", want[i], out);
    cr_expect(strstr(g_err, "script.lua:4: out of memory for a 65536 x 65536 x 65536 x 2048 f16 tensor "
                            "(1152921504606846976 bytes)") == strstr(g_err, "script.lua:4:") &&
                  strstr(g_err, "script.lua:4:") != NULL,
              "%s", g_err);
    cr_expect(strstr(out, "invalid option") == NULL && strstr(g_err, "invalid option") == NULL, "%s%s", out, g_err);
    free(out);
}

/* Option tables: a positional entry or an unknown name was ignored (the
 * defaults ran: tensor_random{1, 1, 0, 64} gave 1 x 1 x 1024 x 128); now
 * each is refused naming the function, the field and the fields it reads,
 * at the script's line. Every field a function reads is still accepted. */
Test(scripts, option_tables_refuse_positional_and_unknown_fields)
{
    char *out;
    sale_status st = run_text(
        "local q, k, v = sale.generate{N=64, D=64, Hq=1}\n"
        "local function e(f) local ok, m = pcall(f) print(ok and 'accepted' or m) end\n"
        "e(function() return sale.tensor_random{1, 1, 0, 64} end)\n"
        "e(function() return sale.tensor_zeros{N=64, d=64} end)\n"
        "e(function() return sale.generate{N=64, D=64, Hk=1} end)\n"
        "e(function() return sale.reference{q=q, k=k, v=v, taus=0.01} end)\n"
        "e(function() return sale.reference{q=q, k=k, v=v, out=q} end)\n"
        "e(function() return sale.attention{q=q, k=k, v=v, blockq=64} end)\n"
        "e(function() return sale.key{family='fused', blockk=32} end)\n"
        "e(function() return sale.compile{'fused'} end)\n"
        "e(function() return sale.time(function() end, {rep=3}) end)\n"
        "e(function() return sale.table({}, {'a', {'x', format='%.3f'}}) end)\n"
        "e(function() return sale.csv('/dev/null', {}, {{'x', [2]='y'}}) end)\n"
        "e(function() return sale.reference{[true]=1, q=q, k=k, v=v} end)\n"
        /* everything read is accepted, an undocumented field included */
        "local t = sale.tensor_random{B=1, H=1, N=8, D=64, dtype='f32', device='cpu', seed=2, scale=0.5}\n"
        "local z = sale.tensor_zeros{B=1, H=1, N=8, D=64, dtype='f32', device='cpu'}\n"
        "local g = {B=1, Hq=2, Hkv=1, N=128, D=64, dtype='bf16', device='cpu', seed=3, structured=true,\n"
        "  needles=1, rope_base=10000, sink=1, local_bias=0.5, needle_gain=4}\n"
        "local q2, k2, v2 = sale.generate(g)\n"
        "sale.reference{q=q2, k=k2, v=v2, tau=0.01, block_q=64, block_k=32, block_seg=64, local_window=32,\n"
        "  est_bits=8, thr='run', mode='fused', dense_below=-1, scale=0.125}\n"
        "local kt = sale.key{family='fused', head_dim=64, block_q=64, block_k=32, block_seg=128, local_window=128,\n"
        "  est_bits=8, causal=1, warps=4, stages=2, dtype='bf16', arch='sm_90', thr='run'}\n"
        "local text = kt.text kt.text = nil\n"
        "assert(sale.key(kt).text == text, 'a key table without its text goes back in')\n"
        "assert(not pcall(sale.key, {family='fused', causal=0}), 'causal is read, not ignored')\n"
        "sale.time(function() end, {warmup=0, reps=1, host=true})\n"
        "print(sale.format_table({{x=1}}, {{'x', fmt='%.1f', title='X'}}))\n",
        0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    const char *ref = "q, k, v, tau, block_q, block_k, block_seg, local_window, est_bits, thr, mode, dense_below, "
                      "scale, model, layer";
    char want[13][400];
    snprintf(want[0], sizeof want[0], "script.lua:3: sale.tensor_random: positional field [1]: options are named "
                                      "(known: B, H, N, D, dtype, device, seed, scale)\n");
    snprintf(want[1], sizeof want[1], "script.lua:4: sale.tensor_zeros: unknown field 'd' (known: B, H, N, D, dtype, "
                                      "device)\n");
    snprintf(want[2], sizeof want[2], "script.lua:5: sale.generate: unknown field 'Hk' (known: B, Hq, Hkv, N, D, "
                                      "dtype, device, seed, structured, needles, rope_base, sink, local_bias, "
                                      "needle_gain)\n");
    snprintf(want[3], sizeof want[3], "script.lua:6: sale.reference: unknown field 'taus' (known: %s)\n", ref);
    snprintf(want[4], sizeof want[4], "script.lua:7: sale.reference: unknown field 'out' (known: %s)\n", ref);
    snprintf(want[5], sizeof want[5], "script.lua:8: sale.attention: unknown field 'blockq' (known: %s, out, stats, "
                                      "mask)\n", ref);
    snprintf(want[6], sizeof want[6], "script.lua:9: sale.key: unknown field 'blockk' (known: family, head_dim, "
                                      "block_q, block_k, block_seg, local_window, est_bits, causal, warps, stages, "
                                      "dtype, arch, thr, text)\n");
    snprintf(want[7], sizeof want[7], "script.lua:10: sale.compile: positional field [1]: options are named");
    snprintf(want[8], sizeof want[8], "script.lua:11: sale.time: unknown field 'rep' (known: warmup, reps, host)\n");
    snprintf(want[9], sizeof want[9],
             "script.lua:12: sale.table: column 2: unknown field 'format' (known: fmt, title)\n");
    snprintf(want[10], sizeof want[10],
             "script.lua:13: sale.csv: column 1: positional field [2]: options are named (known: fmt, title)\n");
    snprintf(want[11], sizeof want[11], "script.lua:14: sale.reference: a boolean key is not an option (known: %s)\n",
             ref);
    snprintf(want[12], sizeof want[12], "X\n---\n1.0\n");
    for (int i = 0; i < 13; i++)
        cr_expect(strstr(out, want[i]) != NULL, "want %s in:\n%s", want[i], out);
    cr_expect(strstr(out, "accepted") == NULL, "%s", out);
    free(out);
}

/* A config held at most 4096 per-head taus: one 80-layer, 64-head model
 * (5,120) was refused. */
Test(examples, a_config_holds_the_thresholds_of_a_large_model)
{
    sale_config c;
    cfg_defaults_init(&c);
    sale_status st = cfg_load_string("big.lua",
                                     "thresholds = { big = {} }\n"
                                     "for l = 0, 79 do\n"
                                     "  local t = {}\n"
                                     "  for h = 1, 64 do t[h] = 0.001 * (1 + h % 3) end\n"
                                     "  thresholds.big[l] = t\n"
                                     "end\n",
                                     &c, g_err, sizeof g_err);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_assert_eq(c.n_thresholds, 80 * 64);
    cfg_free(&c);
}

/* fleet.archs = {"sm_90a"} passed the config's check, then prewarm failed
 * with the key layer's "a device's arch (80, 86, 89, 90)". */
Test(examples, a_fleet_names_device_archs)
{
    sale_config c;
    cfg_defaults_init(&c);
    sale_status st = cfg_load_string("f.lua", "fleet = { archs = { 'sm_90', 'sm_90a' } }\n", &c, g_err, sizeof g_err);
    cr_assert_neq(st, SALE_OK);
    cr_assert(strstr(g_err, "f.lua:1") && strstr(g_err, "fleet.archs[2]") && strstr(g_err, "names devices: sm_90"),
              "%s", g_err);
    cfg_free(&c);
}

/* Layers count from 0, heads go in list order. A model's layers written as a
 * Lua list ({ {...}, {...} }) are layers 1..n: the first would silently land
 * on layer 1 and layer 0 run at the call's tau. Refused, naming the model and
 * the fix; [0] = false gives layers 1..n alone; sparse layers stay fine. */
Test(examples, a_thresholds_list_of_layers_is_refused_not_shifted)
{
    sale_config c;
    cfg_defaults_init(&c);
    sale_status st = cfg_load_string("list.lua", "thresholds = { m = { {0.1, 0.2}, {0.3, 0.4} } }", &c, g_err,
                                     sizeof g_err);
    cr_assert_neq(st, SALE_OK, "a list of layers was taken as layers 1 and 2");
    cr_assert(strstr(g_err, "list.lua") == g_err, "no file: %s", g_err);
    cr_assert(strstr(g_err, "thresholds.m") && strstr(g_err, "layers 1..2 and no layer 0") &&
                  strstr(g_err, "[0] = {...}"),
              "%s", g_err);
    cfg_free(&c);
    /* one layer, [1] = {...} alone: the same ambiguity, the same refusal */
    cfg_defaults_init(&c);
    cr_assert_neq(cfg_load_string("one.lua", "thresholds = { m = { [1] = {0.1} } }", &c, g_err, sizeof g_err),
                  SALE_OK);
    cfg_free(&c);
    /* [0] = false: layers 1 and 2 only, as written */
    cfg_defaults_init(&c);
    st = cfg_load_string("skip0.lua", "thresholds = { m = { [0] = false, {0.1, 0.2}, {0.3} } }", &c, g_err,
                         sizeof g_err);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_assert_eq(c.n_thresholds, 3);
    for (int i = 0; i < c.n_thresholds; i++) {
        cr_assert(c.thresholds[i].layer == 1 || c.thresholds[i].layer == 2, "layer %d", c.thresholds[i].layer);
        if (c.thresholds[i].layer == 2)
            cr_assert(c.thresholds[i].head == 0 && c.thresholds[i].tau == 0.3f);
    }
    cfg_free(&c);
    /* sparse layers (3 and 5) and layers from 0 as before */
    cfg_defaults_init(&c);
    st = cfg_load_string("sparse.lua", "thresholds = { m = { [3] = {0.1}, [5] = {0.2} }, n = { [0] = {0.1}, {0.2} } }",
                         &c, g_err, sizeof g_err);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_assert_eq(c.n_thresholds, 4);
    cfg_free(&c);
    /* true is not a layer's taus */
    cfg_defaults_init(&c);
    cr_assert_neq(cfg_load_string("t.lua", "thresholds = { m = { [0] = true } }", &c, g_err, sizeof g_err), SALE_OK);
    cfg_free(&c);
}

/* A column named by a number ({123456789, fmt=}) was converted to a string
 * held only by a stack slot that read_cols then popped: the key and title
 * pointed to freed memory once the collector ran (heap-use-after-free under
 * ASan, garbage titles in a release build). Every column's strings are now
 * anchored for the call. */
Test(scripts, a_column_named_by_a_number_stays_alive)
{
    char *out, csv[512], text[2048];
    snprintf(csv, sizeof csv, "%s/num.csv", g_dir);
    snprintf(text, sizeof text,
             "collectgarbage('incremental', 1, 1000)\n"
             "local rows = {} for i = 1, 300 do rows[i] = {['123456789'] = i, x = ('w'):rep(40)} end\n"
             "local t = sale.format_table(rows, {{123456789}, 'x'})\n"
             "assert(t:match('^123456789  x'), t:sub(1, 80))\n"
             "assert(t:match('\\n      300  w+\\n$'), t:sub(-80))\n"
             "sale.csv('%s', rows, {{987654321, title='n'}, {123456789}})\n"
             "print('ok')\n",
             csv);
    sale_status st = run_text(text, 0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_str_eq(out, "ok\n");
    char *c = read_file(csv);
    cr_assert_not_null(c);
    cr_expect(strstr(c, "n,123456789\n,1\n,2\n") == c, "%.200s", c);
    cr_expect(strstr(c, "\n,300\n") != NULL, "%s", c + strlen(c) - (strlen(c) > 60 ? 60 : strlen(c)));
    free(c);
    free(out);
}

/* sale.csv and sale.format_table wrote every cell through a char[256] (a
 * longer string or a number formatted with %.400f was cut at 255 bytes) and
 * as a C string (cut at an embedded NUL); a header wider than 511 bytes was
 * cut too. Cells, names and titles now keep every byte, and csv quotes a
 * field with a NUL. */
Test(scripts, table_and_csv_cells_keep_every_byte)
{
    char *out, csv[512], text[4096];
    snprintf(csv, sizeof csv, "%s/long.csv", g_dir);
    snprintf(text, sizeof text,
             "local long = ('z'):rep(1000)\n"
             "local rows = {{a = long, b = 1.5, c = 'ab\\0cd', [('k'):rep(600)] = 7}}\n"
             "local cols = {'a', {'b', fmt = '%%.400f'}, {'c', title = 't\\0u'}, {('k'):rep(600), title = ('T'):rep(600)}}\n"
             "sale.csv('%s', rows, cols)\n"
             "local f = assert(io.open('%s', 'rb')) local got = f:read('a') f:close()\n"
             "local want = 'a,b,\"t\\0u\",' .. ('T'):rep(600) .. '\\n' .. long .. ',' .. ('1.5' .. ('0'):rep(399))\n"
             "  .. ',\"ab\\0cd\",7\\n'\n"
             "assert(got == want, ('csv: %%d bytes, want %%d'):format(#got, #want))\n"
             "local t = sale.format_table(rows, cols)\n"
             "local lines = {} for l in t:gmatch('[^\\n]*\\n') do lines[#lines + 1] = l end\n"
             "assert(#lines == 3, #lines)\n"
             "assert(lines[1] == 'a' .. (' '):rep(999) .. '  ' .. (' '):rep(401) .. 'b  t\\0u    ' .. ('T'):rep(600) .. '\\n',\n"
             "  'header: ' .. #lines[1])\n"
             "assert(lines[3] == long .. '  ' .. ('1.5' .. ('0'):rep(399)) .. '  ab\\0cd  ' .. (' '):rep(599) .. '7\\n',\n"
             "  'row: ' .. #lines[3])\n"
             "print('ok')\n",
             csv, csv);
    sale_status st = run_text(text, 0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_str_eq(out, "ok\n");
    free(out);
}

/* sale.time checked only warmup >= 0: warmup = 2^31 - 1 made warmup + reps
 * overflow (UB), the loop never ran, and uninitialised memory came back as
 * the timings. Both counts are now bounded, the bound in the message. */
Test(scripts, time_bounds_warmup_and_reps)
{
    char *out;
    sale_status st = run_text(
        "local calls = 0 local function f() calls = calls + 1 end\n"
        "print(select(2, pcall(sale.time, f, {warmup = 2147483647, reps = 3, host = true})))\n"
        "print(select(2, pcall(sale.time, f, {warmup = -1, host = true})))\n"
        "print(select(2, pcall(sale.time, f, {reps = 0, host = true})))\n"
        "print(select(2, pcall(sale.time, f, {reps = 100001, host = true})))\n"
        "assert(calls == 0, calls)\n"
        "local med, min = sale.time(f, {warmup = 100000, reps = 2, host = true})\n"
        "assert(calls == 100002 and med >= min and min >= 0, calls)\n"
        "print('ok')\n",
        0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_str_eq(out, "sale.time: warmup must be in [0, 100000], got 2147483647\n"
                          "sale.time: warmup must be in [0, 100000], got -1\n"
                          "sale.time: reps must be in [1, 100000], got 0\n"
                          "sale.time: reps must be in [1, 100000], got 100001\n"
                          "ok\n");
    free(out);
}

/* sale.rel_l1(a, b) with NaN in the reference b gave 0.0, a perfect score
 * (the NaN denominator failed den > 0 and the numerator num > 0). A NaN or
 * an infinity in either input now gives NaN. */
Test(scripts, rel_l1_of_nan_or_inf_is_nan)
{
    char *out;
    sale_status st = run_text(
        "local a = sale.tensor_random{N=4, D=4, dtype='f32'}\n"
        "local nan = sale.tensor_random{N=4, D=4, dtype='f32', scale=0/0}\n"
        "local inf = sale.tensor_random{N=4, D=4, dtype='f32', scale=1/0}\n"
        "local function isnan(x) return x ~= x end\n"
        "assert(isnan(sale.rel_l1(a, nan)), 'nan reference: ' .. sale.rel_l1(a, nan))\n"
        "assert(isnan(sale.rel_l1(nan, a)), 'nan input')\n"
        "assert(isnan(sale.rel_l1(a, inf)), 'inf reference: ' .. sale.rel_l1(a, inf))\n"
        "assert(isnan(sale.rel_l1(inf, a)), 'inf input: ' .. sale.rel_l1(inf, a))\n"
        "assert(isnan(sale.rel_l1(inf, inf)), 'inf both: ' .. sale.rel_l1(inf, inf))\n"
        "assert(sale.rel_l1(a, a) == 0)\n"
        "print('ok')\n",
        0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_str_eq(out, "ok\n");
    free(out);
}

/* tau = 0 (a scalar) ran sparse at the default 0.004: a scalar went into
 * tau_default, where C reads 0 as "the default"; tau = {0, 0} and Python's
 * tau=0.0 ran dense. Now only an absent tau means the default and a scalar
 * tau <= 1e-5 runs dense, as the README says. tau = 1e300 was narrowed to a
 * float before the check and reported as "tau_default: ... got inf". */
Test(scripts, tau_zero_runs_dense_and_only_nil_means_the_default)
{
    char *out;
    sale_status st = run_text(
        "local q, k, v = sale.generate{N=2048, D=64, Hq=2, Hkv=1, seed=3}\n"
        "local function d(tau) return select(2, sale.reference{q=q, k=k, v=v, tau=tau, dense_below=-1}).density end\n"
        "print(d(0), d({0, 0}), d(1e-6), d(1e-5))\n"
        "assert(d(nil) == d(0.004) and d(nil) < 0.9, d(nil))\n"
        "local function e(x) print((select(2, pcall(d, x)):gsub('^.-script.lua:%d+: ', ''))) end\n"
        "e(1e300)\n"
        "e(0/0)\n"
        "e(-0.5)\n"
        "e(1)\n"
        "e({0.01, 1e300})\n"
        "e({0.01, 0/0})\n",
        0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_str_eq(out, "1.0\t1.0\t1.0\t1.0\n"
                          "tau: must be in [0, 1), got 1e+300\n"
                          "tau: must be in [0, 1), got nan\n"
                          "tau: must be in [0, 1), got -0.5\n"
                          "tau: must be in [0, 1), got 1.0\n"
                          "tau[2]: must be in [0, 1), got 1e+300\n"
                          "tau[2]: must be in [0, 1), got nan\n");
    free(out);
}

/* Boolean options took Lua truthiness: structured = 0 (bench/README's word
 * for i.i.d. inputs), "no" and "false" all meant true, silently; stats=,
 * mask= (sale.attention) and host= (sale.time) the same. They now take a
 * boolean or nil (the default); anything else names the option. */
Test(scripts, boolean_options_take_only_booleans)
{
    char *out;
    sale_status st = run_text(
        "local function e(f, ...) local ok, m = pcall(f, ...) print(ok and 'accepted' or m) end\n"
        "e(sale.generate, {N=64, D=64, structured=0})\n"
        "e(sale.generate, {N=64, D=64, structured='no'})\n"
        "e(sale.attention, {stats=1})\n"
        "e(sale.attention, {mask='false'})\n"
        "e(sale.time, function() end, {host=0})\n"
        "local a = sale.generate{N=64, D=64, structured=false, seed=5}:get(0, 0, 1, 0)\n"
        "local b = sale.generate{N=64, D=64, structured=true, seed=5}:get(0, 0, 1, 0)\n"
        "local c = sale.generate{N=64, D=64, seed=5}:get(0, 0, 1, 0)\n"
        "assert(a ~= b and b == c, 'structured is the default')\n"
        "sale.time(function() end, {host=true, reps=1})\n"
        "print('ok')\n",
        0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_str_eq(out, "structured must be true or false (nil: the default), got number 0\n"
                          "structured must be true or false (nil: the default), got string 'no'\n"
                          "stats must be true or false (nil: the default), got number 1\n"
                          "mask must be true or false (nil: the default), got string 'false'\n"
                          "host must be true or false (nil: the default), got number 0\n"
                          "ok\n");
    free(out);
}

/* sale.needle_recall read each needle with defaults of 0 and no check of its
 * fields: {}, a typo (querry=) or negative positions (C's division rounds
 * -63 / 64 to block 0, always kept) all counted as hits; a needle that was
 * not a table gave "bad argument #-1". Each needle now needs its four fields,
 * integers in range, and an error names the needle. */
Test(scripts, needle_recall_checks_every_needle)
{
    char *out;
    sale_status st = run_text(
        "local q, k, v = sale.generate{N=256, D=64, Hq=2, Hkv=1}\n"
        "local _, _, m = sale.reference{q=q, k=k, v=v}\n"
        "local function e(n) local ok, r = pcall(sale.needle_recall, m, n) print(ok and 'accepted ' .. r or r) end\n"
        "e({{batch=0, head=0, query=-63, key=-31}})\n"
        "e({{}})\n"
        "e({{batch=0, head=0, query=200, key=10}, {batch=0, head=0, querry=200, key=10}})\n"
        "e({5})\n"
        "e({{batch=0, head=2, query=200, key=10}})\n"
        "e({{batch=0, head=0, query=256, key=10}})\n"
        "e({{batch=0, head=0, query=200, key=0.5}})\n"
        "e({{batch=0, head=0, query=200, key='10'}})\n"
        "print(sale.needle_recall(m, {{batch=0, head=1, query=255, key=0}, {batch=0, head=0, query=200, key=199}}))\n",
        0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_str_eq(out,
                     "sale.needle_recall: needle 1: query is -63, must be in [0, 256)\n"
                     "sale.needle_recall: needle 1: batch is missing (a needle is {batch=, head=, query=, key=})\n"
                     "sale.needle_recall: needle 2: unknown field 'querry' (known: batch, head, query, key)\n"
                     "sale.needle_recall: needle 1 must be a table {batch=, head=, query=, key=}, got number\n"
                     "sale.needle_recall: needle 1: head is 2, must be in [0, 2)\n"
                     "sale.needle_recall: needle 1: query is 256, must be in [0, 256)\n"
                     "sale.needle_recall: needle 1: key must be an integer, got 0.5\n"
                     "sale.needle_recall: needle 1: key must be an integer, got string\n"
                     "1.0\t2\t2\n");
    free(out);
}

/* A key table from sale.key carried its text as a field, and the text won:
 * k.head_dim = 128 changed nothing, sale.compile(k) built d=64. The text is
 * now made from the fields when read, so an edited field is what compiles; a
 * table that holds a text and fields that disagree is refused. Open fields
 * were 0 (or causal -1) in a table, and an explicit head_dim = 0 or
 * causal = -1 silently meant "open": a table shows "*" for an open field
 * and refuses the sentinel numbers. */
Test(scripts, an_edited_key_table_compiles_what_it_says)
{
    char *out;
    sale_status st = run_text(
        "local k = sale.key('dense:d=64,dt=bf16,arch=sm_80')\n"
        "k.head_dim = 128\n"
        "assert(k.text:match('d=128'), k.text)\n"
        "print(sale.compile(k).key:match('^dense:d=128,') ~= nil)\n"
        "local function e(f, ...) local ok, m = pcall(f, ...) print(ok and 'accepted' or m) end\n"
        "local k2 = sale.key('fused:d=64,arch=sm_80') k2.text = 'fused:d=128,arch=sm_80'\n"
        "e(sale.key, k2)\n"
        "e(sale.key, {text = 5})\n"
        "e(sale.key, {text = 'dense:d=64', head_dim = 128})\n"
        "assert(sale.key{text = 'dense:d=64', head_dim = 64, family = 'dense'}.text == sale.key('dense:d=64').text)\n"
        "e(sale.key, {head_dim = 0})\n"
        "e(sale.key, {causal = -1})\n"
        "e(sale.key, {warps = 0})\n"
        "local o = sale.key('fused:d=128')\n"
        "print(o.warps, o.dtype, o.causal, o.thr, o.arch)\n"
        "assert(sale.key(o).text == o.text and sale.key{warps = '*'}.warps == '*')\n"
        "local t = {} for name in pairs(o) do t[#t + 1] = name end table.sort(t) print(table.concat(t, ' '))\n",
        0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_str_eq(out,
                     "true\n"
                     "sale.key: the table's text 'fused:d=128,arch=sm_80' and its fields disagree on head_dim (128, 64); "
                     "give one of them (a table from sale.key makes its text from its fields)\n"
                     "sale.key: text must be a string, got number\n"
                     "sale.key: the table's text 'dense:d=64' and its fields disagree on head_dim (64, 128); give one "
                     "of them (a table from sale.key makes its text from its fields)\n"
                     "head_dim: 0 is not a value here (for an open field leave it out or write \"*\")\n"
                     "causal: -1 is not a value here (for an open field leave it out or write \"*\")\n"
                     "warps: 0 is not a value here (for an open field leave it out or write \"*\")\n"
                     "*\t*\t*\t*\tcurrent\n"
                     "arch block_k block_q block_seg causal dtype est_bits family head_dim local_window stages thr "
                     "warps\n");
    free(out);
}

/* sale.reference/sale.attention ran mode "fused" when none was given, while
 * C (sale_attention_args_init) and Python default to AUTO (two-pass on
 * sm_90, fused elsewhere); nothing said so. The default is now "auto", which
 * the message for a bad mode names. (The CPU reference computes every SALE
 * mode alike, so only the GPU would show the difference in results.) */
Test(scripts, the_default_mode_is_auto_as_in_c)
{
    char *out;
    sale_status st = run_text(
        "local q, k, v = sale.generate{N=256, D=64, Hq=2, Hkv=1}\n"
        "print(select(2, pcall(sale.reference, {q=q, k=k, v=v, mode='fast'})))\n"
        "local a = sale.reference{q=q, k=k, v=v}\n"
        "assert(sale.rel_l1(a, sale.reference{q=q, k=k, v=v, mode='auto'}) == 0)\n",
        0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_str_eq(out, "mode: unknown mode 'fast' (auto, the default: two_pass on sm_90, fused elsewhere; "
                          "fused, two_pass, dense, plain)\n");
    free(out);
}

/* sale.tensor_zeros shared tensor_random's option list, so seed= and scale=
 * (which it does not read) were accepted silently: tensor_zeros{scale=5}
 * gave zeros with no word. They are now unknown fields there. */
Test(scripts, tensor_zeros_refuses_seed_and_scale)
{
    char *out;
    sale_status st = run_text(
        "local function e(f, ...) local ok, m = pcall(f, ...) print(ok and 'accepted' or m) end\n"
        "e(sale.tensor_zeros, {N=2, D=2, scale=5})\n"
        "e(sale.tensor_zeros, {N=2, D=2, seed=3})\n"
        "assert(sale.tensor_zeros{B=1, H=1, N=2, D=2, dtype='f32', device='cpu'}:get(0, 0, 1, 1) == 0)\n",
        0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_str_eq(out, "sale.tensor_zeros: unknown field 'scale' (known: B, H, N, D, dtype, device)\n"
                          "sale.tensor_zeros: unknown field 'seed' (known: B, H, N, D, dtype, device)\n");
    free(out);
}

/* sale.generate's errors had no reason ("generate: SALE_ERR_INVALID" for
 * D = 3 or D = 8; sale_generate_qkv has no context, so the message shown was
 * whatever the context held from an earlier call). The shape rules are now
 * checked with their reasons. rope_base, sink, local_bias and needle_gain
 * took inf (NaN keys) and NaN or <= 0 (silently the default): each must now
 * be a positive finite number, nil for the default. */
Test(scripts, generate_says_why_it_refuses)
{
    char *out;
    sale_status st = run_text(
        "local function e(t) local ok, m = pcall(sale.generate, t) print(ok and 'accepted' or m) end\n"
        "local q, k, v = sale.generate{N=64, D=64, Hq=1}\n"
        "pcall(sale.reference, {q=q, k=k, v=v, block_k=24})\n"
        "e{N=64, D=3}\n"
        "e{N=64, D=8}\n"
        "e{N=64, D=64, sink=1/0}\n"
        "e{N=64, D=64, needle_gain=0/0}\n"
        "e{N=64, D=64, rope_base=0}\n"
        "e{N=64, D=64, local_bias=-1}\n"
        "e{N=64, D=64, sink=1e300}\n"
        "local q2, k2 = sale.generate{N=64, D=8, structured=false, sink=2}\n"
        "local q3, k3 = sale.generate{N=64, D=64, sink=8, rope_base=10000, local_bias=2, needle_gain=3}\n"
        "assert(k3:get(0, 0, 0, 0) == k3:get(0, 0, 0, 0))\n",
        0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_str_eq(out,
                     "generate: D must be even, got 3\n"
                     "generate: structured inputs need D >= 16, got 8 (structured=false gives i.i.d. inputs)\n"
                     "generate: sink must be a positive finite number (nil: 4.0), got inf\n"
                     "generate: needle_gain must be a positive finite number (nil: 6.0), got nan\n"
                     "generate: rope_base must be a positive finite number (nil: 500000.0), got 0.0\n"
                     "generate: local_bias must be a positive finite number (nil: 1.0), got -1.0\n"
                     "generate: sink must be a positive finite number (nil: 4.0), got 1e+300\n");
    free(out);
}

/* Messages that named the wrong thing: NaN was "got a fraction"; a block_k
 * that the default block_seg (128) cannot hold was reported only as
 * "block_seg: ... got 128", a field the call did not set. (tau = 1e300 and
 * "bad argument #-1" are covered by their own tests above.) */
Test(scripts, messages_name_the_value_and_the_field_given)
{
    char *out;
    sale_status st = run_text(
        "local function e(f, ...) local ok, m = pcall(f, ...) print(ok and 'accepted' or m) end\n"
        "e(sale.key, {head_dim = 0/0})\n"
        "e(sale.key, {head_dim = 64.5})\n"
        "e(sale.key, {head_dim = 1/0})\n"
        "local q, k, v = sale.generate{N=256, D=64, Hq=2, Hkv=1}\n"
        "e(sale.reference, {q=q, k=k, v=v, block_k=2^30})\n"
        "e(sale.reference, {q=q, k=k, v=v, block_k=256, block_seg=256})\n"
        "e(sale.reference, {q=q, k=k, v=v, block_seg=100})\n",
        0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    cr_expect_str_eq(out,
                     "head_dim must be an integer, got nan\n"
                     "head_dim must be an integer, got 64.5\n"
                     "head_dim: inf is out of range [-2147483648, 2147483647]\n"
                     "reference: SALE_ERR_INVALID: block_seg: must be a multiple of block_k of at most 32 blocks, got "
                     "128 (block_seg was not given: 128 is its default, which does not fit block_k 1073741824; give "
                     "block_seg or a smaller block_k)\n"
                     "reference: SALE_ERR_INVALID: local_window: must be a positive multiple of block_k, got 128 "
                     "(local_window was not given: 128 is its default, which does not fit block_k 256; give local_window "
                     "or a smaller block_k)\n"
                     "reference: SALE_ERR_INVALID: block_seg: must be a multiple of block_k of at most 32 blocks, got "
                     "100\n");
    free(out);
}

/* Values passed through without a check: a string that names something
 * (key text, dtype, model, csv path, device) was cut at an embedded NUL
 * ("m\0x" looked up model "m", "/a.csv\0zzz" wrote /a.csv); model= without
 * layer= silently meant layer 0 (layer= without model= was refused);
 * sale.device("x") raised no type error without a GPU. */
Test(scripts, names_with_a_nul_and_model_without_layer_are_refused)
{
    char *out, text[2048];
    snprintf(text, sizeof text,
             "local function e(f, ...) local ok, m = pcall(f, ...) print(ok and 'accepted' or m) end\n"
             "e(sale.key, 'fused:d=128\\0junk')\n"
             "e(sale.key, {text = 'fused:d=128\\0junk'})\n"
             "e(sale.generate, {N=64, D=64, dtype='f32\\0x'})\n"
             "e(sale.thresholds, 'm\\0x', 0)\n"
             "e(sale.csv, '%s/a.csv\\0zzz', {}, {'a'})\n"
             "assert(io.open('%s/a.csv') == nil, 'the cut path was written')\n"
             "local q, k, v = sale.generate{N=64, D=64, Hq=1}\n"
             "e(sale.reference, {q=q, k=k, v=v, model='m'})\n"
             "e(sale.reference, {q=q, k=k, v=v, layer=0})\n"
             "e(sale.reference, {q=q, k=k, v=v, model='m\\0x', layer=0})\n"
             "e(q.to, q, 'cpu\\0x')\n"
             "e(sale.device, 'x')\n",
             g_dir, g_dir);
    sale_status st = run_text(text, 0, NULL, &out);
    cr_assert_eq(st, SALE_OK, "%s", g_err);
    char want[2048];
    snprintf(want, sizeof want,
             "sale.key: 'fused:d=128' is followed by a NUL byte and more text\n"
             "sale.key: 'fused:d=128' is followed by a NUL byte and more text\n"
             "dtype: 'f32' is followed by a NUL byte and more text\n"
             "sale.thresholds: model: 'm' is followed by a NUL byte and more text\n"
             "sale.csv: path: '%s/a.csv' is followed by a NUL byte and more text\n"
             "model: give layer= too (the layer whose stored thresholds to use)\n"
             "layer: given without model\n"
             "model: 'm' is followed by a NUL byte and more text\n"
             "tensor:to: device: 'cpu' is followed by a NUL byte and more text\n"
             "bad argument #1 to 'sale.device' (number expected, got string)\n",
             g_dir);
    cr_expect_str_eq(out, want);
    free(out);
}

/* A config's model names were cut at 63 bytes while calibrate stores 127:
 * a calibrated model with a long name could not be given thresholds in the
 * config. Now the config takes what the cache takes (127), and refuses 128. */
Test(examples, config_model_names_take_what_calibrate_stores)
{
    char name[129], text[400];
    memset(name, 'm', 127);
    name[127] = 0;
    snprintf(text, sizeof text, "thresholds = { [\"%s\"] = { [0] = {0.001} } }", name);
    sale_config c;
    cfg_defaults_init(&c);
    cr_assert_eq(cfg_load_string("long.lua", text, &c, g_err, sizeof g_err), SALE_OK, "%s", g_err);
    cr_assert_eq(c.n_thresholds, 1);
    cr_assert_str_eq(c.thresholds[0].model, name);
    cfg_free(&c);
    memset(name, 'm', 128);
    name[128] = 0;
    snprintf(text, sizeof text, "thresholds = { [\"%s\"] = { [0] = {0.001} } }", name);
    cfg_defaults_init(&c);
    cr_assert_neq(cfg_load_string("long.lua", text, &c, g_err, sizeof g_err), SALE_OK);
    cr_assert(strstr(g_err, "longer than 127 bytes"), "%s", g_err);
    cfg_free(&c);
}
