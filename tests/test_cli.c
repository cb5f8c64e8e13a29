/* test_cli.c — the `sale` command as a user runs it: exit codes, --help on
 * every command, a real prewarm (twice: the second compiles nothing), ls,
 * export/import, verify, key. */
#include <criterion/criterion.h>

#include "cli_helpers.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[256];

static void setup(void)
{
    cli_tmp_setup(dir, sizeof dir, "/tmp/sale_cli_XXXXXX");
}

static void teardown(void)
{
    cli_tmp_teardown(dir);
}

TestSuite(cli, .init = setup, .fini = teardown, .timeout = 600);

/* Run "sale ARGS", capture stdout+stderr, return the exit code. */
static int run(char *out, size_t outlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cli_vrun(out, outlen, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

static char out[1 << 16];

Test(cli, help_on_every_command)
{
    const char *cmds[] = {"info", "prewarm", "ls", "verify", "export", "import", "clear", "key", "run"};
    cr_assert_eq(run(out, sizeof out, "--help"), 0);
    cr_assert(strstr(out, "prewarm") && strstr(out, "usage"), "%s", out);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        cr_assert_eq(run(out, sizeof out, "%s --help", cmds[i]), 0, "%s --help: %s", cmds[i], out);
        cr_assert(strstr(out, "usage: sale") != NULL, "%s --help: %s", cmds[i], out);
    }
}

Test(cli, bad_input_exits_non_zero_with_one_line_reason)
{
    cr_assert_eq(run(out, sizeof out, "frobnicate"), 2);
    cr_assert(strstr(out, "unknown command 'frobnicate'") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "prewarm --arch sm_42"), 2);
    cr_assert(strstr(out, "--arch: bad value 'sm_42'") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "prewarm --bogus"), 2);
    cr_assert_eq(run(out, sizeof out, "key 'fused:bk=24'"), 1);
    cr_assert(strstr(out, "block_k: must be 16, 32 or 64") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "import /nonexistent/file.db"), 1);
    cr_assert_eq(run(out, sizeof out, "--config /nonexistent/sale.lua info"), 1);
    cr_assert(strstr(out, "/nonexistent/sale.lua") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "%s", ""), 2);
}

Test(cli, prewarm_twice_compiles_once_and_ls_lists_it)
{
    cr_assert_eq(run(out, sizeof out, "prewarm -q --arch sm_90,sm_86 --family quantize,dense --head-dim 64 --dtype bf16"),
                 0, "%s", out);
    cr_assert(strstr(out, "4 kernels (4 compiled, 0 from cache, 0 failed)") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "prewarm -q --arch sm_90,sm_86 --family quantize,dense --head-dim 64 --dtype bf16"),
                 0, "%s", out);
    cr_assert(strstr(out, "4 kernels (0 compiled, 4 from cache, 0 failed)") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "ls"), 0, "%s", out);
    cr_assert(strstr(out, "dense:d=64") != NULL, "%s", out);
    cr_assert(strstr(out, "sm_86") != NULL, "%s", out);
    cr_assert(strstr(out, "4 kernels") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "ls --arch sm_90"), 0, "%s", out);
    cr_assert(strstr(out, "2 kernels") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "verify"), 0, "%s", out);
    cr_assert(strstr(out, "4 kernels checked, 0 bad") != NULL, "%s", out);
}

Test(cli, export_then_import_moves_kernels_between_caches)
{
    cr_assert_eq(run(out, sizeof out, "prewarm -q --arch sm_90,sm_80 --family quantize --head-dim 128 --dtype bf16"), 0,
                 "%s", out);
    char file[512], other[512];
    snprintf(file, sizeof file, "%s/fleet.db", dir);
    snprintf(other, sizeof other, "%s/other.db", dir);
    cr_assert_eq(run(out, sizeof out, "export %s --arch sm_90", file), 0, "%s", out);
    cr_assert(strstr(out, "exported 1 kernels") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "--cache %s import %s", other, file), 0, "%s", out);
    cr_assert(strstr(out, "imported 1 new kernels") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "--cache %s ls", other), 0, "%s", out);
    cr_assert(strstr(out, "1 kernels") != NULL, "%s", out);
    /* the exported file also works as a read-only fleet layer */
    char empty[512];
    snprintf(empty, sizeof empty, "%s/empty.db", dir);
    cr_assert_eq(run(out, sizeof out, "--cache %s --fleet %s prewarm -q --arch sm_90 --family quantize --head-dim 128 "
                                      "--dtype bf16", empty, file),
                 0, "%s", out);
    cr_assert(strstr(out, "1 kernels (0 compiled, 1 from cache, 0 failed)") != NULL, "%s", out);
}

Test(cli, key_prints_canonical_and_resolved_forms)
{
    cr_assert_eq(run(out, sizeof out, "key 'fused:d=128,arch=sm_90'"), 0, "%s", out);
    cr_assert(strstr(out, "parsed    fused:d=128,bq=*") != NULL, "%s", out);
    cr_assert(strstr(out, "resolved  fused:d=128,bq=64,bk=32,seg=128,win=128,dt=bf16,est=8") != NULL, "%s", out);
    cr_assert(strstr(out, "hash") != NULL);
    cr_assert_null(strstr(out, "ignored"), "%s", out);
    /* a field the family does not use is dropped from its key: said, not silent */
    cr_assert_eq(run(out, sizeof out, "key 'quantize:d=64,thr=fixed,block_q=64'"), 0, "%s", out);
    cr_assert(strstr(out, "ignored   thr (the quantize family") && strstr(out, "ignored   block_q"), "%s", out);
    cr_assert_null(strstr(out, "ignored   d"), "%s", out);
}

Test(cli, info_works_without_a_gpu)
{
    cr_assert_eq(run(out, sizeof out, "info"), 0, "%s", out);
    cr_assert(strstr(out, "nvrtc      13.") != NULL || strstr(out, "nvrtc      1") != NULL, "%s", out);
    cr_assert(strstr(out, "cache      ") != NULL, "%s", out);
    cr_assert(strstr(out, "fused.cu") != NULL, "%s", out);
}

/* `sale prewarm --arch sm_90` stores the wgmma kernels as sm_90a cubins (they
 * run on sm_90 devices): `--arch sm_90` lists and exports them too, as the
 * README's fleet command expects; `--arch sm_90a` is exact. */
Test(cli, arch_sm_90_lists_and_exports_its_sm_90a_kernels)
{
    cr_assert_eq(run(out, sizeof out, "prewarm -q --arch sm_90 --family dense,quantize --head-dim 128 --dtype bf16"), 0,
                 "%s", out);
    cr_assert(strstr(out, "sm_90a") != NULL, "no sm_90a kernel in the set: %s", out);
    cr_assert_eq(run(out, sizeof out, "ls --arch sm_90"), 0, "%s", out);
    cr_assert(strstr(out, "\n2 kernels") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "ls --arch sm_90a"), 0, "%s", out);
    cr_assert(strstr(out, "\n1 kernels") != NULL, "%s", out);
    char fleet[512];
    snprintf(fleet, sizeof fleet, "%s/fleet.db", dir);
    cr_assert_eq(run(out, sizeof out, "export %s --arch sm_90", fleet), 0, "%s", out);
    cr_assert(strstr(out, "exported 2 kernels") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "--cache %s/host.db --fleet %s ls --arch sm_90a", dir, fleet), 0, "%s", out);
    cr_assert(strstr(out, "arch=sm_90a") != NULL && strstr(out, " fleet") != NULL, "%s", out);
}

/* `export --arch A --arch B` kept B only: every --arch counts. */
Test(cli, export_takes_every_arch_given)
{
    cr_assert_eq(run(out, sizeof out, "prewarm -q --arch sm_80,sm_86 --family quantize --head-dim 64 --dtype bf16"), 0,
                 "%s", out);
    cr_assert_eq(run(out, sizeof out, "export %s/a.db --arch sm_80 --arch sm_86", dir), 0, "%s", out);
    cr_assert(strstr(out, "exported 2 kernels") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "ls --arch sm_86 --arch sm_80"), 0, "%s", out);
    cr_assert(strstr(out, "\n2 kernels") != NULL, "%s", out);
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    static char buf[4 << 20];
    *n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    char *copy = malloc(*n + 1);
    memcpy(copy, buf, *n);
    return copy;
}

/* The bytes of path are still before[0..n). */
static void assert_same_bytes(const char *path, const char *before, size_t n)
{
    size_t m;
    char *now = slurp(path, &m);
    cr_assert(m == n && memcmp(now, before, n) == 0, "%s changed", path);
    free(now);
}

/* `SALE_CACHE_DIR=X sale export X/kernels.db` wiped the live cache. The
 * cache is refused under any name, --force or not; an existing file needs
 * --force; a refused export leaves the file byte for byte. */
Test(cli, export_never_replaces_the_cache_and_replaces_a_file_only_with_force)
{
    cr_assert_eq(run(out, sizeof out, "prewarm -q --arch sm_80 --family quantize --head-dim 64 --dtype bf16"), 0,
                 "%s", out);
    char cache[512], link[512], fleet[512];
    snprintf(cache, sizeof cache, "%s/kernels.db", dir);
    snprintf(link, sizeof link, "%s/link.db", dir);
    snprintf(fleet, sizeof fleet, "%s/fleet.db", dir);
    cr_assert_eq(symlink(cache, link), 0);
    size_t n;
    char *before = slurp(cache, &n);
    const char *forms[] = {"", " --force"};
    for (int f = 0; f < 2; f++) {
        cr_assert_eq(run(out, sizeof out, "export %s --arch sm_80%s", cache, forms[f]), 1, "%s", out);
        cr_assert(strstr(out, "is the cache being exported") != NULL, "%s", out);
        cr_assert_eq(run(out, sizeof out, "export %s%s", link, forms[f]), 1, "%s", out);
        cr_assert(strstr(out, "is the cache being exported") != NULL, "%s", out);
    }
    assert_same_bytes(cache, before, n);
    free(before);
    cr_assert_eq(run(out, sizeof out, "ls"), 0, "%s", out);
    cr_assert(strstr(out, "\n1 kernels") != NULL, "the cache lost its kernel: %s", out);

    cr_assert_eq(run(out, sizeof out, "export %s", fleet), 0, "%s", out);
    before = slurp(fleet, &n);
    cr_assert_eq(run(out, sizeof out, "export %s", fleet), 1, "an earlier export replaced without --force: %s", out);
    cr_assert(strstr(out, "--force") != NULL, "%s", out);
    assert_same_bytes(fleet, before, n);
    free(before);
    cr_assert_eq(run(out, sizeof out, "export %s --force", fleet), 0, "%s", out);
    cr_assert(strstr(out, "exported 1 kernels") != NULL, "%s", out);
}

/* An export that would hold no kernel wrote an empty fleet file ("exported 0
 * kernels", exit 0): it fails and writes nothing. */
Test(cli, export_of_no_kernels_fails_and_writes_nothing)
{
    cr_assert_eq(run(out, sizeof out, "prewarm -q --arch sm_80 --family quantize --head-dim 64 --dtype bf16"), 0,
                 "%s", out);
    char dest[512];
    snprintf(dest, sizeof dest, "%s/fleet.db", dir);
    cr_assert_eq(run(out, sizeof out, "export %s --arch sm_90", dest), 1, "%s", out);
    cr_assert(strstr(out, "no kernels of sm_90") != NULL, "%s", out);
    cr_assert_neq(access(dest, F_OK), 0, "%s was written", dest);
}

/* ls, verify, info and export created the default cache and its directories
 * (only a named cache was checked): they report it missing, create nothing;
 * export of a missing cache fails. */
Test(cli, commands_that_only_look_create_no_default_cache)
{
    char sub[512], dest[512];
    snprintf(sub, sizeof sub, "%s/new/sub", dir);
    snprintf(dest, sizeof dest, "%s/fleet.db", dir);
    setenv("SALE_CACHE_DIR", sub, 1);
    cr_assert_eq(run(out, sizeof out, "ls"), 1, "%s", out);
    cr_assert(strstr(out, "no cache at") != NULL && strstr(out, "new/sub/kernels.db") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "ls --thresholds"), 1, "%s", out);
    cr_assert_eq(run(out, sizeof out, "verify"), 1, "%s", out);
    cr_assert(strstr(out, "no cache at") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "info"), 0, "%s", out);
    cr_assert(strstr(out, "no cache at") != NULL && strstr(out, "templates") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "export %s", dest), 1, "%s", out);
    cr_assert(strstr(out, "no cache at") != NULL, "%s", out);
    cr_assert_neq(access(dest, F_OK), 0, "export wrote %s", dest);
    cr_assert_eq(run(out, sizeof out, "clear"), 0, "%s", out); /* nothing to clear is no error */
    cr_assert(strstr(out, "no cache at") != NULL && strstr(out, "nothing removed") != NULL, "%s", out);
    char new_dir[512];
    snprintf(new_dir, sizeof new_dir, "%s/new", dir);
    cr_assert_neq(access(new_dir, F_OK), 0, "%s was created", new_dir);
    setenv("SALE_CACHE_DIR", dir, 1);
}

/* A size of 0 was taken as "the default" (an open key field) silently. */
Test(cli, prewarm_refuses_a_zero_size)
{
    const char *opts[] = {"--head-dim", "--block-q", "--block-k", "--block-seg", "--window"};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        cr_assert_eq(run(out, sizeof out, "prewarm -q --arch sm_80 --family quantize --dtype bf16 %s 0", opts[i]), 2,
                     "%s 0: %s", opts[i], out);
        cr_assert(strstr(out, "bad value '0'") != NULL, "%s", out);
    }
    char cache[512];
    snprintf(cache, sizeof cache, "%s/kernels.db", dir);
    cr_assert_neq(access(cache, F_OK), 0, "a refused prewarm compiled");
}

Test(cli, help_lists_version)
{
    cr_assert_eq(run(out, sizeof out, "--help"), 0, "%s", out);
    cr_assert(strstr(out, "--version") != NULL, "%s", out);
    cr_assert_eq(run(out, sizeof out, "--version"), 0, "%s", out);
    cr_assert(strncmp(out, "sale ", 5) == 0, "%s", out);
}

/* A prewarm list option given twice kept only its last list. Now the first
 * replaces the config's list and the next ones add to it. */
Test(cli, prewarm_list_options_given_again_add)
{
    cr_assert_eq(run(out, sizeof out, "prewarm -q --arch sm_80 --arch sm_86 --family quantize --head-dim 64 "
                                      "--head-dim 128 --dtype bf16"),
                 0, "%s", out);
    cr_assert(strstr(out, "4 kernels") != NULL, "2 archs x 2 head dims: %s", out);
}

/* The cache named again as its fleet file listed (and served) every row
 * twice; it is no fleet, and the command says so. */
Test(cli, the_cache_as_its_own_fleet_is_no_fleet)
{
    cr_assert_eq(run(out, sizeof out, "prewarm -q --arch sm_80 --family quantize --head-dim 64 --dtype bf16"), 0,
                 "%s", out);
    char cache[512], link[512];
    snprintf(cache, sizeof cache, "%s/kernels.db", dir);
    snprintf(link, sizeof link, "%s/same.db", dir);
    cr_assert_eq(symlink(cache, link), 0);
    cr_assert_eq(run(out, sizeof out, "--fleet %s ls", link), 0, "%s", out);
    cr_assert(strstr(out, "is the cache") != NULL, "%s", out);
    cr_assert(strstr(out, "\n1 kernels") != NULL || strstr(out, "1 kernels") == out, "listed twice: %s", out);
    cr_assert_null(strstr(out, "2 kernels"), "listed twice: %s", out);
}

/* sale tune without a GPU said so but had created the cache (and its
 * directories) first. */
Test(cli, tune_without_a_gpu_creates_nothing)
{
    char sub[512];
    snprintf(sub, sizeof sub, "%s/tune/sub", dir);
    setenv("SALE_CACHE_DIR", sub, 1);
    int rc = run(out, sizeof out, "tune --seq-len 1024");
    setenv("SALE_CACHE_DIR", dir, 1);
    if (strstr(out, "no GPU") == NULL) {
        fprintf(stderr, "SKIPPED (a GPU is present): tune_without_a_gpu_creates_nothing\n");
        cr_skip_test("a GPU is present");
    }
    cr_assert_eq(rc, 1, "%s", out);
    char t[512];
    snprintf(t, sizeof t, "%s/tune", dir);
    cr_assert_neq(access(t, F_OK), 0, "%s was created: %s", t, out);
}

/* The config's per-arch est_bits was ignored by prewarm (only defaults.est_bits
 * was read, for every arch). */
Test(cli, prewarm_takes_the_configs_per_arch_code_width)
{
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/arch.lua", dir);
    FILE *f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fputs("arch = { sm_80 = { est_bits = 8 } }\n", f);
    fclose(f);
    cr_assert_eq(run(out, sizeof out, "--config %s prewarm -q --arch sm_80,sm_86 --family quantize --head-dim 64 "
                                      "--dtype bf16", cfg),
                 0, "%s", out);
    cr_assert_eq(run(out, sizeof out, "ls"), 0, "%s", out);
    cr_assert(strstr(out, "est=8,qg=row.blk,warps=8,stages=1,arch=sm_80") != NULL, "sm_80 at 8 bits: %s", out);
    cr_assert(strstr(out, "est=4,qg=row.blk,warps=8,stages=1,arch=sm_86") != NULL, "sm_86 at its default: %s", out);
}

/* prewarm --arch sm_90a failed late with the key layer's "a device's arch". */
Test(cli, prewarm_names_devices)
{
    cr_assert_eq(run(out, sizeof out, "prewarm -q --arch sm_90a --family quantize --head-dim 64 --dtype bf16"), 2,
                 "%s", out);
    cr_assert(strstr(out, "prewarm names devices: sm_90") != NULL, "%s", out);
}
