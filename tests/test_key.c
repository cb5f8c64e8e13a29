/* test_key.c — kernel keys: validation messages, canonical text round trip,
 * resolution defaults, hash stability. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manual.h"
#include "sale.h"
#include "sale_layout.h" /* SALE_SE_DEFAULT_STAGES */

static sale_status parse(const char *t, sale_key *k, char *err)
{
    return sale_key_parse(t, k, err, 256);
}

Test(key, canonical_text_round_trips_for_every_family)
{
    for (int f = 0; f < SALE_FAMILY_COUNT; f++) {
        sale_key k = sale_key_default((sale_family)f);
        k.arch = 90;
        char err[256], t1[256], t2[256];
        cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK, "%s", err);
        cr_assert_eq(sale_key_format(&k, t1, sizeof t1), SALE_OK);
        sale_key k2;
        cr_assert_eq(parse(t1, &k2, err), SALE_OK, "%s: %s", t1, err);
        cr_assert_eq(sale_key_format(&k2, t2, sizeof t2), SALE_OK);
        cr_assert_str_eq(t1, t2);
        cr_assert_eq(sale_key_hash(&k), sale_key_hash(&k2));
        cr_assert(strncmp(t1, sale_family_name((sale_family)f), strlen(sale_family_name((sale_family)f))) == 0);
    }
}

Test(key, resolve_fills_documented_defaults)
{
    sale_key k = sale_key_default(SALE_FAMILY_FUSED);
    k.arch = 90;
    char err[256];
    cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(k.head_dim, 128);
    cr_assert_eq(k.block_q, 64);
    cr_assert_eq(k.block_k, 32);
    cr_assert_eq(k.block_seg, 128);
    cr_assert_eq(k.local_window, 128);
    cr_assert_eq(k.dtype, SALE_DTYPE_BF16);
    cr_assert_eq(k.est_bits, 8, "sm_90 estimates with int8");
    cr_assert_eq(k.causal, 1);
    cr_assert(k.warps > 0 && k.stages > 0);
    sale_key a = sale_key_default(SALE_FAMILY_FUSED);
    a.arch = 86;
    cr_assert_eq(sale_key_resolve(&a, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(a.est_bits, 4, "sm_86 estimates with native int4");
}

Test(key, open_fields_print_as_star_and_parse_back)
{
    sale_key k = sale_key_default(SALE_FAMILY_DENSE);
    k.arch = 80;
    char t[256], err[256];
    cr_assert_eq(sale_key_format(&k, t, sizeof t), SALE_OK);
    cr_assert(strstr(t, "warps=*") != NULL, "%s", t);
    sale_key k2;
    cr_assert_eq(parse(t, &k2, err), SALE_OK, "%s", err);
    cr_assert_eq(k2.warps, 0);
    cr_assert_eq(k2.arch, 80);
}

Test(key, fields_a_family_ignores_are_not_in_its_key)
{
    sale_key a = sale_key_default(SALE_FAMILY_DENSE), b = a;
    a.arch = b.arch = 90;
    a.block_seg = 64;
    b.block_seg = 256;
    char err[256], ta[256], tb[256];
    cr_assert_eq(sale_key_resolve(&a, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(sale_key_resolve(&b, err, sizeof err), SALE_OK, "%s", err);
    sale_key_format(&a, ta, sizeof ta);
    sale_key_format(&b, tb, sizeof tb);
    cr_assert_str_eq(ta, tb, "dense does not depend on block_seg");
    cr_assert(strstr(ta, "seg=") == NULL);
    sale_key f1 = sale_key_default(SALE_FAMILY_FUSED), f2 = f1;
    f1.arch = f2.arch = 90;
    f1.block_seg = 64;
    f2.block_seg = 256;
    sale_key_resolve(&f1, err, sizeof err);
    sale_key_resolve(&f2, err, sizeof err);
    cr_assert_neq(sale_key_hash(&f1), sale_key_hash(&f2), "fused depends on block_seg");
}

static void expect_invalid(const char *text, const char *field, const char *words)
{
    sale_key k;
    char err[256] = "";
    cr_assert_eq(parse(text, &k, err), SALE_ERR_INVALID, "'%s' accepted", text);
    cr_assert(strncmp(err, field, strlen(field)) == 0, "'%s': message '%s' should start with '%s'", text, err, field);
    cr_assert(strstr(err, words) != NULL, "'%s': message '%s' should say '%s'", text, err, words);
}

Test(key, invalid_combinations_name_the_field_and_the_rule)
{
    expect_invalid("fused:bk=32,seg=100", "block_seg", "multiple of block_k");
    expect_invalid("fused:bk=16,seg=1024", "block_seg", "at most 32 blocks");
    expect_invalid("fused:bk=24", "block_k", "16, 32 or 64");
    expect_invalid("fused:bk=48,seg=96,win=96", "block_k", "16, 32 or 64");
    expect_invalid("fused:d=96", "head_dim", "64 or 128");
    expect_invalid("fused:stages=8", "stages", "between 1 and 7");
    expect_invalid("fused:d=256", "head_dim", "shared memory");
    expect_invalid("fused:est=4,arch=sm_90", "est_bits", "emulated");
    expect_invalid("fused:est=6", "est_bits", "4 or 8");
    expect_invalid("fused:win=100,bk=32", "local_window", "multiple of block_k");
    expect_invalid("fused:causal=0", "causal", "causal prefill");
    expect_invalid("fused:arch=sm_75", "arch", "unknown architecture");
    expect_invalid("fused:bq=48", "block_q", "64 or 128");
    expect_invalid("warp:d=128", "family", "unknown family");
    expect_invalid("fused:colour=blue", "colour", "unknown field");
    expect_invalid("fused:d=abc", "d", "integer");
    expect_invalid("fused:dt=f64", "dtype", "f16 or bf16");
}

Test(key, four_bit_estimation_allowed_where_native)
{
    sale_key k;
    char err[256];
    cr_assert_eq(parse("fused:est=4,arch=sm_89", &k, err), SALE_OK, "%s", err);
    cr_assert_eq(k.est_bits, 4);
    /* dense does not estimate: est is not part of its key, so no refusal */
    cr_assert_eq(parse("dense:arch=sm_90", &k, err), SALE_OK, "%s", err);
}

Test(key, arch_names_parse_and_print)
{
    cr_assert_eq(sale_arch_parse("sm_90a"), SALE_ARCH_SM90A);
    cr_assert_eq(sale_arch_parse("86"), 86);
    cr_assert_eq(sale_arch_parse("current"), SALE_ARCH_CURRENT);
    cr_assert_eq(sale_arch_parse("sm_70"), -1);
    cr_assert_str_eq(sale_arch_name(89), "sm_89");
    cr_assert_eq(sale_arch_name(75), NULL);
}

Test(key, hash_is_stable_across_runs)
{
    sale_key k;
    char err[256];
    cr_assert_eq(parse("fused:d=128,bq=64,bk=32,seg=128,win=128,dt=bf16,est=8,causal=1,warps=4,stages=2,arch=sm_90",
                       &k, err),
                 SALE_OK, "%s", err);
    /* FNV-1a of the canonical text: a fixed value, so caches stay valid across builds */
    char t[256];
    sale_key_format(&k, t, sizeof t);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *p = t; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
    cr_assert_eq(sale_key_hash(&k), h);
}

Test(key, small_buffer_is_refused_not_overrun)
{
    sale_key k = sale_key_default(SALE_FAMILY_FUSED);
    k.arch = 90;
    char buf[16];
    memset(buf, 'x', sizeof buf);
    cr_assert_eq(sale_key_format(&k, buf, 10), SALE_ERR_INVALID);
    cr_assert_eq(buf[10], 'x', "wrote past the given length");
}

/* Version 0 (plain) reads every algorithm field and has fixed tiles: one
 * thread per query row (warps = block_q/32), no pipeline (stages = 1). */
Test(key, plain_key_round_trips_and_has_fixed_tiles)
{
    const char *text = "plain:d=128,bq=64,bk=32,seg=128,win=128,dt=bf16,est=8,qg=row.blk,causal=1,warps=2,stages=1,"
                       "arch=sm_90,thr=run";
    sale_key k;
    char err[256], t[256];
    cr_assert_eq(parse(text, &k, err), SALE_OK, "%s", err);
    cr_assert_eq(k.family, SALE_FAMILY_PLAIN);
    cr_assert_str_eq(sale_family_name(SALE_FAMILY_PLAIN), "plain");
    cr_assert_eq(sale_key_format(&k, t, sizeof t), SALE_OK);
    cr_assert_str_eq(t, text);

    /* open tiles resolve to warps = block_q/32, stages = 1 */
    cr_assert_eq(parse("plain:bq=128,arch=sm_89", &k, err), SALE_OK, "%s", err);
    cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(k.warps, 4);
    cr_assert_eq(k.stages, 1);
    cr_assert_eq(k.est_bits, 4, "sm_89 codes are 4-bit: plain decodes what quantize wrote");
    cr_assert_eq(parse("plain:arch=sm_80", &k, err), SALE_OK, "%s", err);
    cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(k.warps, 2);
    cr_assert_eq(k.stages, 1);

    /* seg, win and est change its code: they are in its key */
    sale_key a, b;
    cr_assert_eq(parse("plain:seg=64,arch=sm_90", &a, err), SALE_OK, "%s", err);
    cr_assert_eq(parse("plain:seg=256,arch=sm_90", &b, err), SALE_OK, "%s", err);
    sale_key_resolve(&a, err, sizeof err);
    sale_key_resolve(&b, err, sizeof err);
    cr_assert_neq(sale_key_hash(&a), sale_key_hash(&b), "plain depends on block_seg");
    sale_key_format(&a, t, sizeof t);
    cr_assert(strstr(t, "win=") && strstr(t, "est=") && strstr(t, "seg=64") && strstr(t, "thr=run"), "%s", t);

    expect_invalid("plain:bq=64,warps=4,stages=1,d=128,bk=32,seg=128", "tiles", "one thread per query row");
    expect_invalid("plain:bq=64,warps=2,stages=2,d=128,bk=32,seg=128", "tiles", "stages = 1");
    expect_invalid("plain:est=4,arch=sm_90", "est_bits", "emulated");
    expect_invalid("plain:seg=100,bk=32", "block_seg", "multiple of block_k");
}

/* The cubin sale_attention runs on a device: sm_90 takes the sm_90a wgmma
 * kernels for dense and attend at head_dim 128 (attend only with 64 x 32
 * masks); nothing else moves. */
Test(key, attention_arch_picks_the_wgmma_kernels_on_sm90_only)
{
    cr_assert_eq(sale_attention_arch(SALE_FAMILY_DENSE, 128, 64, 32, 90), SALE_ARCH_SM90A);
    cr_assert_eq(sale_attention_arch(SALE_FAMILY_ATTEND, 128, 64, 32, 90), SALE_ARCH_SM90A);
    cr_assert_eq(sale_attention_arch(SALE_FAMILY_ATTEND, 128, 128, 32, 90), 90);
    cr_assert_eq(sale_attention_arch(SALE_FAMILY_ATTEND, 128, 64, 16, 90), 90);
    cr_assert_eq(sale_attention_arch(SALE_FAMILY_DENSE, 64, 64, 32, 90), 90);
    cr_assert_eq(sale_attention_arch(SALE_FAMILY_FUSED, 128, 64, 32, 90), SALE_ARCH_SM90A); /* its attention half */
    cr_assert_eq(sale_attention_arch(SALE_FAMILY_FUSED, 128, 128, 32, 90), 90);
    cr_assert_eq(sale_attention_arch(SALE_FAMILY_FUSED, 128, 64, 16, 90), 90);
    cr_assert_eq(sale_attention_arch(SALE_FAMILY_FUSED, 64, 64, 32, 90), 90);
    cr_assert_eq(sale_attention_arch(SALE_FAMILY_FUSED, 128, 64, 32, 89), 89);
    cr_assert_eq(sale_attention_arch(SALE_FAMILY_SELECT, 128, 64, 32, 90), 90);
    cr_assert_eq(sale_attention_arch(SALE_FAMILY_QUANTIZE, 128, 64, 32, 90), 90);
    cr_assert_eq(sale_attention_arch(SALE_FAMILY_DENSE, 128, 64, 32, 89), 89);
    cr_assert_eq(sale_attention_arch(SALE_FAMILY_DENSE, 128, 64, 32, 80), 80);
}

/* The threshold variant (thr, SALE_THR_*): part of the key of the families
 * that select (fused, select, plain), written last. */
Test(key, thr_round_trips_and_changes_the_key_of_selecting_families)
{
    const sale_family fam[] = {SALE_FAMILY_FUSED, SALE_FAMILY_SELECT, SALE_FAMILY_PLAIN};
    for (size_t i = 0; i < sizeof fam / sizeof fam[0]; i++) {
        sale_key run = sale_key_default(fam[i]), fixed = run;
        run.arch = fixed.arch = 89;
        run.thr = SALE_THR_RUN;
        fixed.thr = SALE_THR_FIXED;
        char err[256], tr[256], tf[256], t2[256];
        cr_assert_eq(sale_key_resolve(&run, err, sizeof err), SALE_OK, "%s", err);
        cr_assert_eq(sale_key_resolve(&fixed, err, sizeof err), SALE_OK, "%s", err);
        cr_assert_eq(fixed.thr, SALE_THR_FIXED, "resolve keeps a given variant");
        sale_key_format(&run, tr, sizeof tr);
        sale_key_format(&fixed, tf, sizeof tf);
        size_t lr = strlen(tr), lf = strlen(tf);
        cr_assert(lr > 8 && !strcmp(tr + lr - 8, ",thr=run"), "thr last: %s", tr);
        cr_assert(lf > 10 && !strcmp(tf + lf - 10, ",thr=fixed"), "thr last: %s", tf);
        cr_assert_neq(sale_key_hash(&run), sale_key_hash(&fixed), "%s: a variant offered is part of the key", tf);
        sale_key k2;
        cr_assert_eq(parse(tf, &k2, err), SALE_OK, "%s: %s", tf, err);
        cr_assert_eq(k2.thr, SALE_THR_FIXED);
        sale_key_format(&k2, t2, sizeof t2);
        cr_assert_str_eq(t2, tf);
        cr_assert_eq(parse("fused:threshold=run", &k2, err), SALE_OK, "%s", err);
        cr_assert_eq(k2.thr, SALE_THR_RUN, "the long name parses too");
    }
    /* open prints as *, parses back open, resolves to run */
    sale_key o = sale_key_default(SALE_FAMILY_FUSED), o2;
    o.arch = 90;
    char t[256], err[256];
    sale_key_format(&o, t, sizeof t);
    cr_assert(strstr(t, ",thr=*") != NULL, "%s", t);
    cr_assert_eq(parse(t, &o2, err), SALE_OK, "%s", err);
    cr_assert_eq(o2.thr, SALE_THR_OPEN);
    cr_assert_eq(sale_key_resolve(&o2, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(o2.thr, SALE_THR_RUN, "open resolves to run, the default");
    cr_assert_str_eq(sale_thr_name(SALE_THR_FIXED), "fixed");
    cr_assert_eq(sale_thr_parse("fixed"), SALE_THR_FIXED);
    cr_assert_eq(sale_thr_parse("fix"), -1);
    cr_assert_eq(sale_thr_name(3), NULL);
}

/* Text written before thr existed (cache rows, tuned winners, scripts) still
 * parses: thr stays open and resolves to run, the only behaviour then. Its
 * canonical text gains ",thr=run", so such a cache row is simply a miss. */
Test(key, text_without_thr_parses_open_and_resolves_to_run)
{
    const char *old = "fused:d=128,bq=64,bk=32,seg=128,win=128,dt=bf16,est=8,qg=row.blk,causal=1,warps=4,stages=2,"
                      "arch=sm_90";
    sale_key k;
    char err[256], t[256];
    cr_assert_eq(parse(old, &k, err), SALE_OK, "%s", err);
    cr_assert_eq(k.thr, SALE_THR_OPEN);
    cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(k.thr, SALE_THR_RUN);
    sale_key_format(&k, t, sizeof t);
    cr_assert(!strncmp(t, old, strlen(old)) && !strcmp(t + strlen(old), ",thr=run"), "%s", t);
}

Test(key, thr_bad_values_are_refused_naming_the_field)
{
    expect_invalid("fused:thr=sometimes", "thr", "unknown threshold variant");
    expect_invalid("select:thr=1", "thr", "run, fixed");
    expect_invalid("fused:thr=run,thr=fixed", "thr", "given twice");
    expect_invalid("plain:threshold=", "thr", "unknown threshold variant");
    sale_key k = sale_key_default(SALE_FAMILY_FUSED);
    k.thr = 7;
    char err[256] = "";
    cr_assert_eq(sale_key_validate(&k, err, sizeof err), SALE_ERR_INVALID);
    cr_assert(!strncmp(err, "thr:", 4), "%s", err);
    k.thr = -1;
    cr_assert_eq(sale_key_validate(&k, err, sizeof err), SALE_ERR_INVALID);
}

/* Families that do not select ignore thr: it is not in their key and
 * resolves to one value, so prewarming over both variants builds no extra
 * cubin for them. */
Test(key, thr_is_not_in_the_key_of_families_that_do_not_select)
{
    const sale_family fam[] = {SALE_FAMILY_QUANTIZE, SALE_FAMILY_ATTEND, SALE_FAMILY_DENSE};
    for (size_t i = 0; i < sizeof fam / sizeof fam[0]; i++) {
        sale_key a = sale_key_default(fam[i]), b = a;
        a.arch = b.arch = 90;
        a.thr = SALE_THR_FIXED;
        b.thr = SALE_THR_RUN;
        char err[256], ta[256], tb[256];
        cr_assert_eq(sale_key_resolve(&a, err, sizeof err), SALE_OK, "%s", err);
        cr_assert_eq(sale_key_resolve(&b, err, sizeof err), SALE_OK, "%s", err);
        cr_assert_eq(a.thr, b.thr);
        sale_key_format(&a, ta, sizeof ta);
        sale_key_format(&b, tb, sizeof tb);
        cr_assert_str_eq(ta, tb);
        cr_assert(strstr(ta, "thr=") == NULL, "%s", ta);
        cr_assert_eq(sale_key_hash(&a), sale_key_hash(&b));
    }
}

/* fused on an sm_90 device: its attention half is wgmma (sm_90a) at head_dim
 * 128, block_q 64, block_k 32 or 64 and one warpgroup, under either
 * threshold variant; other tiles keep sm_90; the sm_90a key resolves, and
 * its layout has the wgmma half's 1 KB of alignment slack */
Test(key, run_arch_of_fused)
{
    sale_key k = sale_key_default(SALE_FAMILY_FUSED);
    cr_assert_eq(sale_key_run_arch(&k, 90), SALE_ARCH_SM90A);
    cr_assert_eq(sale_key_run_arch(&k, 86), 86);
    k.thr = SALE_THR_FIXED;
    cr_assert_eq(sale_key_run_arch(&k, 90), SALE_ARCH_SM90A);
    k.block_k = 64;
    cr_assert_eq(sale_key_run_arch(&k, 90), SALE_ARCH_SM90A);
    k.block_k = 16;
    cr_assert_eq(sale_key_run_arch(&k, 90), 90);
    k.block_k = 0;
    k.warps = 2; /* an mma.sync tile asked for */
    cr_assert_eq(sale_key_run_arch(&k, 90), 90);
    k.warps = 4;
    k.arch = sale_key_run_arch(&k, 90);
    cr_assert_eq(k.arch, SALE_ARCH_SM90A);
    char err[256] = "";
    cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK, "%s", err);
    sale_layout_cfg c = {(int)k.family, k.head_dim, k.block_q, k.block_k, k.block_seg, k.local_window,
                         (int)k.dtype,  k.est_bits, k.warps,   k.stages,  k.arch,         k.thr};
    cr_assert(sale_layout_fused_wg(&c), "the resolved key is the wgmma half's tile");
    sale_layout_cfg c90 = c;
    c90.arch = 90;
    cr_assert(!sale_layout_fused_wg(&c90));
    cr_assert_eq(sale_layout_smem(&c), sale_layout_smem(&c90) + 1024u, "1 KB of slack for the aligned tiles");
    cr_assert(sale_layout_legal(&c, NULL, 0));
}

/* fused's wgmma tiles (sale_layout_swz128, written by cp.async, read by
 * wgmma descriptors with the 128-byte swizzle): on a 1 KB-aligned base each
 * chunk sits where the hardware's address-bit swizzle puts the chunk of the
 * plain layout (two 64-column halves of 128-byte rows), and the map is a
 * permutation of the tile's chunks */
Test(key, fused_wg_tile_layout_is_the_128_byte_swizzle)
{
    for (int rows = 32; rows <= 64; rows += 32) {
        char seen[64 * 256 / 16] = {0};
        for (int r = 0; r < rows; r++)
            for (int ch = 0; ch < 16; ch++) {
                const int plain = (ch >> 3) * rows * 128 + r * 128 + (ch & 7) * 16;
                const int hw = plain ^ (((plain >> 7) & 7) << 4);
                const int o = sale_layout_swz128(r, ch, rows);
                cr_assert_eq(o, hw, "rows %d, row %d, chunk %d: %d, the swizzle puts it at %d", rows, r, ch, o, hw);
                cr_assert(o >= 0 && o + 16 <= rows * 256 && o % 16 == 0);
                cr_assert_eq(seen[o / 16], 0, "rows %d: two chunks at %d", rows, o);
                seen[o / 16] = 1;
            }
    }
}

/* the rows kernel's staged store (sale_layout_wr_ochunk, _stsm, _ldrow):
 * a warp's 16 x 16 chunks are 256 distinct 16-byte slots of its 4 KB; each
 * stmatrix.x4 gives matrix j = lane / 8 the rows 8 (j % 2) .. + 7 of n8
 * block nt + j / 2 (the order of the four registers the kernel passes), one
 * row a lane; the 8 row addresses of a matrix and the 8 chunks of a
 * quarter-warp's 16-byte loads sit on 8 different bank groups (no bank
 * conflicts); the read-back visits every chunk exactly once */
/* stmatrix.x4 of n8 blocks nt, nt + 1: lane 8 j + i gives row (j % 2) 8 + i
 * of block nt + j / 2, at stsm(lane, nt) == chunk(row, block); the 8 rows of
 * each matrix on 8 different bank groups (no bank conflicts) */
static void stsm_rows_and_banks(int (*stsm)(int, int), int (*chunk)(int, int))
{
    for (int nt = 0; nt < 16; nt += 2)
        for (int j = 0; j < 4; j++) {
            int groups = 0;
            for (int i = 0; i < 8; i++) {
                const int lane = 8 * j + i, o = stsm(lane, nt);
                const int r = (j & 1) * 8 + i, ch = nt + (j >> 1);
                cr_assert_eq(o, chunk(r, ch), "stmatrix %d, lane %d: not row %d of block %d", nt / 2, lane, r, ch);
                groups |= 1 << ((o / 16) & 7);
            }
            cr_assert_eq(groups, 0xff, "stmatrix %d, matrix %d: bank conflicts (groups %#x)", nt / 2, j, groups);
        }
}

Test(key, rows_staged_store_layout)
{
    char seen[256] = {0};
    for (int r = 0; r < 16; r++)
        for (int ch = 0; ch < 16; ch++) {
            const int o = sale_layout_wr_ochunk(r, ch);
            cr_assert(o >= 0 && o + 16 <= 4096 && o % 16 == 0, "row %d chunk %d at %d", r, ch, o);
            cr_assert(o / 256 == r, "row %d chunk %d leaves its row (%d)", r, ch, o);
            cr_assert_eq(seen[o / 16], 0, "two chunks at %d", o);
            seen[o / 16] = 1;
        }
    stsm_rows_and_banks(sale_layout_wr_stsm, sale_layout_wr_ochunk);
    char read[256] = {0};
    for (int k = 0; k < 8; k++)
        for (int q = 0; q < 4; q++) {
            int groups = 0;
            for (int l = 8 * q; l < 8 * q + 8; l++) {
                const int r = sale_layout_wr_ldrow(l, k), o = sale_layout_wr_ochunk(r, l & 15);
                cr_assert(r >= 0 && r < 16);
                groups |= 1 << ((o / 16) & 7);
                cr_assert_eq(read[o / 16], 0, "chunk at %d read twice", o);
                read[o / 16] = 1;
            }
            cr_assert_eq(groups, 0xff, "read-back round %d, quarter %d: bank conflicts (groups %#x)", k, q, groups);
        }
    for (int i = 0; i < 256; i++)
        cr_assert(read[i], "chunk %d never read back", i);
}

/* The same rows through TMA (store_staged with O's map): two boxes of 64
 * columns x 16 rows, 2 KB each, in the 128-byte swizzle. TMA's rule, written
 * here from the PTX ISA's description of the swizzle mode: the unswizzled
 * offset u of (box row r, 16-byte chunk c) is 128 r + 16 c, and the bytes sit
 * at u with address bits 4-6 XORed by bits 7-9. Every chunk of the 4 KB
 * once, each stmatrix matrix's 8 rows on 8 bank groups. */
Test(key, rows_staged_store_tma_layout)
{
    char seen[256] = {0};
    for (int r = 0; r < 16; r++)
        for (int g = 0; g < 16; g++) {
            const int o = sale_layout_wr_tma_chunk(r, g), half = g / 8, u = 128 * r + 16 * (g % 8);
            const int swz = u ^ (((u >> 7) & 7) << 4);
            cr_assert_eq(o, half * 2048 + swz, "row %d chunk %d at %d, TMA reads it at %d", r, g, o, half * 2048 + swz);
            cr_assert_eq(seen[o / 16], 0, "two chunks at %d", o);
            seen[o / 16] = 1;
        }
    stsm_rows_and_banks(sale_layout_wr_tma_stsm, sale_layout_wr_tma_chunk);
}

/* The rows kernel's Q fragments (wgmma's register A operand) by ldmatrix.x4
 * from the Q tile that TMA wrote: two 64-column halves of 64 rows x 128
 * bytes, 8 KB apart, in the 128-byte swizzle (TMA's rule as above, on the
 * tile's 1 KB-aligned base). For every warp, k16 step and lane: the address
 * is where TMA put the 8 columns that row of the m16n8k16 A fragment's
 * matrix L / 8 needs (rows L % 8 (+8 for matrices 1, 3), columns 8 (L / 16)
 * further for matrices 2, 3), and the 8 lanes of each matrix read 8 bank
 * groups (no conflicts). Every 16-byte chunk of the 16 KB tile is read once
 * per row (8 steps x 2 chunks x 64 rows). */
Test(key, rows_q_fragments_follow_the_tma_swizzle)
{
    int seen[1024] = {0};
    for (int w = 0; w < 4; w++)
        for (int ks = 0; ks < 8; ks++) {
            for (int lane = 0; lane < 32; lane++) {
                const int m = lane / 8, row = 16 * w + (lane & 7) + (m & 1) * 8, col = 16 * ks + (m >> 1) * 8;
                const int half = col / 64, u = 128 * row + 2 * (col % 64);
                const int want = half * 8192 + (u ^ (((u >> 7) & 7) << 4));
                const int o = sale_layout_wr_qa(lane, w, ks);
                cr_assert_eq(o, want, "warp %d step %d lane %d: %d, TMA put row %d column %d at %d", w, ks, lane, o,
                             row, col, want);
                cr_assert_eq(o % 16, 0, "ldmatrix rows are 16-byte aligned");
                seen[o / 16]++;
            }
            for (int m = 0; m < 4; m++) {
                int groups = 0;
                for (int l = 8 * m; l < 8 * m + 8; l++)
                    groups |= 1 << ((sale_layout_wr_qa(l, w, ks) / 16) % 8);
                cr_assert_eq(groups, 0xff, "warp %d step %d matrix %d: bank conflicts (groups %#x)", w, ks, m, groups);
            }
        }
    for (int i = 0; i < 1024; i++)
        cr_assert_eq(seen[i], 1, "chunk %d of the Q tile read %d times", i, seen[i]);
}

/* which cubin sale_attention runs for a key on an sm_90 device: the thr=fixed
 * select at the wgmma estimation's block sizes is sm_90a (open tiles, 12 or
 * 20 warps), other tiles and thr=run stay sm_90; dense and attend as
 * sale_attention_arch says; other archs unchanged; NULL is the arch */
Test(key, run_arch_of_the_thr_fixed_select)
{
    sale_key k = sale_key_default(SALE_FAMILY_SELECT);
    k.thr = SALE_THR_FIXED;
    cr_assert_eq(sale_key_run_arch(&k, 90), SALE_ARCH_SM90A);
    cr_assert_eq(sale_key_run_arch(&k, 89), 89);
    k.warps = 20;
    cr_assert_eq(sale_key_run_arch(&k, 90), SALE_ARCH_SM90A);
    k.warps = 4; /* an mma.sync tile asked for */
    cr_assert_eq(sale_key_run_arch(&k, 90), 90);
    k.warps = 0;
    k.block_seg = 64; /* the wgmma estimation's segment is one 128-key tile */
    cr_assert_eq(sale_key_run_arch(&k, 90), 90);
    k.block_seg = 0;
    k.thr = SALE_THR_RUN;
    cr_assert_eq(sale_key_run_arch(&k, 90), 90);
    sale_key d = sale_key_default(SALE_FAMILY_DENSE);
    cr_assert_eq(sale_key_run_arch(&d, 90), SALE_ARCH_SM90A);
    cr_assert_eq(sale_key_run_arch(NULL, 86), 86);
    /* the resolved sm_90a key is the 4-warpgroup estimation, legal */
    k.thr = SALE_THR_FIXED;
    k.arch = sale_key_run_arch(&k, 90);
    char err[256] = "";
    cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(k.warps, 20);
    cr_assert_eq(k.stages, SALE_SE_DEFAULT_STAGES);
}

/* attend's rows kernel (wgmma_rows.cuh, warps 5): its rules, its shared
 * memory (two CTAs must fit in an SM's 228 KB, each with the 1 KB the
 * system reserves), its launch plan, and where it is the default */
Test(key, attend_rows_kernel_layout_plan_and_default)
{
    sale_layout_cfg c = {SALE_LF_ATTEND, 128, 64, 32, 128, 128, 1, 8, SALE_WR_WARPS, 3, 901, 0};
    char why[160];
    cr_assert(sale_layout_wgmma_rows(&c));
    cr_assert(sale_layout_wgmma(&c), "it takes the wgmma launch path (TMA maps)");
    cr_assert(sale_layout_legal(&c, why, sizeof why), "%s", why);
    cr_assert_eq(sale_layout_smem(&c), 16384u + 3u * 2u * 16384u + 256u + SALE_WR_QUEUE_BYTES);
    cr_assert_leq(2u * (sale_layout_smem(&c) + 1024u), 233472u, "two CTAs an SM");
    c.stages = 2;
    cr_assert(sale_layout_legal(&c, why, sizeof why), "%s", why);
    c.stages = 4;
    cr_assert(!sale_layout_legal(&c, why, sizeof why), "4 stages do not fit twice");
    c.stages = 3;
    cr_assert_str_eq(sale_layout_entry(&c), "sale_attend_rows_kernel");
    sale_launch L[4];
    cr_assert_eq(sale_layout_plan(&c, 2, 32, 8, 65536 + 1, L), 1);
    cr_assert_eq(L[0].grid[0], 1025u * 32u * 2u, "one CTA a 64-row mask row: %u", L[0].grid[0]);
    cr_assert_eq(L[0].block, 256u, "the consumer and the producer warpgroup");
    cr_assert_eq(sale_layout_threads(&c), 256u);
    cr_assert_str_eq(L[0].entry, "sale_attend_rows_kernel");
    /* elsewhere there is no rows kernel */
    sale_layout_cfg d = c;
    d.arch = 90;
    cr_assert(!sale_layout_wgmma_rows(&d));
    d = c;
    d.head_dim = 64;
    cr_assert(!sale_layout_wgmma_rows(&d));
    d = c;
    d.block_q = 128;
    cr_assert(!sale_layout_legal(&d, why, sizeof why), "the rows kernel reads masks of block_q 64");
    d = c;
    d.family = SALE_LF_DENSE;
    cr_assert(!sale_layout_wgmma_rows(&d));
    /* the default: up to the 64K bucket on sm_90a, not above, not without a length, not on sm_90 */
    sale_layout_cfg o = c;
    o.warps = 0;
    o.stages = 0;
    cr_assert(sale_layout_rows_default(&o, 32768));
    cr_assert(sale_layout_rows_default(&o, SALE_WR_DEFAULT_MAX_N));
    cr_assert(!sale_layout_rows_default(&o, 2 * SALE_WR_DEFAULT_MAX_N));
    cr_assert(!sale_layout_rows_default(&o, 0));
    o.arch = 90;
    cr_assert(!sale_layout_rows_default(&o, 32768));
    o.arch = 901;
    o.block_k = 64;
    cr_assert(!sale_layout_rows_default(&o, 32768), "block_k 64: the attend wgmma kernels read 32-key blocks");
}

/* the persistent sm_90a attend kernels: how many CTAs an SM the host
 * launches (any grid is correct), and the two-row kernel's shared memory
 * (its queue included) within what one CTA may have */
Test(key, persistent_attend_kernels_per_sm_and_two_row_smem)
{
    sale_layout_cfg rows = {SALE_LF_ATTEND, 128, 64, 32, 128, 128, 1, 8, SALE_WR_WARPS, 3, 901, 0};
    sale_layout_cfg two = rows;
    two.warps = SALE_WG_WARPS;
    char why[160];
    cr_assert_eq(sale_layout_persistent_per_sm(&rows), 2);
    cr_assert_eq(sale_layout_persistent_per_sm(&two), 1);
    cr_assert(sale_layout_legal(&two, why, sizeof why), "%s", why);
    cr_assert_eq(sale_layout_smem(&two), 1024u + 32768u + 3u * 2u * 32768u + 256u + SALE_WG_QUEUE_BYTES);
    cr_assert_leq(sale_layout_smem(&two), 232448u, "one CTA an SM: 227 KB");
    sale_layout_cfg d = two;
    d.family = SALE_LF_DENSE;
    cr_assert_eq(sale_layout_persistent_per_sm(&d), 0, "dense is one CTA a query tile");
    cr_assert_eq(sale_layout_smem(&d), 1024u + 32768u + 3u * 2u * 32768u + 256u, "dense has no queue");
    d = two;
    d.arch = 90;
    cr_assert_eq(sale_layout_persistent_per_sm(&d), 0, "sm_90: the mma.sync attend");
    d = two;
    d.family = SALE_LF_SELECT;
    cr_assert_eq(sale_layout_persistent_per_sm(&d), 0);
}

/* a key asking for the rows kernel parses, resolves and formats as itself */
Test(key, attend_rows_key_round_trips)
{
    sale_key k;
    char err[256];
    cr_assert_eq(sale_key_parse("attend:d=128,bq=64,bk=32,dt=bf16,causal=1,warps=5,stages=3,arch=sm_90a", &k, err, sizeof err),
                 SALE_OK, "%s", err);
    cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK, "%s", err);
    char t[256];
    sale_key_format(&k, t, sizeof t);
    cr_assert(strstr(t, "warps=5") && strstr(t, "arch=sm_90a"), "%s", t);
    cr_assert_neq(sale_key_parse("attend:d=128,bq=64,bk=32,dt=bf16,causal=1,warps=5,stages=3,arch=sm_90", &k, err, sizeof err) == SALE_OK &&
                      sale_key_resolve(&k, err, sizeof err) == SALE_OK,
                  1, "warps 5 on sm_90 (the mma.sync attend) must be refused");
}

/* sale_key_run_set: what sale_attention runs for a key on a device arch
 * (what `sale prewarm` and Python's sale.prewarm build). */
Test(key, run_set_is_what_attention_runs_on_each_arch)
{
    sale_key out[2];
    char err[256] = "", t[256];
    sale_key k = sale_key_default(SALE_FAMILY_ATTEND);
    k.head_dim = 128, k.arch = 90;
    cr_assert_eq(sale_key_run_set(&k, out, err, sizeof err), 2, "%s", err);
    cr_assert_eq(out[0].arch, SALE_ARCH_SM90A);
    cr_assert_eq(out[0].warps, SALE_WG_WARPS, "the two-row kernel");
    cr_assert_eq(out[1].arch, SALE_ARCH_SM90A);
    cr_assert_eq(out[1].warps, SALE_WR_WARPS, "and the rows kernel");
    k.warps = SALE_WR_WARPS; /* asking for the rows kernel itself: once */
    cr_assert_eq(sale_key_run_set(&k, out, err, sizeof err), 1, "%s", err);
    cr_assert_eq(out[0].warps, SALE_WR_WARPS);
    k.warps = 0, k.arch = 80;
    cr_assert_eq(sale_key_run_set(&k, out, err, sizeof err), 1, "%s", err);
    cr_assert_eq(out[0].arch, 80);

    sale_key s = sale_key_default(SALE_FAMILY_SELECT);
    s.head_dim = 128, s.arch = 90, s.thr = SALE_THR_FIXED, s.est_bits = 4; /* no 4-bit MMA on sm_90 */
    cr_assert_eq(sale_key_run_set(&s, out, err, sizeof err), 1, "%s", err);
    sale_key_format(&out[0], t, sizeof t);
    cr_assert_eq(out[0].arch, SALE_ARCH_SM90A, "%s: the wgmma estimation", t);
    cr_assert_eq(out[0].est_bits, 8, "%s", t);
    s.thr = SALE_THR_RUN;
    cr_assert_eq(sale_key_run_set(&s, out, err, sizeof err), 1, "%s", err);
    cr_assert_eq(out[0].arch, 90, "the run select is the mma.sync kernel");

    k.arch = SALE_ARCH_CURRENT;
    cr_assert_eq(sale_key_run_set(&k, out, err, sizeof err), -1);
    cr_assert(strstr(err, "arch"), "%s", err);
    k.arch = 90, k.block_q = 48; /* not a legal block size: the reason comes back */
    err[0] = 0;
    cr_assert_eq(sale_key_run_set(&k, out, err, sizeof err), -1);
    cr_assert(err[0], "no reason given");
    cr_assert_eq(sale_key_run_set(NULL, out, err, sizeof err), -1);
}

/* The fields each family's key keeps (sale_key_format leaves the others
 * out), by short and long name; an unknown-to-the-rule field is kept. */
Test(key, family_uses_names_the_fields_each_family_keeps)
{
    cr_assert_eq(sale_key_family_uses(SALE_FAMILY_QUANTIZE, "thr"), 0);
    cr_assert_eq(sale_key_family_uses(SALE_FAMILY_QUANTIZE, "block_q"), 0);
    cr_assert_eq(sale_key_family_uses(SALE_FAMILY_QUANTIZE, "est_bits"), 1);
    cr_assert_eq(sale_key_family_uses(SALE_FAMILY_DENSE, "est"), 0);
    cr_assert_eq(sale_key_family_uses(SALE_FAMILY_DENSE, "block_k"), 0);
    cr_assert_eq(sale_key_family_uses(SALE_FAMILY_FUSED, "threshold"), 1);
    cr_assert_eq(sale_key_family_uses(SALE_FAMILY_SELECT, "local_window"), 1);
    cr_assert_eq(sale_key_family_uses(SALE_FAMILY_ATTEND, "seg"), 0);
    cr_assert_eq(sale_key_family_uses(SALE_FAMILY_ATTEND, "d"), 1);
    cr_assert_eq(sale_key_family_uses(SALE_FAMILY_FUSED, NULL), 0);
    /* the rule agrees with the canonical text: a dropped field is not written */
    char t[256];
    sale_key k = sale_key_default(SALE_FAMILY_DENSE);
    cr_assert_eq(sale_key_format(&k, t, sizeof t), SALE_OK);
    cr_assert_null(strstr(t, "est="), "%s", t);
    cr_assert_null(strstr(t, "bk="), "%s", t);
    k = sale_key_default(SALE_FAMILY_FUSED);
    cr_assert_eq(sale_key_format(&k, t, sizeof t), SALE_OK);
    cr_assert(strstr(t, "thr=") && strstr(t, "win="), "%s", t);
}

/* A negative block_seg passed validation (-32 % 32 == 0, -32 / 32 <= 32) and
 * formatted as seg=-32, which the parser refuses. Every numeric field of a
 * key, whatever the family, the other fields open or set: a negative value
 * (a multiple of every block size included, and INT_MIN, whose remainder is
 * 0 and whose quotient passes any upper bound) is refused, the message
 * naming the field. dtype and causal use -1 for open: -2 and below. */
Test(key, a_negative_value_of_any_numeric_field_is_refused_by_name)
{
    static const struct {
        const char *name;
        size_t off;
        int open_is_minus1;
    } fields[] = {
        {"head_dim", offsetof(sale_key, head_dim), 0},   {"block_q", offsetof(sale_key, block_q), 0},
        {"block_k", offsetof(sale_key, block_k), 0},     {"block_seg", offsetof(sale_key, block_seg), 0},
        {"local_window", offsetof(sale_key, local_window), 0}, {"dtype", offsetof(sale_key, dtype), 1},
        {"est_bits", offsetof(sale_key, est_bits), 0},   {"causal", offsetof(sale_key, causal), 1},
        {"warps", offsetof(sale_key, warps), 0},         {"stages", offsetof(sale_key, stages), 0},
        {"arch", offsetof(sale_key, arch), 0},           {"thr", offsetof(sale_key, thr), 0},
    };
    static const int negs[] = {-1, -2, -4, -8, -16, -32, -64, -128, -256, -1024, -(1 << 20), INT_MIN};
    for (int f = 0; f < SALE_FAMILY_COUNT; f++)
        for (int set = 0; set < 2; set++)
            for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
                for (size_t j = 0; j < sizeof negs / sizeof negs[0]; j++) {
                    if (fields[i].open_is_minus1 && negs[j] == -1)
                        continue;
                    sale_key k = sale_key_default((sale_family)f);
                    if (set) { /* every other field set to a legal value */
                        k.head_dim = 128, k.block_q = 64, k.block_k = 32, k.block_seg = 128, k.local_window = 128;
                        k.dtype = SALE_DTYPE_BF16, k.est_bits = 8, k.causal = 1, k.arch = 80, k.thr = SALE_THR_RUN;
                    }
                    *(int *)((char *)&k + fields[i].off) = negs[j];
                    char err[256] = "";
                    cr_assert_eq(sale_key_validate(&k, err, sizeof err), SALE_ERR_INVALID, "%s %s = %d accepted",
                                 sale_family_name((sale_family)f), fields[i].name, negs[j]);
                    cr_assert(strncmp(err, fields[i].name, strlen(fields[i].name)) == 0 &&
                                  err[strlen(fields[i].name)] == ':',
                              "%s %s = %d: '%s' does not name the field", sale_family_name((sale_family)f),
                              fields[i].name, negs[j], err);
                }
    /* the rule's words, as for a positive value off the rule */
    sale_key k = sale_key_default(SALE_FAMILY_SELECT);
    k.arch = 80, k.block_seg = -32;
    char err[256] = "";
    cr_assert_eq(sale_key_validate(&k, err, sizeof err), SALE_ERR_INVALID);
    cr_assert(strstr(err, "multiple of block_k") && strstr(err, "-32"), "%s", err);
}

/* sale_key_family_uses said 1 for fields the family's key text leaves out
 * (quantize "causal"; attend and dense "qg"), so keys differing there were
 * said to be different kernels though they format and hash alike. For every
 * family and every field of the key text (short and long name): the rule
 * says 1 exactly when sale_key_format writes the field, with that field set
 * and with the key fully resolved. */
static int text_has_field(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = strchr(text, ':'); p; p = strchr(p + 1, ','))
        if (!strncmp(p + 1, name, n) && p[1 + n] == '=')
            return 1;
    return 0;
}

Test(key, family_uses_agrees_with_the_formatted_text_for_every_family_and_field)
{
    static const struct {
        const char *shrt, *lng;
        size_t off; /* the field to set; (size_t)-1: none (qg has no key field) */
        int value;
    } fields[] = {
        {"d", "head_dim", offsetof(sale_key, head_dim), 64},
        {"bq", "block_q", offsetof(sale_key, block_q), 128},
        {"bk", "block_k", offsetof(sale_key, block_k), 16},
        {"seg", "block_seg", offsetof(sale_key, block_seg), 64},
        {"win", "local_window", offsetof(sale_key, local_window), 64},
        {"dt", "dtype", offsetof(sale_key, dtype), SALE_DTYPE_F16},
        {"est", "est_bits", offsetof(sale_key, est_bits), 8},
        {"qg", "qg", (size_t)-1, 0},
        {"causal", "causal", offsetof(sale_key, causal), 1},
        {"warps", "warps", offsetof(sale_key, warps), 4},
        {"stages", "stages", offsetof(sale_key, stages), 2},
        {"arch", "arch", offsetof(sale_key, arch), 86},
        {"thr", "threshold", offsetof(sale_key, thr), SALE_THR_FIXED},
    };
    int checked = 0;
    for (int f = 0; f < SALE_FAMILY_COUNT; f++)
        for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
            sale_key one = sale_key_default((sale_family)f), full = one;
            if (fields[i].off != (size_t)-1)
                *(int *)((char *)&one + fields[i].off) = fields[i].value;
            full.arch = 86;
            char err[256] = "", t1[256] = "", t2[256] = "";
            cr_assert_eq(sale_key_resolve(&full, err, sizeof err), SALE_OK, "%s", err);
            cr_assert_eq(sale_key_format(&one, t1, sizeof t1), SALE_OK, "%s", sale_family_name((sale_family)f));
            cr_assert_eq(sale_key_format(&full, t2, sizeof t2), SALE_OK);
            int written = text_has_field(t1, fields[i].shrt);
            cr_assert_eq(text_has_field(t2, fields[i].shrt), written, "'%s' and '%s' disagree on %s", t1, t2,
                         fields[i].shrt);
            cr_assert_eq(sale_key_family_uses((sale_family)f, fields[i].shrt), written,
                         "family_uses(%s, %s) = %d but the key text is %s", sale_family_name((sale_family)f),
                         fields[i].shrt, sale_key_family_uses((sale_family)f, fields[i].shrt), t1);
            cr_assert_eq(sale_key_family_uses((sale_family)f, fields[i].lng), written,
                         "family_uses(%s, %s) = %d but the key text is %s", sale_family_name((sale_family)f),
                         fields[i].lng, sale_key_family_uses((sale_family)f, fields[i].lng), t1);
            if (!written && fields[i].off != (size_t)-1) {
                /* dropped: keys that differ only there are one kernel */
                sale_key other = sale_key_default((sale_family)f);
                cr_assert_eq(sale_key_hash(&one), sale_key_hash(&other), "%s", t1);
            }
            checked++;
        }
    cr_assert_eq(checked, SALE_FAMILY_COUNT * 13);
}

/* sale_key_format wrote keys no parser takes back (arch 70 as "arch=?",
 * thr 7 as "thr=?", dtype F32 as "dt=f32", seg=-32, causal=0) and returned
 * SALE_OK, so sale_key_hash gave two different invalid keys one hash. Over
 * random keys, mostly legal, often with one field off its rule: a key
 * formats iff it validates; its text parses back to a key that formats to
 * the same text and hashes alike; a key that does not format hashes to 0. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static unsigned rnd(unsigned n)
{
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}
#define PICK(a) (a)[rnd(sizeof(a) / sizeof((a)[0]))]

Test(key, a_key_that_formats_parses_back_to_the_same_text)
{
    static const int hd[] = {0, 64, 128}, hd_bad[] = {256, 96, -64};
    static const int bq[] = {0, 64, 128}, bq_bad[] = {48, 32, -64};
    static const int bk[] = {0, 16, 32, 64}, bk_bad[] = {24, 8, 128, -32};
    static const int seg[] = {0, 64, 128, 256}, seg_bad[] = {100, -32, 4096};
    static const int win[] = {0, 64, 128, 1024}, win_bad[] = {100, -64, 1 << 21};
    static const int dt[] = {-1, SALE_DTYPE_F16, SALE_DTYPE_BF16}, dt_bad[] = {SALE_DTYPE_F32, -2, 9};
    static const int est[] = {0, 4, 8}, est_bad[] = {6, 16, -8};
    static const int causal[] = {-1, 1}, causal_bad[] = {0, 2, -2};
    static const int warps[] = {0, 2, 4, 5, 8, 12, 20}, warps_bad[] = {21, -4};
    static const int stages[] = {0, 1, 2, 3, 4}, stages_bad[] = {8, -1};
    static const int arch[] = {SALE_ARCH_CURRENT, 80, 86, 89, 90, SALE_ARCH_SM90A}, arch_bad[] = {70, 75, 100, -1};
    static const int thr[] = {SALE_THR_OPEN, SALE_THR_RUN, SALE_THR_FIXED}, thr_bad[] = {7, -1, 3};
    int formatted = 0, refused = 0;
    for (int i = 0; i < 100000; i++) {
        sale_key k = sale_key_default((sale_family)rnd(SALE_FAMILY_COUNT));
        k.head_dim = PICK(hd), k.block_q = PICK(bq), k.block_k = PICK(bk), k.block_seg = PICK(seg);
        k.local_window = PICK(win), k.dtype = (sale_dtype)PICK(dt), k.est_bits = PICK(est);
        k.causal = PICK(causal), k.warps = PICK(warps), k.stages = PICK(stages), k.arch = PICK(arch);
        k.thr = PICK(thr);
        switch (rnd(24)) { /* one field off its rule, half the time */
        case 0: k.head_dim = PICK(hd_bad); break;
        case 1: k.block_q = PICK(bq_bad); break;
        case 2: k.block_k = PICK(bk_bad); break;
        case 3: k.block_seg = PICK(seg_bad); break;
        case 4: k.local_window = PICK(win_bad); break;
        case 5: k.dtype = (sale_dtype)PICK(dt_bad); break;
        case 6: k.est_bits = PICK(est_bad); break;
        case 7: k.causal = PICK(causal_bad); break;
        case 8: k.warps = PICK(warps_bad); break;
        case 9: k.stages = PICK(stages_bad); break;
        case 10: k.arch = PICK(arch_bad); break;
        case 11: k.thr = PICK(thr_bad); break;
        }
        char t1[256], t2[256], err[256] = "";
        sale_status fs = sale_key_format(&k, t1, sizeof t1);
        sale_status vs = sale_key_validate(&k, err, sizeof err);
        cr_assert_eq(fs, vs, "format %s but validate %s (%s): %s", sale_status_name(fs), sale_status_name(vs), err,
                     fs ? "" : t1);
        if (fs != SALE_OK) {
            cr_assert_eq(sale_key_hash(&k), 0, "an invalid key hashes to 0 (%s)", err);
            refused++;
            continue;
        }
        sale_key k2;
        cr_assert_eq(sale_key_parse(t1, &k2, err, sizeof err), SALE_OK, "'%s' does not parse: %s", t1, err);
        cr_assert_eq(sale_key_format(&k2, t2, sizeof t2), SALE_OK, "%s", t1);
        cr_assert_str_eq(t1, t2);
        cr_assert_eq(sale_key_hash(&k), sale_key_hash(&k2), "%s", t1);
        cr_assert_neq(sale_key_hash(&k), 0, "%s", t1);
        formatted++;
    }
    cr_assert_gt(formatted, 10000, "%d keys formatted", formatted);
    cr_assert_gt(refused, 10000, "%d keys refused", refused);

    /* the audit's cases */
    sale_key a = sale_key_default(SALE_FAMILY_FUSED), b = a;
    char t[256];
    a.arch = 70, b.arch = 75;
    cr_assert_eq(sale_key_format(&a, t, sizeof t), SALE_ERR_INVALID, "%s", t);
    cr_assert_str_eq(t, "", "nothing half-written");
    cr_assert_eq(sale_key_hash(&a), 0);
    cr_assert_eq(sale_key_hash(&b), 0);
    a = sale_key_default(SALE_FAMILY_SELECT), a.thr = 7;
    cr_assert_eq(sale_key_format(&a, t, sizeof t), SALE_ERR_INVALID, "%s", t);
    a = sale_key_default(SALE_FAMILY_DENSE), a.dtype = SALE_DTYPE_F32;
    cr_assert_eq(sale_key_format(&a, t, sizeof t), SALE_ERR_INVALID, "%s", t);
}

/* sale.h said "Fields left 0 are 'open'", but a zero-filled key has dtype F16
 * (open is -1) and causal 0 (refused; open is -1). The manual now gives each
 * field's open value: it must be the value sale_key_default sets, for every
 * field of the struct (read from include/sale.h); and a zero-filled key is
 * not open, as it says. */
Test(key, the_manual_gives_each_fields_open_value_as_sale_key_default_sets_it)
{
    static const struct {
        const char *name;
        size_t off;
    } fields[] = {
        {"head_dim", offsetof(sale_key, head_dim)}, {"block_q", offsetof(sale_key, block_q)},
        {"block_k", offsetof(sale_key, block_k)},   {"block_seg", offsetof(sale_key, block_seg)},
        {"local_window", offsetof(sale_key, local_window)}, {"dtype", offsetof(sale_key, dtype)},
        {"est_bits", offsetof(sale_key, est_bits)}, {"causal", offsetof(sale_key, causal)},
        {"warps", offsetof(sale_key, warps)},       {"stages", offsetof(sale_key, stages)},
        {"arch", offsetof(sale_key, arch)},         {"thr", offsetof(sale_key, thr)},
    };
    char *h = manual_text();
    char *b = strstr(h, "typedef struct sale_key {"), *e = b ? strstr(b, "} sale_key;") : NULL;
    cr_assert(b && e);
    *e = 0;
    const sale_key d = sale_key_default(SALE_FAMILY_FUSED);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        char decl[64];
        snprintf(decl, sizeof decl, " %s;", fields[i].name);
        char *line = strstr(b, decl);
        cr_assert_not_null(line, "%s is not in sale_key", fields[i].name);
        char *eol = strchr(line, '\n');
        if (eol)
            *eol = 0;
        char *open = strstr(line, "open: ");
        cr_assert_not_null(open, "sale.h does not say the open value of %s:%s", fields[i].name, line);
        int v = atoi(open + 6);
        cr_assert_eq(v, *(const int *)((const char *)&d + fields[i].off),
                     "sale.h says %s is open at %d; sale_key_default sets %d", fields[i].name, v,
                     *(const int *)((const char *)&d + fields[i].off));
        if (eol)
            *eol = '\n';
    }
    free(h);
    /* what the manual says of a zero-filled key */
    sale_key z;
    memset(&z, 0, sizeof z);
    z.family = SALE_FAMILY_FUSED, z.arch = 80;
    char err[256] = "";
    cr_assert_eq(sale_key_resolve(&z, err, sizeof err), SALE_ERR_INVALID);
    cr_assert(strncmp(err, "causal:", 7) == 0, "%s", err);
    z.causal = 1;
    cr_assert_eq(sale_key_resolve(&z, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(z.dtype, SALE_DTYPE_F16, "dtype 0 is F16, not open");
    sale_key o = d;
    o.arch = 80;
    cr_assert_eq(sale_key_resolve(&o, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(o.dtype, SALE_DTYPE_BF16, "open dtype resolves to bf16");
    cr_assert_eq(o.causal, 1);
}

/* block_k: the kernels' tiles take 16, 32 and 64 (sale.h), and so does the
 * key. 48 used to pass the field rule ("a multiple of 16 up to 64") and fail
 * later, in every family that ignores block_seg, as "block_seg: must be a
 * positive multiple of block_k (48), got 128": a message about a field the
 * caller had set right (found by gpu/random_configurations_match_reference,
 * on a call with block_seg 96 and local_window 192). Every family resolves
 * with each legal block_k, its ignored fields at the fixed 128; 48 is refused
 * by name, for every family and arch. */
Test(key, block_k_is_16_32_or_64_in_every_family)
{
    static const int archs[] = {80, 86, 89, 90, SALE_ARCH_SM90A};
    char err[256], text[256];
    for (int f = 0; f < SALE_FAMILY_COUNT; f++)
        for (size_t ai = 0; ai < sizeof archs / sizeof archs[0]; ai++)
            for (int bk = 16; bk <= 64; bk += 16) {
                sale_key k = sale_key_default((sale_family)f);
                k.arch = archs[ai];
                k.head_dim = 128;
                k.block_k = bk;
                k.block_seg = 3 * bk;
                k.local_window = 2 * bk;
                err[0] = 0;
                sale_status st = sale_key_resolve(&k, err, sizeof err);
                if (bk == 48) {
                    cr_assert_eq(st, SALE_ERR_INVALID, "family %d arch %d: block_k 48 accepted", f, archs[ai]);
                    cr_assert(strncmp(err, "block_k: must be 16, 32 or 64", 29) == 0, "family %d: '%s'", f, err);
                    continue;
                }
                /* sm_86/89 give a block 99 KB: fused at block_k 64, head_dim 128 does not fit */
                if (st != SALE_OK && (archs[ai] == 86 || archs[ai] == 89) && strstr(err, "shared memory"))
                    continue;
                cr_assert_eq(st, SALE_OK, "family %d arch %d block_k %d: %s", f, archs[ai], bk, err);
                if (!sale_key_family_uses((sale_family)f, "block_seg"))
                    cr_assert_eq(k.block_seg, 128, "family %d: an ignored block_seg is 128", f);
                if (!sale_key_family_uses((sale_family)f, "local_window"))
                    cr_assert_eq(k.local_window, 128, "family %d: an ignored local_window is 128", f);
                cr_assert_eq(sale_key_format(&k, text, sizeof text), SALE_OK);
                sale_key back;
                cr_assert_eq(sale_key_parse(text, &back, err, sizeof err), SALE_OK, "'%s': %s", text, err);
            }
}
