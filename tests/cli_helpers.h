/* cli_helpers.h — what the suites that drive the `sale` command share: a
 * temporary cache/config directory per test, and running the CLI (path in
 * SALE_CLI) with its stdout and stderr captured. Header-only (static). */
#ifndef SALE_TEST_CLI_HELPERS_H
#define SALE_TEST_CLI_HELPERS_H

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

/* A fresh directory from a mkdtemp template ("/tmp/sale_x_XXXXXX") that is
 * the cache and the config home; no user config leaks in. */
static void cli_tmp_setup(char *dir, size_t len, const char *tmpl)
{
    snprintf(dir, len, "%s", tmpl);
    cr_assert_not_null(mkdtemp(dir));
    setenv("SALE_CACHE_DIR", dir, 1);
    setenv("XDG_CONFIG_HOME", dir, 1);
    unsetenv("SALE_CONFIG");
}

/* Remove it, read-only parts included. */
static void cli_tmp_teardown(const char *dir)
{
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "chmod -R u+rwx %s; rm -rf %s", dir, dir);
    cr_assert_eq(system(cmd), 0);
}

/* Run "sale ARGS" (ARGS from fmt), capture stdout+stderr into out, return
 * the exit code (-1 if it did not exit); *secs (may be NULL) its wall time. */
static int cli_vrun(char *out, size_t outlen, double *secs, const char *fmt, va_list ap)
{
    char args[2048], cmd[2600];
    vsnprintf(args, sizeof args, fmt, ap);
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", SALE_CLI, args);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = 0;
    int st = pclose(p);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (secs)
        *secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#endif
