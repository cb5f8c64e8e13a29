/* test_fuzz.c — bounded fuzzing of the key parser, the config loader and the
 * cache-file opener: random and mutated inputs, a fixed seed and a
 * time-seeded run (seed printed), each bounded by SALE_FUZZ_SECONDS (default
 * 20 s per target). Asserts no crash, and that a refused cache file is left
 * byte for byte as it was. */
#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "sale.h"

static double budget_s(void) {
    const char *e = getenv("SALE_FUZZ_SECONDS");
    double s = e ? atof(e) : 20.0;
    return s > 0 ? s : 20.0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static unsigned long long rng;
static unsigned rnd(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (unsigned)(rng >> 11);
}

static unsigned long long seed_for(int timed) {
    unsigned long long s = timed ? (unsigned long long)time(NULL) * 2654435761ULL ^ (unsigned long long)getpid() : 12;
    return s ? s : 1;
}

static void mutate(char *buf, size_t *n, size_t cap) {
    int k = 1 + (int)(rnd() % 4);
    for (int i = 0; i < k; i++) {
        size_t pos = *n ? rnd() % *n : 0;
        switch (rnd() % 4) {
        case 0: if (*n) buf[pos] = (char)rnd(); break;
        case 1: if (*n + 1 < cap) { memmove(buf + pos + 1, buf + pos, *n - pos); buf[pos] = (char)(rnd() % 96 + 32); (*n)++; } break;
        case 2: if (*n) { memmove(buf + pos, buf + pos + 1, *n - pos - 1); (*n)--; } break;
        case 3: if (*n) buf[pos] ^= (char)(1 << (rnd() % 8)); break;
        }
    }
    buf[*n] = 0;
}

static const char *key_seeds[] = {
    "fused:d=128,bq=64,bk=32,seg=128,win=128,dt=bf16,est=8,qg=row.blk,causal=1,warps=4,stages=2,arch=sm_90",
    "quantize:d=64,dt=f16,arch=sm_80", "dense:d=*,bq=*,arch=current", "select:bq=128,bk=64,seg=256", "attend:"};

static void fuzz_keys(int timed) {
    rng = seed_for(timed);
    unsigned long long seed = rng;
    double t0 = now(), lim = budget_s() / 2;
    long n = 0, ok = 0;
    char buf[700], err[256];
    while (now() - t0 < lim) {
        size_t len;
        if (rnd() % 4 == 0) {
            len = rnd() % 600;
            for (size_t i = 0; i < len; i++) buf[i] = (char)(rnd() % 255 + 1);
            buf[len] = 0;
        } else {
            snprintf(buf, sizeof buf, "%s", key_seeds[rnd() % 5]);
            len = strlen(buf);
            mutate(buf, &len, sizeof buf - 1);
        }
        sale_key k;
        if (sale_key_parse(buf, &k, err, sizeof err) == SALE_OK) {
            ok++;
            char t[512];
            cr_assert_eq(sale_key_format(&k, t, sizeof t), SALE_OK);
            sale_key k2;
            cr_assert_eq(sale_key_parse(t, &k2, err, sizeof err), SALE_OK, "canonical text re-parses: %s: %s", t, err);
        }
        n++;
    }
    printf("fuzz keys (seed %llu, %s): %ld inputs, %ld accepted\n", seed, timed ? "time-seeded" : "fixed", n, ok);
    fflush(stdout);
    cr_assert_gt(n, 100);
}

Test(fuzz, key_parser_fixed_seed, .timeout = 120) { fuzz_keys(0); }
Test(fuzz, key_parser_time_seed, .timeout = 120) { fuzz_keys(1); }

static const char *cfg_seeds[] = {
    "cache = { path = '/tmp/x.db' }\ndefaults = { block_q = 64, block_k = 32, tau = 0.004 }\n",
    "fleet = { archs = { 'sm_80', 'sm_90' }, head_dims = { 64, 128 }, families = { 'fused' } }\n",
    "return { defaults = { block_q = 128 } }\n",
    "local t = {} for i = 1, 10 do t[i] = i end\ntuning = { warps = { 4, 8 }, budget_s = 5 }\n",
    "thresholds = { m = { [0] = { 0.01, 0.02 } } }\narch = { sm_90 = { est_bits = 8 } }\n"};

static void fuzz_cfg(int timed) {
    rng = seed_for(timed);
    unsigned long long seed = rng;
    double t0 = now(), lim = budget_s() / 2;
    long n = 0, ok = 0;
    char buf[1200], err[512];
    while (now() - t0 < lim) {
        size_t len;
        snprintf(buf, sizeof buf, "%s%s", cfg_seeds[rnd() % 5], rnd() % 2 ? cfg_seeds[rnd() % 5] : "");
        len = strlen(buf);
        mutate(buf, &len, sizeof buf - 1);
        sale_config cfg;
        cfg_defaults_init(&cfg);
        ok += cfg_load_string("fuzz.lua", buf, &cfg, err, sizeof err) == SALE_OK;
        cfg_free(&cfg);
        n++;
    }
    printf("fuzz config (seed %llu, %s): %ld inputs, %ld accepted\n", seed, timed ? "time-seeded" : "fixed", n, ok);
    fflush(stdout);
    cr_assert_gt(n, 20);
}

Test(fuzz, config_loader_fixed_seed, .timeout = 120) { fuzz_cfg(0); }
Test(fuzz, config_loader_time_seed, .timeout = 120) { fuzz_cfg(1); }

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) {
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static void fuzz_open(int timed) {
    rng = seed_for(timed);
    unsigned long long seed = rng;
    char dir[] = "/tmp/sale_fuzz_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256], err[1024];
    snprintf(path, sizeof path, "%s/c.db", dir);
    /* a real small cache as the starting point */
    db *d = NULL;
    cr_assert_eq(db_open(&d, path, NULL, NULL, NULL, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < 3; i++) {
        db_kernel_row r;
        memset(&r, 0, sizeof r);
        snprintf(r.key, sizeof r.key, "k%d", i);
        snprintf(r.arch, sizeof r.arch, "sm_80");
        snprintf(r.entry, sizeof r.entry, "e");
        unsigned char cub[64];
        for (int j = 0; j < 64; j++) cub[j] = (unsigned char)(i * 13 + j);
        r.cubin = cub, r.cubin_bytes = sizeof cub, r.src_hash = 5;
        cr_assert_eq(db_kernel_put(d, &r, err, sizeof err), 0, "%s", err);
    }
    db_close(d);
    FILE *f = fopen(path, "rb");
    static unsigned char orig[1 << 20], img[1 << 20], back[1 << 20];
    size_t n0 = fread(orig, 1, sizeof orig, f);
    fclose(f);
    double t0 = now(), lim = budget_s() / 2;
    long n = 0, opened = 0, refused = 0, wrong = 0;
    while (now() - t0 < lim) {
        size_t len = n0;
        memcpy(img, orig, n0);
        int mode = (int)(rnd() % 3);
        if (mode == 0) { /* random bytes */
            len = rnd() % 4096;
            for (size_t i = 0; i < len; i++) img[i] = (unsigned char)rnd();
        } else if (mode == 1) { /* flipped bytes in a valid cache */
            for (int k = 1 + (int)(rnd() % 8); k > 0; k--) img[rnd() % len] ^= (unsigned char)(1 << (rnd() % 8));
        } else { /* truncated */
            len = rnd() % n0;
        }
        f = fopen(path, "wb");
        fwrite(img, 1, len, f);
        fclose(f);
        if (db_open(&d, path, NULL, NULL, NULL, err, sizeof err) != 0) {
            refused++;
            /* refused: the file is exactly as it was */
            f = fopen(path, "rb");
            cr_assert_not_null(f, "a refused file is still there");
            size_t nb = fread(back, 1, sizeof back, f);
            fclose(f);
            cr_assert(nb == len && memcmp(back, img, len) == 0, "a refused cache file was changed (%s)", err);
        } else {
            opened++;
            for (int i = 0; i < 3; i++) {
                char k[8];
                snprintf(k, sizeof k, "k%d", i);
                db_kernel_row r;
                memset(&r, 0, sizeof r);
                if (db_kernel_get(d, k, "sm_80", 5, &r, err, sizeof err) == 1) {
                    wrong += strcmp(r.key, k) != 0 || r.cubin_bytes != 64 || r.cubin[5] != (unsigned char)(i * 13 + 5);
                    db_row_free(&r);
                }
            }
            db_close(d);
        }
        n++;
        char cmd[300];
        snprintf(cmd, sizeof cmd, "find %s -mindepth 1 ! -name c.db -delete", dir);
        cr_assert_eq(system(cmd), 0);
    }
    printf("fuzz cache opener (seed %llu, %s): %ld files, %ld opened, %ld refused unchanged, %ld wrong kernels\n",
           seed, timed ? "time-seeded" : "fixed", n, opened, refused, wrong);
    fflush(stdout);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    cr_assert_eq(wrong, 0);
    cr_assert_gt(n, 10);
}

Test(fuzz, cache_opener_fixed_seed, .timeout = 120) { fuzz_open(0); }
Test(fuzz, cache_opener_time_seed, .timeout = 120) { fuzz_open(1); }
