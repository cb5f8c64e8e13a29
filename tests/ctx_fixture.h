/* ctx_fixture.h — the suites that need a sale_ctx on a fresh cache file in a
 * temporary folder (test_jit, test_tune): ctx_fixture_open("jit") in the
 * suite's .init, ctx_fixture_close() in its .fini. Header-only, one fixture
 * per test program. */
#ifndef SALE_TESTS_CTX_FIXTURE_H
#define SALE_TESTS_CTX_FIXTURE_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "sale.h"

static char tmpdir[256];
static sale_ctx *ctx;

/* a context whose cache is tmpdir/kernels.db, tmpdir a new /tmp/sale_TAG_XXXXXX */
static void ctx_fixture_open(const char *tag)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sale_%s_XXXXXX", tag);
    cr_assert_not_null(mkdtemp(tmpdir));
    char path[512];
    snprintf(path, sizeof path, "%s/kernels.db", tmpdir);
    sale_options o = {0};
    o.cache_path = path;
    cr_assert_eq(sale_create(&ctx, &o), SALE_OK, "%s", sale_last_error(ctx));
}

/* the context destroyed, the folder removed */
static void ctx_fixture_close(void)
{
    sale_destroy(ctx);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

#endif
