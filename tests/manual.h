/* manual.h — the suites that check what include/sale.h (the manual) says:
 * manual_text() is the header's whole text, NUL-terminated, on the heap
 * (the caller may cut it up and frees it). Header-only. */
#ifndef SALE_TESTS_MANUAL_H
#define SALE_TESTS_MANUAL_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

static char *manual_text(void)
{
    FILE *fp = fopen(SALE_SOURCE_DIR "/include/sale.h", "rb");
    cr_assert_not_null(fp, "cannot read %s/include/sale.h", SALE_SOURCE_DIR);
    cr_assert_eq(fseek(fp, 0, SEEK_END), 0);
    long len = ftell(fp);
    cr_assert_gt(len, 0);
    rewind(fp);
    char *h = malloc((size_t)len + 1);
    cr_assert_not_null(h);
    cr_assert_eq(fread(h, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    h[len] = 0;
    return h;
}

#endif
