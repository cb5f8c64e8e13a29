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
    cr_assert(strstr(out, "block_k: must be a multiple of 16") != NULL, "%s", out);
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
}

Test(cli, info_works_without_a_gpu)
{
    cr_assert_eq(run(out, sizeof out, "info"), 0, "%s", out);
    cr_assert(strstr(out, "nvrtc      13.") != NULL || strstr(out, "nvrtc      1") != NULL, "%s", out);
    cr_assert(strstr(out, "cache      ") != NULL, "%s", out);
    cr_assert(strstr(out, "fused.cu") != NULL, "%s", out);
}
