/* test_harden_cli.c — issue 12 through the `sale` command as a user meets it:
 * foreign files given as the cache or as an export destination stay byte
 * for byte as they were (3, 4), a listing creates nothing (4), duplicated
 * fleet lists cost nothing and count right (7), a read-only cache lists (8)
 * and compiles nothing it cannot store;
 * then an audit's oddities: stray arguments, ls with both --tuned and
 * --thresholds, empty global paths, why a script cannot be opened. */
#include <criterion/criterion.h>

#include "cli_helpers.h"
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <grp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[200];
static char out[1 << 16];

static void setup(void)
{
    cli_tmp_setup(dir, sizeof dir, "/tmp/sale_harden_cli_XXXXXX");
}

static void teardown(void)
{
    cli_tmp_teardown(dir);
}

TestSuite(harden_cli, .init = setup, .fini = teardown, .timeout = 300);

static const char *in_dir(const char *name)
{
    static char buf[8][512];
    static int i;
    char *b = buf[i++ % 8];
    snprintf(b, 512, "%s/%s", dir, name);
    return b;
}

/* Run "sale ARGS", capture stdout+stderr into out, return the exit code. */
static int run(double *secs, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cli_vrun(out, sizeof out, secs, fmt, ap);
    va_end(ap);
    return rc;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Entries of dir other than . and .. and the config folder. */
static int entries(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* The file is byte-identical to before and nothing appeared beside it
 * (no .corrupt-*, -journal, -wal, -shm). */
static void assert_untouched(const char *path, const char *before, size_t blen)
{
    size_t alen;
    char *after = slurp(path, &alen);
    cr_assert(alen == blen && memcmp(before, after, blen) == 0, "%s changed", path);
    free(after);
    cr_assert_eq(entries(), 1, "something was created beside %s", path);
}

static const char text[] = "# README\n\nThis is not a kernel cache.\n";

static void write_file(const char *path, const char *s)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fputs(s, f);
    fclose(f);
}

/* 3. */
Test(harden_cli, a_text_file_as_cache_is_refused_and_left_as_it_was)
{
    const char *p = in_dir("README.md");
    write_file(p, text);
    cr_assert_neq(run(NULL, "--cache %s ls", p), 0, "%s", out);
    cr_assert(strstr(out, "not a sale cache") && strstr(out, "refusing to touch it"), "%s", out);
    assert_untouched(p, text, strlen(text));
}

Test(harden_cli, another_applications_sqlite_file_is_refused_and_left_as_it_was)
{
    const char *p = in_dir("app.db");
    sqlite3 *c;
    cr_assert_eq(sqlite3_open(p, &c), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(c, "CREATE TABLE notes(t TEXT); INSERT INTO notes VALUES ('mine');", 0, 0, 0), SQLITE_OK);
    sqlite3_close(c);
    size_t n;
    char *before = slurp(p, &n);
    cr_assert_neq(run(NULL, "--cache %s ls", p), 0, "%s", out);
    cr_assert(strstr(out, "not a sale cache") != NULL, "%s", out);
    assert_untouched(p, before, n);
    cr_assert_neq(run(NULL, "--cache %s verify", p), 0, "%s", out);
    assert_untouched(p, before, n);
    free(before);
}

/* 4. */
Test(harden_cli, export_over_a_foreign_file_needs_force)
{
    cr_assert_eq(run(NULL, "prewarm -q --arch sm_90 --family quantize --head-dim 64 --dtype bf16"), 0, "%s", out);
    const char *p = in_dir("notes.txt");
    write_file(p, text);
    cr_assert_neq(run(NULL, "export %s", p), 0, "%s", out);
    cr_assert(strstr(out, "--force") != NULL, "%s", out);
    size_t n;
    char *after = slurp(p, &n);
    cr_assert(n == strlen(text) && memcmp(after, text, n) == 0, "the file was changed");
    free(after);
    /* nothing but the file (and the cache the export opened) */
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)))
        cr_assert(!strstr(e->d_name, "notes.txt") || strcmp(e->d_name, "notes.txt") == 0, "%s left beside it",
                  e->d_name);
    closedir(d);
}

Test(harden_cli, export_to_a_device_node_leaves_it_a_device)
{
    if (geteuid() != 0)
        cr_skip_test("needs root: only root could replace /dev/null");
    struct stat st;
    cr_assert_eq(stat("/dev/null", &st), 0);
    cr_assert(S_ISCHR(st.st_mode));
    cr_assert_eq(run(NULL, "prewarm -q --arch sm_90 --family quantize --head-dim 64 --dtype bf16"), 0, "%s", out);
    cr_assert_neq(run(NULL, "export /dev/null"), 0, "%s", out);
    cr_assert_eq(stat("/dev/null", &st), 0);
    cr_assert(S_ISCHR(st.st_mode), "/dev/null is no longer a character device");
    run(NULL, "--cache /dev/null ls");
    cr_assert_neq(access("/dev/null-journal", F_OK), 0, "/dev/null-journal created");
    cr_assert_neq(access("/dev/null-wal", F_OK), 0, "/dev/null-wal created");
    cr_assert_eq(stat("/dev/null", &st), 0);
    cr_assert(S_ISCHR(st.st_mode), "/dev/null is no longer a character device");
}

Test(harden_cli, listing_a_missing_cache_creates_no_directory)
{
    cr_assert_neq(access("/nonexistent", F_OK), 0, "/nonexistent exists on this machine");
    run(NULL, "--cache /nonexistent/deep/dir/k.db ls");
    cr_assert_neq(access("/nonexistent", F_OK), 0, "ls created /nonexistent: %s", out);
    run(NULL, "--cache %s/deep/dir/k.db ls", dir);
    cr_assert_neq(access(in_dir("deep"), F_OK), 0, "ls created %s/deep: %s", dir, out);
}

/* tune's usage errors opened (and created) the cache before its options
 * were read; a valid tune with --help last prints its help, once. */
Test(harden_cli, tune_usage_errors_touch_no_cache)
{
    const char *cache = in_dir("kernels.db");
    cr_assert_eq(run(NULL, "tune --heads 32 0"), 2, "%s", out);
    cr_assert_eq(run(NULL, "tune --families nosuch"), 2, "%s", out);
    cr_assert_eq(run(NULL, "tune --reps -3"), 2, "%s", out);
    cr_assert_eq(access(cache, F_OK), -1, "a usage error created %s", cache);
    cr_assert_eq(run(NULL, "tune --reps 3 --help"), 0, "%s", out);
    const char *first = strstr(out, "usage: sale tune");
    cr_assert(first != NULL && strstr(first + 1, "usage: sale tune") == NULL, "%s", out);
    cr_assert_eq(access(cache, F_OK), -1, "--help created %s", cache);
}

/* info only looks: it created a named cache that did not exist, and its
 * directories (as root, /nonexistent/x/ on the machine that ran it). */
Test(harden_cli, info_reports_a_missing_cache_and_creates_nothing)
{
    cr_assert_eq(run(NULL, "--cache %s/deep/dir/k.db info", dir), 0, "%s", out);
    cr_assert_neq(access(in_dir("deep"), F_OK), 0, "info created %s/deep: %s", dir, out);
    cr_assert(strstr(out, "does not exist yet") != NULL && strstr(out, "deep/dir/k.db") != NULL, "%s", out);
    cr_assert_eq(run(NULL, "prewarm -q --arch sm_90 --family quantize --head-dim 64 --dtype bf16"), 0, "%s", out);
    cr_assert_eq(run(NULL, "info"), 0, "%s", out);
    cr_assert(strstr(out, "does not exist yet") == NULL && strstr(out, "kernels.db (") != NULL, "%s", out);
}

/* 7. "N kernels (A compiled, B from cache, C failed)": all >= 0, A+B+C = N. */
static void assert_summary(int want_n)
{
    const char *s = strstr(out, " kernels (");
    cr_assert_not_null(s, "no summary: %s", out);
    while (s > out && s[-1] >= '0' && s[-1] <= '9')
        s--;
    int n, a, b, c;
    cr_assert_eq(sscanf(s, "%d kernels (%d compiled, %d from cache, %d failed)", &n, &a, &b, &c), 4, "%s", out);
    cr_assert(n >= 0 && a >= 0 && b >= 0 && c >= 0 && a + b + c == n, "%s", out);
    cr_assert_eq(n, want_n, "%s", out);
}

Test(harden_cli, duplicated_fleet_lists_cost_nothing_and_count_right)
{
    char cfg[4096] = "fleet = {\n";
    static const char *const lists[][2] = {
        {"archs", "'sm_90'"},   {"head_dims", "64"},  {"families", "'quantize'"}, {"dtypes", "'bf16'"},
        {"block_q", "64"},      {"block_k", "32"},    {"block_seg", "128"},       {"local_window", "128"},
    };
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        strcat(cfg, "  ");
        strcat(cfg, lists[i][0]);
        strcat(cfg, " = {");
        for (int k = 0; k < 16; k++) {
            strcat(cfg, lists[i][1]);
            strcat(cfg, k < 15 ? ", " : "},\n");
        }
    }
    strcat(cfg, "}\n");
    const char *p = in_dir("dup.lua");
    write_file(p, cfg);
    double t;
    cr_assert_eq(run(&t, "--config %s info", p), 0, "%s", out);
    cr_assert_lt(t, 5, "sale info took %.1f s", t);
    cr_assert_eq(run(&t, "--config %s prewarm --arch sm_90,sm_90,sm_90 --family quantize --head-dim 64", p), 0, "%s",
                 out);
    assert_summary(1);
    cr_assert_eq(run(&t, "--config %s prewarm --arch sm_90,sm_90,sm_90 --family quantize --head-dim 64", p), 0, "%s",
                 out);
    assert_summary(1);
    cr_assert(strstr(out, "(0 compiled, 1 from cache, 0 failed)") != NULL, "%s", out);
}

/* A cache the user cannot write: ro/k.db holding quantize:d=64 (bf16,
 * sm_90), file 0444 in a 0555 directory. */
static void make_read_only_cache(char *ro, size_t rol, char *db, size_t dbl)
{
    cr_assert_eq(run(NULL, "prewarm -q --arch sm_90 --family quantize --head-dim 64 --dtype bf16"), 0, "%s", out);
    snprintf(ro, rol, "%s/ro", dir);
    cr_assert_eq(mkdir(ro, 0755), 0);
    snprintf(db, dbl, "%s/k.db", ro);
    cr_assert_eq(run(NULL, "export %s", db), 0, "%s", out);
    cr_assert_eq(chmod(dir, 0755), 0);
    cr_assert_eq(chmod(db, 0444), 0);
    cr_assert_eq(chmod(ro, 0555), 0);
}

/* Run `sale --cache DB ARGS...` (NULL-terminated) with output into out,
 * as nobody when we are root (root can write anywhere); return the exit code. */
static int run_unprivileged(const char *ro, const char *db, ...)
{
    const char *argv[16] = {"sale", "--cache", db};
    int n = 3;
    va_list ap;
    va_start(ap, db);
    for (const char *a; n < 15 && (a = va_arg(ap, const char *));)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    int fd[2];
    cr_assert_eq(pipe(fd), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        dup2(fd[1], 1);
        dup2(fd[1], 2);
        close(fd[0]);
        if (geteuid() == 0 && (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0))
            _exit(97);
        setenv("XDG_CONFIG_HOME", ro, 1);
        setenv("HOME", ro, 1);
        execv(SALE_CLI, (char *const *)argv);
        _exit(98);
    }
    close(fd[1]);
    size_t got = 0;
    ssize_t r;
    while (got < sizeof out - 1 && (r = read(fd[0], out + got, sizeof out - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = 0;
    close(fd[0]);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st), "%s", out);
    return WEXITSTATUS(st);
}

/* entries of directory d other than . and .. */
static int dir_entries(const char *d)
{
    DIR *dh = opendir(d);
    cr_assert_not_null(dh, "%s", d);
    struct dirent *e;
    int k = 0;
    while ((e = readdir(dh)))
        k += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(dh);
    return k;
}

/* 8. A cache whose directory is not writable still lists. */
Test(harden_cli, a_read_only_cache_lists_and_says_so)
{
    char ro[600], db[700];
    make_read_only_cache(ro, sizeof ro, db, sizeof db);
    int rc = run_unprivileged(ro, db, "ls", (char *)NULL);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "quantize:d=64") && strstr(out, "1 kernels"), "%s", out);
    cr_assert(strstr(out, "read-only") != NULL, "%s", out);
    /* nothing was written: no -wal/-shm/-journal beside it */
    cr_assert_eq(dir_entries(ro), 1, "files appeared beside the read-only cache");
}

/* A read-only cache serves what it holds to sale.compile; a kernel it lacks
 * is an error that says why (the cache cannot store it), not SQLite's
 * "attempt to write a readonly database" from the compile claim, and the
 * cache stays as it was. (sale_get_kernel compiles such a kernel in memory
 * instead: that needs a GPU, test_gpu.c.) */
Test(harden_cli, a_read_only_cache_compiles_nothing_it_cannot_store)
{
    char ro[600], db[700], script[700];
    make_read_only_cache(ro, sizeof ro, db, sizeof db);
    snprintf(script, sizeof script, "%s/c.lua", dir);
    FILE *f = fopen(script, "w");
    cr_assert_not_null(f);
    fputs("local info = sale.compile('quantize:d=64,dt=bf16,arch=sm_90')\n"
          "print('held: from_cache=' .. tostring(info.from_cache))\n"
          "local ok, e = pcall(sale.compile, 'quantize:d=128,dt=bf16,arch=sm_90')\n"
          "print('missing: ' .. tostring(ok) .. ' ' .. tostring(e))\n",
          f);
    fclose(f);
    cr_assert_eq(chmod(script, 0644), 0);
    size_t before_len, after_len;
    char *before = slurp(db, &before_len);
    int rc = run_unprivileged(ro, db, "run", script, (char *)NULL);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "held: from_cache=true"), "%s", out);
    cr_assert(strstr(out, "missing: false"), "%s", out);
    cr_assert(strstr(out, "is read-only") && strstr(out, "cannot be stored"), "%s", out);
    cr_assert_null(strstr(out, "attempt to write"), "%s", out);
    char *after = slurp(db, &after_len);
    cr_assert(before_len == after_len && !memcmp(before, after, before_len), "the read-only cache changed");
    cr_assert_eq(dir_entries(ro), 1, "files appeared beside the read-only cache");
    free(before);
    free(after);
}

/* Lists and the --generate spec were cut silently at 512 (256 for tune)
 * bytes: "...,sm_80" became "s" ("bad value 's'", a value never written),
 * "...,65536" became "...,655" and was tuned, "...,sm_90a" could become
 * "sm_90"; "seed=-1" ran as 2^64 - 1, an out-of-range seed as 2^64 - 1. */
Test(harden_cli, long_lists_and_specs_are_refused_never_cut)
{
    char *list = malloc(700 * 6 + 1);
    cr_assert_not_null(list);
    list[0] = 0;
    for (int i = 0; i < 300; i++)
        strcat(list, i ? ",sm_80" : "sm_80");
    cr_assert_eq(run(NULL, "prewarm --arch %s", list), 2, "%s", out);
    cr_assert(strstr(out, "--arch: list longer than") != NULL, "%s", out);
    free(list);
    /* 501 bytes of a valid spec, then a seed that the cut would shorten */
    char spec[1024] = "";
    while (strlen(spec) < 496)
        strcat(spec, "layers=1,");
    strcat(spec, "seq=128,dim=64,heads=1,seed=123456789");
    cr_assert_eq(run(NULL, "calibrate --model m --device cpu --dry-run -q --generate %s", spec), 2, "%s", out);
    cr_assert(strstr(out, "--generate: longer than") != NULL, "%s", out);
    cr_assert_eq(run(NULL, "calibrate --model m --device cpu --dry-run -q --generate seed=-1"), 2, "%s", out);
    cr_assert(strstr(out, "seed") != NULL, "%s", out);
    cr_assert_eq(run(NULL, "calibrate --model m --device cpu --dry-run -q --generate seed=99999999999999999999999"), 2,
                 "%s", out);
    char seqs[1024] = "";
    while (strlen(seqs) < 250)
        strcat(seqs, "1024,");
    strcat(seqs, "65536");
    cr_assert_eq(run(NULL, "tune --seq-len %s", seqs), 2, "%s", out);
    cr_assert(strstr(out, "--seq-len") != NULL, "%s", out);
}

/* A stray value after an option was read as an option: "tune --heads 32 0"
 * said "option '0' needs a value". Every subcommand names it as what it is. */
Test(harden_cli, a_stray_argument_is_named_unexpected_not_an_option)
{
    cr_assert_eq(run(NULL, "tune --heads 32 0"), 2, "%s", out);
    cr_assert(strstr(out, "unexpected argument '0' (after --heads 32)") != NULL, "%s", out);
    cr_assert(strstr(out, "needs a value") == NULL, "%s", out);
    cr_assert_eq(run(NULL, "tune --seq-len 1024 extra --batch 1"), 2, "%s", out);
    cr_assert(strstr(out, "unexpected argument 'extra' (after --seq-len 1024)") != NULL, "%s", out);
    cr_assert_eq(run(NULL, "tune --dense-below 0"), 2, "%s", out);
    cr_assert(strstr(out, "unexpected argument '0' (after --dense-below)") != NULL, "%s", out);
    cr_assert_eq(run(NULL, "tune 0"), 2, "%s", out);
    cr_assert(strstr(out, "unexpected argument '0'") != NULL, "%s", out);
    static const char *const others[] = {
        "prewarm --arch sm_90 0", "ls --tuned 0", "calibrate --model m --device cpu 0", "info 0", "verify 0",
        "clear 0",
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        cr_assert_eq(run(NULL, "%s", others[i]), 2, "%s: %s", others[i], out);
        cr_assert(strstr(out, "unexpected argument '0'") != NULL, "%s: %s", others[i], out);
    }
}

/* "ls --tuned --thresholds" showed the thresholds only. */
Test(harden_cli, ls_tuned_and_thresholds_shows_both_sections)
{
    cr_assert_eq(run(NULL, "calibrate -q --model m --device cpu --generate "
                           "layers=1,heads=2,kv_heads=2,seq=256,dim=64,samples=2,seed=3"),
                 0, "%s", out);
    cr_assert_eq(run(NULL, "ls --tuned --thresholds"), 0, "%s", out);
    const char *tuned = strstr(out, "device "), *thr = strstr(out, "model ");
    cr_assert(tuned && thr && tuned < thr, "both headings, tuned first: %s", out);
    cr_assert(strstr(out, "0 tuned entries") != NULL, "%s", out);
    cr_assert(strstr(out, "2 thresholds") != NULL, "%s", out);
    cr_assert(strstr(out, "kernels") == NULL, "%s", out);
}

/* An empty path was taken as no path: --config '' ran on the default
 * config, --fleet '' without a fleet, --cache '' failed obscurely. */
Test(harden_cli, empty_global_paths_are_usage_errors)
{
    static const char *const opts[] = {"--config", "--fleet", "--cache"};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        cr_assert_eq(run(NULL, "%s '' info", opts[i]), 2, "%s: %s", opts[i], out);
        char want[64];
        snprintf(want, sizeof want, "%s: empty path", opts[i]);
        cr_assert(strstr(out, want) != NULL, "%s", out);
    }
}

/* "sale run missing.lua" said "cannot open" without saying why. */
Test(harden_cli, run_says_why_a_script_cannot_be_opened)
{
    const char *p = in_dir("missing.lua");
    cr_assert_eq(run(NULL, "run %s", p), 1, "%s", out);
    char want[700];
    snprintf(want, sizeof want, "cannot open %s: %s", p, strerror(ENOENT));
    cr_assert(strstr(out, want) != NULL, "'%s' not in %s", want, out);
    /* and the cache was not created first (the docs audit) */
    cr_assert_neq(access(in_dir("kernels.db"), F_OK), 0, "run of a missing script created the cache");
    cr_assert_eq(run(NULL, "run %s", dir), 1, "%s", out);
    cr_assert(strstr(out, strerror(EISDIR)) != NULL, "%s", out);
    cr_assert_neq(access(in_dir("kernels.db"), F_OK), 0, "run of a directory created the cache");
}

/* The commands that only look (ls, verify, info, export) report a damaged
 * cache and leave it where it is. At the default location they moved it
 * aside and started an empty one: `sale verify` then said "0 kernels
 * checked, 0 bad" and exited 0 (the docs audit). A command that writes
 * (prewarm) still moves it aside and rebuilds, as before. */
Test(harden_cli, looking_at_a_damaged_cache_reports_it_and_moves_nothing)
{
    cr_assert_eq(run(NULL, "prewarm -q --arch sm_90 --family quantize --head-dim 64 --dtype bf16"), 0, "%s", out);
    const char *p = in_dir("kernels.db");
    cr_assert_eq(access(p, F_OK), 0, "prewarm made no cache at the default location %s", p);
    /* scribble over the b-tree pages past the schema page, as a torn write would */
    int fd = open(p, O_WRONLY);
    cr_assert_geq(fd, 0);
    char junk[4096];
    memset(junk, 0x5a, sizeof junk);
    for (off_t off = 2 * 4096; off < 6 * 4096; off += 4096)
        cr_assert_eq(pwrite(fd, junk, sizeof junk, off), 4096);
    close(fd);
    size_t n;
    char *before = slurp(p, &n);
    const char *cmds[] = {"verify", "ls", "info", "export %s/out.db"};
    for (int i = 0; i < 4; i++) {
        char c[600];
        snprintf(c, sizeof c, cmds[i], dir);
        cr_assert_neq(run(NULL, "%s", c), 0, "sale %s on a damaged cache exited 0: %s", c, out);
        cr_assert(strstr(out, "is damaged") && strstr(out, "left as it is"), "sale %s: %s", c, out);
        assert_untouched(p, before, n);
        DIR *dh = opendir(dir);
        struct dirent *e;
        while ((e = readdir(dh)))
            cr_assert(!strstr(e->d_name, ".corrupt-") && strcmp(e->d_name, "out.db"), "sale %s made %s", c, e->d_name);
        closedir(dh);
    }
    free(before);
    cr_assert_eq(run(NULL, "prewarm -q --arch sm_90 --family quantize --head-dim 64 --dtype bf16"), 0, "%s", out);
    int aside = 0;
    DIR *dh = opendir(dir);
    struct dirent *e;
    while ((e = readdir(dh)))
        aside += strstr(e->d_name, ".corrupt-") != NULL && !strstr(e->d_name, "-wal") && !strstr(e->d_name, "-shm");
    closedir(dh);
    cr_assert_eq(aside, 1, "prewarm did not move the damaged cache aside: %s", out);
    cr_assert_eq(run(NULL, "verify"), 0, "%s", out);
}
