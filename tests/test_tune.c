/* test_tune.c — the autotuner without a GPU: the tile space and its legality
 * rules, pruning from the resources ptxas stored with real cubins (against a
 * fake small device), the strategies on synthetic costs, winners stored and
 * served only to their own device and driver, and the command's edges. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "sale_layout.h"
#include "cli_tune.h"
#include "tune.h"
#include "ctx_fixture.h"

static void setup(void) { ctx_fixture_open("tune"); }
static void teardown(void) { ctx_fixture_close(); }

TestSuite(tune, .init = setup, .fini = teardown, .timeout = 900);

/* ------------------------------------------------------------- the space */

Test(tune, fused_space_keeps_only_sixteen_rows_per_warp)
{
    tune_candidate c[TUNE_MAX_CANDIDATES];
    int illegal = -1;
    int n = tune_space(SALE_FAMILY_FUSED, 128, 64, 32, 128, 90, c, TUNE_MAX_CANDIDATES, &illegal);
    /* space: warps {2,4,8} x stages {2,3}; fused needs warps = block_q/16 = 4 */
    cr_assert_eq(n, 2, "got %d candidates", n);
    cr_assert_eq(illegal, 4);
    int defaults = 0;
    for (int i = 0; i < n; i++) {
        cr_assert_eq(c[i].warps, 4);
        cr_assert_eq(c[i].key.warps, c[i].warps);
        cr_assert_eq(c[i].key.stages, c[i].stages);
        cr_assert_eq(c[i].key.block_q, 64, "the tuner never changes block_q");
        cr_assert_eq(c[i].key.block_k, 32, "the tuner never changes block_k");
        cr_assert_eq(sale_key_validate(&c[i].key, NULL, 0), SALE_OK);
        defaults += c[i].is_default;
        if (c[i].is_default)
            cr_assert(c[i].warps == 4 && c[i].stages == 2);
    }
    cr_assert_eq(defaults, 1, "exactly one candidate is the default tiles");
}

Test(tune, eight_warps_need_block_q_128)
{
    tune_candidate c[TUNE_MAX_CANDIDATES];
    int illegal;
    int n = tune_space(SALE_FAMILY_ATTEND, 128, 64, 32, 128, 90, c, TUNE_MAX_CANDIDATES, &illegal);
    cr_assert_eq(n, 4, "attend bq=64: warps 2,4 x stages 2,3, got %d", n);
    for (int i = 0; i < n; i++)
        cr_assert_neq(c[i].warps, 8, "warps=8 with block_q 64 is refused (block_q %% 16*warps)");
    n = tune_space(SALE_FAMILY_ATTEND, 128, 128, 32, 128, 90, c, TUNE_MAX_CANDIDATES, &illegal);
    int eight = 0;
    for (int i = 0; i < n; i++)
        eight += c[i].warps == 8;
    cr_assert_eq(eight, 2, "warps=8 with block_q 128 is allowed (stages 2 and 3)");
    /* the same rule as sale_layout_legal states it */
    sale_layout_cfg lc = {SALE_LF_ATTEND, 128, 64, 32, 128, 128, 1, 8, 8, 2, 90, 0};
    cr_assert_eq(sale_layout_legal(&lc, NULL, 0), 0);
    lc.block_q = 128;
    cr_assert_eq(sale_layout_legal(&lc, NULL, 0), 1);
}

Test(tune, head_dim_256_has_no_legal_tiles)
{
    tune_candidate c[TUNE_MAX_CANDIDATES];
    int illegal = 0;
    int n = tune_space(SALE_FAMILY_DENSE, 256, 64, 32, 128, 90, c, TUNE_MAX_CANDIDATES, &illegal);
    cr_assert_eq(n, 0);
    cr_assert_eq(illegal, 6, "all 6 tile choices refused, got %d", illegal);
}

Test(tune, config_lists_restrict_the_space_and_are_still_checked)
{
    sale_key base = sale_key_default(SALE_FAMILY_ATTEND);
    base.arch = 90;
    int warps[] = {4, 16}, stages[] = {2, 3, 4};
    tune_candidate c[TUNE_MAX_CANDIDATES];
    int illegal = 0;
    char err[256] = "";
    int n = tune_space_key(&base, 0, warps, 2, stages, 3, c, TUNE_MAX_CANDIDATES, &illegal, err, sizeof err);
    cr_assert_eq(n, 3, "warps 4 with stages 2..4, got %d (%s)", n, err);
    cr_assert_eq(illegal, 3, "warps 16 is not a legal tile");
    base.arch = SALE_ARCH_CURRENT;
    cr_assert_eq(tune_space_key(&base, 0, NULL, 0, NULL, 0, c, TUNE_MAX_CANDIDATES, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "arch") != NULL, "%s", err);
}

/* --------------------------------------------------------------- pruning */

Test(tune, small_device_prunes_from_stored_resources)
{
    tune_candidate c[TUNE_MAX_CANDIDATES];
    int illegal;
    int n = tune_space(SALE_FAMILY_ATTEND, 128, 64, 32, 128, 90, c, TUNE_MAX_CANDIDATES, &illegal);
    cr_assert_eq(n, 4);
    /* dynamic smem: a Q tile + stages K/V tiles (about 51 KB with 2 stages, 68 KB
     * with 3): a device whose limit sits between them keeps only 2 stages */
    sale_layout_cfg l2 = {SALE_LF_ATTEND, 128, 64, 32, 128, 128, 1, 8, 4, 2, 90, 0}, l3 = l2;
    l3.stages = 3;
    int limit = (int)(sale_layout_smem(&l2) + sale_layout_smem(&l3)) / 2;
    sale_device_info small;
    memset(&small, 0, sizeof small);
    snprintf(small.name, sizeof small.name, "Fake Small GPU");
    small.arch = 90;
    small.sm_count = 8;
    small.driver_version = 13000;
    small.smem_optin = limit;
    int pruned = -1;
    int kept = tune_prune(ctx, c, n, &small, &pruned);
    cr_assert_eq(kept, 2, "kept %d: %s", kept, sale_last_error(ctx));
    cr_assert_eq(pruned, 2);
    for (int i = 0; i < kept; i++) {
        cr_assert_eq(c[i].stages, 2);
        cr_assert_gt(c[i].registers, 0, "registers come from ptxas");
        cr_assert_geq(c[i].smem, (int)sale_layout_smem(&l2), "static + dynamic");
        cr_assert_eq(c[i].failed, 0);
    }
    for (int i = kept; i < n; i++) {
        cr_assert_eq(c[i].stages, 3);
        cr_assert_eq(c[i].failed, 1);
        cr_assert(strstr(c[i].why, "shared memory") != NULL, "%s", c[i].why);
    }
    /* the same cubins (now from the cache) all fit an H100-sized device */
    n = tune_space(SALE_FAMILY_ATTEND, 128, 64, 32, 128, 90, c, TUNE_MAX_CANDIDATES, &illegal);
    small.smem_optin = 232448;
    cr_assert_eq(tune_prune(ctx, c, n, &small, &pruned), 4);
    cr_assert_eq(pruned, 0);
}

/* ------------------------------------------------------------ strategies */

/* Synthetic costs: candidate i (warps = i) costs base[i] ms plus a small
 * deterministic noise that shrinks with repetitions; `wrong` reports a wrong
 * output; every measurement advances a fake clock by reps * 10 ms. */
typedef struct synth {
    double base[TUNE_MAX_CANDIDATES];
    int wrong;
    double clock;
    int calls;
} synth;

static int synth_cost(void *user, const tune_candidate *c, int reps, double *ms, double *spread, char *err)
{
    synth *s = user;
    s->calls++;
    s->clock += reps * 0.01;
    if (c->warps == s->wrong) {
        snprintf(err, TUNE_ERR_LEN, "wrong output: relative L1 0.5");
        *ms = 0.001; /* fast and wrong */
        return 1;
    }
    unsigned h = (unsigned)(c->warps * 2654435761u + (unsigned)s->calls * 40503u);
    double noise = ((h >> 8) % 1000) / 1000.0 - 0.5; /* [-0.5, 0.5) */
    *ms = s->base[c->warps] + 0.02 * noise / reps;
    *spread = 0.01;
    return 0;
}

static double synth_now(void *user)
{
    return ((synth *)user)->clock;
}

static int make_synth(tune_candidate *c, synth *s, int n)
{
    memset(s, 0, sizeof *s);
    s->wrong = -1;
    for (int i = 0; i < n; i++) {
        memset(&c[i], 0, sizeof c[i]);
        c[i].warps = i;
        c[i].stages = 2;
        s->base[i] = 1.0 + 0.37 * ((i * 7) % n); /* a permutation: minimum at i = 0 */
    }
    s->base[13] = 0.5; /* the true minimum */
    return n;
}

Test(tune, exhaustive_finds_the_true_minimum)
{
    tune_candidate c[24];
    synth s;
    int n = make_synth(c, &s, 24);
    tune_opts o = {.reps = 10, .now = synth_now, .now_user = &s};
    tune_result r;
    int w = tune_exhaustive(c, n, synth_cost, &s, &o, &r);
    cr_assert_eq(w, 13);
    cr_assert_eq(r.winner, 13);
    cr_assert_eq(r.tried, 24);
    cr_assert_eq(r.measured, 24);
    cr_assert_eq(r.out_of_budget, 0);
    cr_assert_float_eq(c[w].ms, 0.5, 0.01);
}

Test(tune, a_fast_wrong_kernel_never_wins)
{
    tune_candidate c[24];
    synth s;
    int n = make_synth(c, &s, 24);
    s.wrong = 13; /* the would-be winner computes the wrong thing */
    tune_opts o = {.reps = 10, .now = synth_now, .now_user = &s};
    tune_result r;
    int w = tune_exhaustive(c, n, synth_cost, &s, &o, &r);
    cr_assert_neq(w, 13);
    cr_assert_eq(w, 0, "the fastest correct candidate (base 1.0) wins, got %d", w);
    cr_assert_eq(r.disqualified, 1);
    cr_assert_eq(c[13].failed, 1);
    cr_assert(strstr(c[13].why, "wrong output") != NULL);
    make_synth(c, &s, 24);
    s.wrong = 13;
    w = tune_halving(c, n, synth_cost, &s, &o, &r);
    cr_assert_eq(w, 0, "halving: got %d", w);
    make_synth(c, &s, 24);
    s.wrong = 13;
    w = tune_random(c, n, synth_cost, &s, &o, &r);
    cr_assert_eq(w, 0, "random: got %d", w);
}

Test(tune, halving_finds_a_well_separated_minimum_in_rounds)
{
    tune_candidate c[24];
    synth s;
    int n = make_synth(c, &s, 24);
    tune_opts o = {.reps = 16, .now = synth_now, .now_user = &s};
    tune_result r;
    int w = tune_halving(c, n, synth_cost, &s, &o, &r);
    cr_assert_eq(w, 13);
    cr_assert_eq(r.rounds, 5, "24 -> 12 -> 6 -> 3 -> 2 -> 1: 5 rounds, got %d", r.rounds);
    cr_assert_eq(r.measured, 24 + 12 + 6 + 3 + 2);
    cr_assert_eq(r.tried, 24);
    cr_assert_eq(c[w].reps, 16, "the last round uses the full repetitions");
    /* cheaper than exhaustive at full repetitions: fewer repetitions overall */
    cr_assert_lt(s.clock, 24 * 16 * 0.01);
}

Test(tune, small_budget_stops_early_with_a_valid_winner)
{
    tune_candidate c[24];
    synth s;
    int n = make_synth(c, &s, 24);
    s.wrong = 0; /* the first one measured is wrong: the budget must not stop on it */
    tune_opts o = {.reps = 20, .budget_s = 0.05, .now = synth_now, .now_user = &s};
    tune_result r;
    int w = tune_exhaustive(c, n, synth_cost, &s, &o, &r);
    cr_assert_eq(r.out_of_budget, 1);
    cr_assert_lt(r.measured, 24);
    cr_assert_geq(w, 0);
    cr_assert_eq(c[w].failed, 0);
    cr_assert_gt(c[w].reps, 0);
    cr_assert_eq(w, 1, "stops after the first valid measurement, got %d", w);

    make_synth(c, &s, 24);
    o.budget_s = 1.0; /* round one (24 x 2 reps x 10 ms = 0.48 s) fits, not round two */
    w = tune_halving(c, n, synth_cost, &s, &o, &r);
    cr_assert_eq(r.out_of_budget, 1);
    cr_assert_lt(r.rounds, 5);
    cr_assert_geq(w, 0);
    cr_assert_eq(c[w].failed, 0);
    cr_assert_gt(c[w].reps, 0);
    cr_assert_eq(w, 13, "the minimum survives every round it reached, got %d", w);
}

/* ------------------------------------------------------------ persistence */

static sale_device_info h100(void)
{
    sale_device_info d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "NVIDIA H100 80GB HBM3");
    d.arch = 90;
    d.sm_count = 132;
    d.driver_version = 13000;
    d.smem_optin = 232448;
    return d;
}

static sale_key tuned_winner(sale_family f, int warps, int stages)
{
    sale_key w = sale_key_default(f);
    w.arch = 90;
    w.warps = warps;
    w.stages = stages;
    cr_assert_eq(sale_key_resolve(&w, NULL, 0), SALE_OK);
    return w;
}

Test(tune, stored_winner_is_served_for_open_tiles)
{
    sale_device_info d = h100();
    sale_key open = sale_key_default(SALE_FAMILY_ATTEND), out;
    sale_key w = tuned_winner(SALE_FAMILY_ATTEND, 2, 3);
    cr_assert_eq(win_lookup(ctx, &d, &open, 65536, &out), 0, "nothing tuned yet");
    cr_assert_eq(win_save(ctx, &d, &open, 65536, &w, 1.25, 2.0, 4), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(win_lookup(ctx, &d, &open, 65536, &out), 1, "%s", sale_last_error(ctx));
    cr_assert_eq(out.warps, 2);
    cr_assert_eq(out.stages, 3);
    cr_assert_eq(out.block_q, 0, "algorithm fields stay as the caller left them");
    /* the same key written with its defaults explicit, and SALE_ARCH_CURRENT, is the same row */
    sale_key explicit_key = open;
    explicit_key.block_q = 64;
    explicit_key.head_dim = 128;
    cr_assert_eq(win_lookup(ctx, &d, &explicit_key, 40000, &out), 1, "40000 rounds up to the n=65536 bucket");
    /* fixed tiles are the caller's: nothing served */
    sale_key fixed = open;
    fixed.warps = 4;
    fixed.stages = 2;
    cr_assert_eq(win_lookup(ctx, &d, &fixed, 65536, &out), 0);
    cr_assert_eq(out.warps, 4);
    /* a different key (block_q 128) has no winner */
    sale_key other = open;
    other.block_q = 128;
    cr_assert_eq(win_lookup(ctx, &d, &other, 65536, &out), 0);
    /* the row carries what `sale ls --tuned` shows */
    db_tuned_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.device, sizeof r.device, "%s", d.name);
    snprintf(r.arch, sizeof r.arch, "sm_90");
    r.sm_count = 132;
    r.driver_version = 13000;
    snprintf(r.bucket, sizeof r.bucket, "n=65536");
    sale_key ok;
    cr_assert_eq(win_open_key(&open, 90, &ok, NULL, 0), SALE_OK);
    sale_key_format(&ok, r.key, sizeof r.key);
    cr_assert(strstr(r.key, "warps=*,stages=*") != NULL, "%s", r.key);
    cr_assert_eq(db_tuned_get(ctx->db, &r, NULL, 0), 1);
    cr_assert_float_eq(r.time_ms, 1.25, 1e-9);
    cr_assert_eq(r.tried, 4);
    cr_assert(strstr(r.winner, "warps=2,stages=3") != NULL, "%s", r.winner);
    cr_assert_gt(r.created, 0);
}

/* Lookups racing saves: the cold lookup reads SQLite outside ctx->lock and
 * memoises its answer afterwards; an answer read before a save must not be
 * memoised after it (the memo would then serve the old winner for good). */
typedef struct race_arg {
    sale_device_info d;
    sale_key open, a, b;
    int stop, bad, lookups;
    char why[160];
} race_arg;

static void *race_reader(void *p)
{
    race_arg *r = p;
    int n = 0;
    while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
        sale_key out;
        int f = win_lookup(ctx, &r->d, &r->open, 65536, &out);
        int ok = f == 0 || (f == 1 && ((out.warps == r->a.warps && out.stages == r->a.stages) ||
                                       (out.warps == r->b.warps && out.stages == r->b.stages)));
        if (!ok && __atomic_fetch_add(&r->bad, 1, __ATOMIC_ACQ_REL) == 0)
            snprintf(r->why, sizeof r->why, "lookup returned %d with warps %d stages %d (%s)", f, out.warps,
                     out.stages, sale_last_error(ctx));
        n++;
    }
    __atomic_fetch_add(&r->lookups, n, __ATOMIC_ACQ_REL);
    return NULL;
}

Test(tune, lookups_racing_saves_end_on_the_last_winner)
{
    race_arg r;
    memset(&r, 0, sizeof r);
    r.d = h100();
    r.open = sale_key_default(SALE_FAMILY_ATTEND);
    r.a = tuned_winner(SALE_FAMILY_ATTEND, 2, 3);
    r.b = tuned_winner(SALE_FAMILY_ATTEND, 4, 2);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, race_reader, &r), 0);
    int stale = 0, first_stale = -1;
    for (int i = 0; i < 1000; i++) {
        const sale_key *w = i % 2 ? &r.b : &r.a;
        cr_assert_eq(win_save(ctx, &r.d, &r.open, 65536, w, 1.0 + i, 1.0, 2), SALE_OK, "%s", sale_last_error(ctx));
        /* only this thread saves: a lookup after its save must see it, whatever the readers memoised */
        for (int k = 0; k < 3; k++) {
            sale_key out;
            int f = win_lookup(ctx, &r.d, &r.open, 65536, &out);
            if ((f != 1 || out.warps != w->warps || out.stages != w->stages) && !stale++)
                first_stale = i;
        }
    }
    /* the last save was b; let the readers run on after it */
    usleep(20000);
    __atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(r.bad, 0, "%d bad lookups; first: %s", r.bad, r.why);
    cr_assert_eq(stale, 0, "%d lookups after a save served the winner before it (a stale memo), first after save %d",
                 stale, first_stale);
    cr_assert_gt(r.lookups, 1000, "the readers ran (%d lookups)", r.lookups);
    sale_key out;
    cr_assert_eq(win_lookup(ctx, &r.d, &r.open, 65536, &out), 1, "%s", sale_last_error(ctx));
    cr_assert(out.warps == r.b.warps && out.stages == r.b.stages,
              "after the last save (warps %d stages %d) the lookup serves warps %d stages %d: a stale memo",
              r.b.warps, r.b.stages, out.warps, out.stages);
}

Test(tune, another_device_or_driver_never_gets_the_winner)
{
    sale_device_info d = h100();
    sale_key open = sale_key_default(SALE_FAMILY_ATTEND), out;
    sale_key w = tuned_winner(SALE_FAMILY_ATTEND, 2, 3);
    cr_assert_eq(win_save(ctx, &d, &open, 16384, &w, 1.0, 1.0, 4), SALE_OK, "%s", sale_last_error(ctx));
    sale_device_info x = d;
    x.driver_version = 12040;
    cr_assert_eq(win_lookup(ctx, &x, &open, 16384, &out), 0, "another driver");
    cr_assert_eq(out.warps, 0);
    x = d;
    snprintf(x.name, sizeof x.name, "NVIDIA H200");
    cr_assert_eq(win_lookup(ctx, &x, &open, 16384, &out), 0, "another device name");
    x = d;
    x.sm_count = 114; /* H100 PCIe */
    cr_assert_eq(win_lookup(ctx, &x, &open, 16384, &out), 0, "another SM count");
    x = d;
    x.arch = 89;
    cr_assert_eq(win_lookup(ctx, &x, &open, 16384, &out), 0, "another arch");
    cr_assert_eq(win_lookup(ctx, &d, &open, 16384, &out), 1);
}

Test(tune, other_buckets_fall_back_to_the_nearest)
{
    sale_device_info d = h100();
    sale_key open = sale_key_default(SALE_FAMILY_DENSE), out;
    sale_key a = tuned_winner(SALE_FAMILY_DENSE, 4, 2), b = tuned_winner(SALE_FAMILY_DENSE, 4, 3);
    cr_assert_eq(win_save(ctx, &d, &open, 16384, &a, 1.0, 1.0, 2), SALE_OK, "%s", sale_last_error(ctx));
    /* one bucket stored: every size falls back to it */
    cr_assert_eq(win_lookup(ctx, &d, &open, 1 << 20, &out), 1);
    cr_assert_eq(out.stages, 2);
    cr_assert_eq(win_save(ctx, &d, &open, 262144, &b, 9.0, 1.0, 2), SALE_OK);
    /* exact buckets */
    cr_assert_eq(win_lookup(ctx, &d, &open, 16000, &out), 1);
    cr_assert_eq(out.stages, 2);
    cr_assert_eq(win_lookup(ctx, &d, &open, 262144, &out), 1);
    cr_assert_eq(out.stages, 3);
    /* nearest in log2: 4096 is 2 away from 16384, 6 from 262144 */
    cr_assert_eq(win_lookup(ctx, &d, &open, 4096, &out), 1);
    cr_assert_eq(out.stages, 2);
    /* 131072 is 1 away from 262144 */
    cr_assert_eq(win_lookup(ctx, &d, &open, 131072, &out), 1);
    cr_assert_eq(out.stages, 3);
    /* 65536: a tie (2 and 2): the larger bucket */
    cr_assert_eq(win_lookup(ctx, &d, &open, 65536, &out), 1);
    cr_assert_eq(out.stages, 3);
    /* the fallback stays on this device */
    sale_device_info x = d;
    x.driver_version = 13010;
    cr_assert_eq(win_lookup(ctx, &x, &open, 65536, &out), 0);
}

Test(tune, buckets_are_powers_of_two)
{
    char b[32];
    cr_assert_eq(win_bucket(65536, b, sizeof b), 0);
    cr_assert_str_eq(b, "n=65536");
    win_bucket(40000, b, sizeof b);
    cr_assert_str_eq(b, "n=65536");
    win_bucket(1, b, sizeof b);
    cr_assert_str_eq(b, "n=1");
    cr_assert_eq(win_bucket(0, b, sizeof b), -1);
}

/* --------------------------------------------------------------- command */

/* Run cli_tune with stderr captured into buf. */
static int cli_capture(int argc, char **argv, char *buf, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/stderr.txt", tmpdir);
    fflush(stderr);
    int saved = dup(2), fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    cr_assert(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    int rc = cli_tune(ctx, NULL, argc, argv);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = 0;
    fclose(f);
    return rc;
}

Test(tune, help_needs_no_gpu)
{
    char *argv[] = {"tune", "--help", NULL};
    cr_assert_eq(cli_tune(NULL, NULL, 2, argv), 0);
}

Test(tune, bad_options_are_usage_errors)
{
    char buf[4096];
    char *a1[] = {"tune", "--strategy", "genetic", NULL};
    cr_assert_eq(cli_capture(3, a1, buf, sizeof buf), 2);
    cr_assert(strstr(buf, "--strategy") != NULL, "%s", buf);
    char *a2[] = {"tune", "--family", "quantize", NULL};
    cr_assert_eq(cli_capture(3, a2, buf, sizeof buf), 2);
    char *a3[] = {"tune", "--heads", "32", "6", NULL};
    cr_assert_eq(cli_capture(4, a3, buf, sizeof buf), 2, "32 is not a multiple of 6");
    /* a budget that is not a number of seconds: empty, NaN, infinite, negative, trailing text */
    const char *budgets[] = {"", "nan", "inf", "-1", "5s"};
    for (size_t i = 0; i < sizeof budgets / sizeof budgets[0]; i++) {
        char *a4[] = {"tune", "--budget", (char *)budgets[i], NULL};
        cr_assert_eq(cli_capture(3, a4, buf, sizeof buf), 2, "--budget '%s' must be refused", budgets[i]);
        cr_assert(strstr(buf, "--budget") != NULL, "%s", buf);
    }
}

Test(tune, without_a_gpu_says_so)
{
    int n = 0;
    if (sale_device_count(ctx, &n) == SALE_OK && n > 0) {
        fprintf(stderr, "SKIPPED (a GPU is present): %s\n", __func__);
        cr_skip_test("a GPU is present: the no-GPU path cannot be tested here");
    }
    char buf[4096];
    char *argv[] = {"tune", "--family", "fused", "--seq-len", "4096", NULL};
    cr_assert_eq(cli_capture(5, argv, buf, sizeof buf), 1);
    cr_assert(strstr(buf, "sale tune: no GPU: ") != NULL, "%s", buf);
}

/* The tuner never tunes version 0: its tile space is refused by name. */
Test(tune, plain_is_never_tuned)
{
    sale_key k = sale_key_default(SALE_FAMILY_PLAIN);
    k.arch = 90;
    char err[256] = "";
    tune_candidate c[16];
    cr_assert_eq(tune_space_key(&k, 0, NULL, 0, NULL, 0, c, 16, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "not tuned") != NULL, "%s", err);
    char buf[4096];
    char *argv[] = {"tune", "--family", "plain", NULL};
    cr_assert_eq(cli_capture(3, argv, buf, sizeof buf), 2);
    cr_assert(strstr(buf, "never tuned") != NULL, "%s", buf);
}

/* On sm_90a the attend space holds the wgmma kernels (warps 12, the default
 * of a key with no length, and 5, the rows kernel, sale_attention's default
 * up to the 128K bucket) and the mma.sync tiles; a warps list from the config
 * narrows the latter only. Dense there is the wgmma kernel alone. */
Test(tune, sm90a_attend_space_keeps_the_wgmma_kernel)
{
    sale_key base = sale_key_default(SALE_FAMILY_ATTEND);
    base.arch = SALE_ARCH_SM90A;
    tune_candidate c[TUNE_MAX_CANDIDATES];
    char err[256];
    const int warps[] = {4};
    int n = tune_space_key(&base, 0, warps, 1, NULL, 0, c, TUNE_MAX_CANDIDATES, NULL, err, sizeof err);
    cr_assert_gt(n, 0, "%s", err);
    int wg = 0, wr = 0, ms = 0, dflt = 0;
    for (int i = 0; i < n; i++) {
        wg += c[i].warps == 12;
        wr += c[i].warps == 5;
        ms += c[i].warps == 4;
        dflt += c[i].is_default && c[i].warps == 12;
    }
    cr_assert_eq(wg, 2, "warps 12 with stages 2 and 3");
    cr_assert_eq(wr, 2, "warps 5 (the rows kernel) with stages 2 and 3, kept by a warps list");
    /* at a length, the default is sale_attention's: the rows kernel up to the
     * 128K bucket (stages 3), the two-row kernel above */
    n = tune_space_key(&base, 131072, warps, 1, NULL, 0, c, TUNE_MAX_CANDIDATES, NULL, err, sizeof err);
    dflt = 0;
    for (int i = 0; i < n; i++)
        if (c[i].is_default) {
            dflt++;
            cr_assert(c[i].warps == 5 && c[i].stages == 3, "default at 128K: warps %d stages %d", c[i].warps,
                      c[i].stages);
        }
    cr_assert_eq(dflt, 1);
    /* a stages list without the rows kernel's 3: its default tiles are still
     * timed, and marked (the two-row kernel at stages 2 is not the default:
     * sixteenth session's review) */
    const int st2[] = {2};
    n = tune_space_key(&base, 131072, warps, 1, st2, 1, c, TUNE_MAX_CANDIDATES, NULL, err, sizeof err);
    dflt = 0;
    int rows3 = 0;
    for (int i = 0; i < n; i++) {
        dflt += c[i].is_default;
        rows3 += c[i].warps == 5 && c[i].stages == 3 && c[i].is_default;
    }
    cr_assert_eq(dflt, 1, "one default");
    cr_assert_eq(rows3, 1, "the rows kernel at its 3 stages is the default at 128K under a stages list {2}");
    n = tune_space_key(&base, 131073, warps, 1, NULL, 0, c, TUNE_MAX_CANDIDATES, NULL, err, sizeof err);
    dflt = 0; /* the 256K bucket: the two-row kernel stays the default */
    for (int i = 0; i < n; i++)
        dflt += c[i].is_default && c[i].warps == 12;
    cr_assert_eq(dflt, 1, "the default above 128K is the two-row kernel");
    cr_assert_eq(ms, 2);
    cr_assert_eq(dflt, 1, "the default is the wgmma kernel");
    base = sale_key_default(SALE_FAMILY_DENSE);
    base.arch = SALE_ARCH_SM90A;
    n = tune_space_key(&base, 0, warps, 1, NULL, 0, c, TUNE_MAX_CANDIDATES, NULL, err, sizeof err);
    cr_assert_eq(n, 2, "%s", err);
    for (int i = 0; i < n; i++)
        cr_assert_eq(c[i].warps, 12);
}

/* On sm_90a the select's space with thr=fixed holds the wgmma estimation
 * (warps 12 and 20, ring stages 2..4; the default 20 x 4) beside the
 * mma.sync tiles; with thr=run those tiles are refused (the wgmma
 * estimation needs the fixed threshold) and the default is mma.sync. */
Test(tune, sm90a_select_space_has_the_wgmma_estimation_with_thr_fixed)
{
    sale_key base = sale_key_default(SALE_FAMILY_SELECT);
    base.arch = SALE_ARCH_SM90A;
    base.thr = SALE_THR_FIXED;
    tune_candidate c[TUNE_MAX_CANDIDATES];
    char err[256] = "";
    int illegal = 0;
    int n = tune_space_key(&base, 0, NULL, 0, NULL, 0, c, TUNE_MAX_CANDIDATES, &illegal, err, sizeof err);
    cr_assert_gt(n, 0, "%s", err);
    int w12 = 0, w20 = 0, dflt = 0;
    for (int i = 0; i < n; i++) {
        w12 += c[i].warps == 12;
        w20 += c[i].warps == 20;
        if (c[i].is_default) {
            dflt++;
            cr_assert_eq(c[i].warps, 20);
            cr_assert_eq(c[i].stages, SALE_SE_DEFAULT_STAGES);
        }
        if (c[i].warps >= 12) {
            sale_layout_cfg lc = key_layout(&c[i].key);
            cr_assert(sale_layout_wgmma_select(&lc));
            cr_assert_eq(c[i].threads, c[i].warps * 32);
        }
    }
    cr_assert_eq(w12, 4, "warps 12 with stages 2, 3, 4, 6");
    cr_assert_eq(w20, 4, "warps 20 with stages 2, 3, 4, 6");
    cr_assert_eq(dflt, 1);
    /* a config warps list narrows the mma.sync tiles only */
    const int warps[] = {4};
    n = tune_space_key(&base, 0, warps, 1, NULL, 0, c, TUNE_MAX_CANDIDATES, NULL, err, sizeof err);
    w12 = w20 = 0;
    for (int i = 0; i < n; i++) {
        w12 += c[i].warps == 12;
        w20 += c[i].warps == 20;
        cr_assert(c[i].warps == 4 || c[i].warps == 12 || c[i].warps == 20, "warps %d", c[i].warps);
    }
    cr_assert_eq(w12, 4);
    cr_assert_eq(w20, 4);
    /* the built-in tuning table (warps 4, 8; stages 1, 2, 3) leaves out the
     * default's 4-stage ring; the default tiles are still a candidate, once
     * (every other candidate is checked against their output: sixteenth
     * session, `sale tune --family select` on the H200 found none) */
    const int tw[] = {4, 8}, ts[] = {1, 2, 3};
    n = tune_space_key(&base, 0, tw, 2, ts, 3, c, TUNE_MAX_CANDIDATES, NULL, err, sizeof err);
    int nd = 0;
    for (int i = 0; i < n; i++) {
        cr_assert(c[i].stages <= 3 || (c[i].warps == 20 && c[i].stages == SALE_SE_DEFAULT_STAGES),
                  "warps %d stages %d outside the lists", c[i].warps, c[i].stages);
        if (c[i].is_default) {
            nd++;
            cr_assert_eq(c[i].warps, 20);
            cr_assert_eq(c[i].stages, SALE_SE_DEFAULT_STAGES);
            sale_layout_cfg lc = key_layout(&c[i].key);
            cr_assert(sale_layout_wgmma_select(&lc));
        }
    }
    cr_assert_eq(nd, 1, "the default tiles, once, under narrowed lists");
    /* a list that holds the default's stages adds no second copy */
    const int ts4[] = {2, SALE_SE_DEFAULT_STAGES};
    n = tune_space_key(&base, 0, tw, 2, ts4, 2, c, TUNE_MAX_CANDIDATES, NULL, err, sizeof err);
    nd = 0;
    for (int i = 0; i < n; i++)
        nd += c[i].warps == 20 && c[i].stages == SALE_SE_DEFAULT_STAGES;
    cr_assert_eq(nd, 1);
    /* thr=run: no wgmma estimation */
    base.thr = SALE_THR_RUN;
    n = tune_space_key(&base, 0, NULL, 0, NULL, 0, c, TUNE_MAX_CANDIDATES, &illegal, err, sizeof err);
    cr_assert_gt(n, 0, "%s", err);
    for (int i = 0; i < n; i++) {
        cr_assert_lt(c[i].warps, 12, "thr=run select with warps %d", c[i].warps);
        if (c[i].is_default)
            cr_assert_eq(c[i].warps, 4);
    }
    cr_assert_geq(illegal, 6, "the 6 wgmma tiles are refused with thr=run");
}

/* --dense-below times fused, two-pass and dense at their default tiles: it
 * silently ignored --family, --strategy, --budget, --seed and --thr (the
 * docs audit). Given with it, each is a usage error naming the option; the
 * options it uses (--seq-len, --batch, --heads, --head-dim, --dtype,
 * --reps) pass the argument check. */
Test(tune, dense_below_refuses_the_options_it_does_not_use)
{
    char buf[4096];
    const char *ignored[][2] = {{"--family", "fused"}, {"--strategy", "halving"}, {"--budget", "10"},
                                {"--seed", "3"},       {"--thr", "run"}};
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
        char *a[] = {"tune", "--dense-below", (char *)ignored[i][0], (char *)ignored[i][1], NULL};
        cr_assert_eq(cli_capture(4, a, buf, sizeof buf), 2, "%s with --dense-below accepted: %s", ignored[i][0], buf);
        cr_assert(strstr(buf, ignored[i][0]) && strstr(buf, "does not apply"), "%s", buf);
        char *b[] = {"tune", (char *)ignored[i][0], (char *)ignored[i][1], "--dense-below", NULL};
        cr_assert_eq(cli_capture(4, b, buf, sizeof buf), 2, "%s before --dense-below accepted", ignored[i][0]);
    }
    char *ok[] = {"tune", "--dense-below", "--seq-len", "2048,4096", "--batch", "2", "--heads", "16", "4",
                  "--head-dim", "64", "--dtype", "f16", "--reps", "50", NULL};
    cr_assert_eq(cli_tune(NULL, NULL, 15, ok), -1, "the options --dense-below uses were refused");
}
