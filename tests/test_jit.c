/* test_jit.c — templates and NVRTC: every template compiles to a cubin for
 * every supported arch (a real compile), resources are parsed, the cache
 * serves the second request, and anything that changes code changes the hash. */
#include <criterion/criterion.h>
#include <glob.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "sale_layout.h"
#include "ctx_fixture.h"

static void setup(void) { ctx_fixture_open("jit"); }
static void teardown(void) { ctx_fixture_close(); }

/* parse a key's text and compile it (NVRTC, into the test's cache); both must succeed */
static sale_kernel_info compile_text(const char *text, sale_key *k)
{
    char err[256];
    cr_assert_eq(sale_key_parse(text, k, err, sizeof err), SALE_OK, "%s: %s", text, err);
    sale_kernel_info info;
    cr_assert_eq(sale_compile(ctx, k, &info), SALE_OK, "%s: %s", text, sale_last_error(ctx));
    return info;
}

TestSuite(jit, .init = setup, .fini = teardown, .timeout = 1200);

Test(jit, every_family_template_is_embedded)
{
    for (int f = 0; f < SALE_FAMILY_COUNT; f++) {
        const tpl_file *t = tpl_find(tpl_family_file((sale_family)f));
        cr_assert_not_null(t, "template %s missing", tpl_family_file((sale_family)f));
        cr_assert_gt(t->len, 100);
        cr_assert(strstr(t->text, sale_layout_main_entry(f)) != NULL, "%s lacks its entry %s", t->name,
                  sale_layout_main_entry(f));
    }
    cr_assert_not_null(tpl_find("sale_abi.h"));
    cr_assert_not_null(tpl_find("sale_layout.h"));
}

Test(jit, prelude_defines_every_parameter)
{
    sale_key k = sale_key_default(SALE_FAMILY_FUSED);
    k.arch = 90;
    k.block_seg = 256;
    char err[256], pre[2048];
    cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_gt(tpl_prelude(&k, pre, sizeof pre), 0);
    const char *want[] = {"#define SALE_FAMILY 1\n", "#define SALE_HEAD_DIM 128\n", "#define SALE_BLOCK_SEG 256\n",
                          "#define SALE_EST_BITS 8\n", "#define SALE_ARCH 900\n", "#define SALE_DTYPE 1\n"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert(strstr(pre, want[i]) != NULL, "prelude lacks %s", want[i]);
}

/* The real thing: NVRTC compiles each family for each arch. */
Test(jit, every_template_compiles_for_every_arch)
{
    const int archs[] = {80, 86, 89, 90, SALE_ARCH_SM90A};
    for (int f = 0; f < SALE_FAMILY_COUNT; f++)
        for (size_t a = 0; a < sizeof archs / sizeof archs[0]; a++) {
            sale_key k = sale_key_default((sale_family)f);
            k.arch = archs[a];
            sale_kernel_info info;
            sale_status s = sale_compile(ctx, &k, &info);
            cr_assert_eq(s, SALE_OK, "%s for %s: %s", sale_family_name((sale_family)f), sale_arch_name(archs[a]),
                         sale_last_error(ctx));
            cr_assert_gt(info.cubin_bytes, 1000);
            cr_assert_gt(info.registers, 0, "ptxas resources not parsed for %s", info.key);
            cr_assert_eq(info.from_cache, 0);
            cr_assert_eq(info.stack >= 0, 1);
            cr_assert_gt(info.threads, 0);
            cr_assert_str_eq(info.arch, sale_arch_name(archs[a]));
        }
}

Test(jit, fp16_head_dim_64_and_4bit_variants_compile)
{
    const char *keys[] = {"fused:d=64,dt=f16,est=4,arch=sm_86", "select:d=64,dt=f16,est=4,arch=sm_89",
                          "quantize:d=64,est=4,arch=sm_80", "attend:d=64,dt=f16,arch=sm_90",
                          "dense:d=64,dt=f16,bq=128,arch=sm_90", "fused:d=128,bk=64,seg=256,win=256,arch=sm_90"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        sale_key k;
        sale_kernel_info info = compile_text(keys[i], &k);
        cr_assert_gt(info.cubin_bytes, 1000);
    }
}

/* On sm_90a the dense family at head_dim 128 is the wgmma + TMA kernel: 12
 * warps, 2 or 3 stages, 168 registers (the launch bound; setmaxnreg moves them
 * to the consumers), no spills (a spill in the wgmma loop serialises it). */
Test(jit, sm90a_dense_and_attend_are_the_wgmma_kernels_without_spills)
{
    const char *keys[] = {"dense:d=128,dt=bf16,arch=sm_90a", "dense:d=128,dt=f16,arch=sm_90a",
                          "dense:d=128,dt=bf16,stages=2,arch=sm_90a"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        sale_key k;
        sale_kernel_info info = compile_text(keys[i], &k);
        cr_assert_eq(info.threads, 384, "%s: %d threads", info.key, info.threads);
        cr_assert(strstr(info.key, "warps=12") != NULL, "%s", info.key);
        cr_assert_eq(info.spill_stores + info.spill_loads, 0, "%s spills %d/%d bytes", info.key, info.spill_stores,
                     info.spill_loads);
        cr_assert_gt(info.smem_dynamic, 160 * 1024, "%s: %d bytes of shared memory", info.key, info.smem_dynamic);
    }
    /* any other tiles are refused with the reason */
    sale_key k;
    char err[256];
    cr_assert_eq(sale_key_parse("dense:d=128,warps=4,stages=2,arch=sm_90a", &k, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_ERR_INVALID);
    cr_assert(strstr(err, "wgmma") != NULL, "%s", err);
    /* attend on sm_90a: the wgmma kernel by default, the mma.sync one as a tile
     * choice, and only mma.sync for masks of other block sizes */
    cr_assert_eq(sale_key_parse("attend:d=128,arch=sm_90a", &k, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(k.warps, 12);
    sale_kernel_info ai;
    cr_assert_eq(sale_compile(ctx, &k, &ai), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(ai.threads, 384);
    cr_assert_eq(ai.spill_stores + ai.spill_loads, 0, "%s spills", ai.key);
    cr_assert_eq(sale_key_parse("attend:d=128,warps=4,arch=sm_90a", &k, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(sale_compile(ctx, &k, &ai), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(ai.threads, 128);
    /* the rows attend kernel (warps 5): 256 threads (the consumer warpgroup; the issuer, the scheduler
     * and two warps that make the producer warpgroup whole for setmaxnreg), no spills, and registers
     * and shared memory that let two CTAs share an SM (65,536 registers;
     * 228 KB less the 1 KB the system keeps a CTA) */
    for (int st = 2; st <= 3; st++) {
        char t[96];
        snprintf(t, sizeof t, "attend:d=128,warps=5,stages=%d,arch=sm_90a", st);
        cr_assert_eq(sale_key_parse(t, &k, err, sizeof err), SALE_OK, "%s", err);
        cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK, "%s", err);
        cr_assert_eq(sale_compile(ctx, &k, &ai), SALE_OK, "%s", sale_last_error(ctx));
        cr_assert_eq(ai.threads, 256, "%s: %d threads (two warpgroups)", ai.key, ai.threads);
        cr_assert_eq(ai.spill_stores + ai.spill_loads, 0, "%s spills", ai.key);
        cr_assert_leq(2 * 256 * ((ai.registers + 7) / 8 * 8), 65536, "%s: %d registers", ai.key, ai.registers);
        cr_assert_leq(2 * (ai.smem_dynamic + ai.smem_static + 1024), 233472, "%s: %d B", ai.key, ai.smem_dynamic);
        cr_assert_str_eq(ai.entry, "sale_attend_rows_kernel");
    }
    cr_assert_eq(sale_key_parse("attend:d=128,bq=128,arch=sm_90a", &k, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_neq(k.warps, 12, "block_q 128 masks cannot take the wgmma attend kernel");
    /* head_dim 64 keeps the mma.sync kernel */
    cr_assert_eq(sale_key_parse("dense:d=64,arch=sm_90a", &k, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK, "%s", err);
    cr_assert_eq(k.warps, 4);
}

Test(jit, second_request_is_served_from_the_cache)
{
    sale_key k = sale_key_default(SALE_FAMILY_QUANTIZE);
    k.arch = 86;
    sale_kernel_info a, b;
    cr_assert_eq(sale_compile(ctx, &k, &a), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(a.from_cache, 0);
    cr_assert_eq(sale_compile(ctx, &k, &b), SALE_OK, "%s", sale_last_error(ctx));
    cr_assert_eq(b.from_cache, 1);
    cr_assert_eq(a.src_hash, b.src_hash);
    cr_assert_eq(a.cubin_bytes, b.cubin_bytes);
    /* a new context on the same file also hits */
    sale_ctx *c2;
    sale_options o = {0};
    o.cache_path = sale_cache_path(ctx);
    cr_assert_eq(sale_create(&c2, &o), SALE_OK);
    sale_kernel_info c;
    cr_assert_eq(sale_compile(c2, &k, &c), SALE_OK, "%s", sale_last_error(c2));
    cr_assert_eq(c.from_cache, 1);
    sale_destroy(c2);
}

Test(jit, anything_that_changes_code_changes_the_hash)
{
    sale_key k = sale_key_default(SALE_FAMILY_FUSED);
    k.arch = 90;
    char err[256];
    cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK);
    char *src = jit_build_source(&k);
    cr_assert_not_null(src);
    uint64_t h0 = jit_source_hash(&k, src);
    /* template text */
    char *edited = malloc(strlen(src) + 16);
    sprintf(edited, "%s\n// edit\n", src);
    cr_assert_neq(jit_source_hash(&k, edited), h0);
    /* compile options (arch) */
    sale_key k2 = k;
    k2.arch = SALE_ARCH_SM90A;
    char *src2 = jit_build_source(&k2);
    cr_assert_neq(jit_source_hash(&k2, src2), h0);
    /* a prelude field */
    sale_key k3 = k;
    k3.local_window = 256;
    char *src3 = jit_build_source(&k3);
    cr_assert_neq(jit_source_hash(&k3, src3), h0);
    cr_assert_eq(jit_source_hash(&k, src), h0, "hash is deterministic");
    free(src);
    free(src2);
    free(src3);
    free(edited);
}

Test(jit, compile_error_returns_the_nvrtc_log)
{
    jit_result r;
    char *msg = NULL;
    sale_status s = jit_compile("bad.cu", "extern \"C\" __global__ void k() { undeclared_thing = 1; }", 90, NULL, &r,
                                &msg);
    cr_assert_eq(s, SALE_ERR_COMPILE);
    cr_assert_not_null(msg);
    cr_assert(strstr(msg, "undeclared_thing") != NULL, "log missing: %s", msg);
    cr_assert(strstr(msg, "bad.cu") != NULL, "log should name the file: %s", msg);
    free(msg);
}

Test(jit, ptxas_resource_lines_are_parsed)
{
    const char *log = "ptxas info    : Compiling entry function 'a' for 'sm_90'\n"
                      "ptxas info    : Function properties for a\n"
                      "ptxas         .     24 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n"
                      "ptxas info    : Used 168 registers, used 1 barriers, 2048 bytes smem\n"
                      "ptxas info    : Compiling entry function 'b' for 'sm_90'\n"
                      "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
                      "ptxas info    : Used 40 registers, 4096 bytes smem, 400 bytes cmem[0]\n";
    jit_result r;
    memset(&r, 0, sizeof r);
    jit_parse_resources(log, &r);
    cr_assert_eq(r.registers, 168);
    cr_assert_eq(r.stack, 24);
    cr_assert_eq(r.spill_stores, 8);
    cr_assert_eq(r.spill_loads, 12);
    cr_assert_eq(r.smem_static, 4096);
}

Test(jit, compile_needs_a_concrete_arch)
{
    sale_key k = sale_key_default(SALE_FAMILY_DENSE);
    cr_assert_eq(sale_compile(ctx, &k, NULL), SALE_ERR_INVALID);
    cr_assert(strstr(sale_last_error(ctx), "arch") != NULL);
}

Test(jit, get_kernel_without_a_gpu_says_no_device)
{
    int n = 0;
    if (sale_device_count(ctx, &n) == SALE_OK && n > 0)
        cr_skip_test("a GPU is present: this test is for machines without one");
    sale_key k = sale_key_default(SALE_FAMILY_QUANTIZE);
    sale_kernel *kern = NULL;
    cr_assert_eq(sale_get_kernel(ctx, &k, &kern), SALE_ERR_NO_DEVICE);
    cr_assert_null(kern);
    cr_assert(strlen(sale_last_error(ctx)) > 10, "no reason given");
}

/* Eight processes start at once and ask for the same missing kernel: all
 * succeed with the same bytes, and it is compiled once. */
#include <sys/wait.h>
Test(jit, eight_processes_compile_a_missing_kernel_once)
{
    char path[512];
    snprintf(path, sizeof path, "%s/herd.db", tmpdir);
    int fds[8][2];
    pid_t pids[8];
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(pipe(fds[i]), 0);
        pids[i] = fork();
        cr_assert_neq(pids[i], -1);
        if (pids[i] == 0) {
            sale_ctx *c;
            sale_options o = {0};
            o.cache_path = path;
            sale_key k;
            char err[256];
            sale_kernel_info info;
            int ok = sale_create(&c, &o) == SALE_OK &&
                     sale_key_parse("fused:d=64,dt=f16,arch=sm_89", &k, err, sizeof err) == SALE_OK &&
                     sale_compile(c, &k, &info) == SALE_OK;
            char line[128];
            int n = snprintf(line, sizeof line, "%d %d %016llx %zu\n", ok, info.from_cache,
                             (unsigned long long)info.src_hash, info.cubin_bytes);
            if (write(fds[i][1], line, (size_t)n) != n)
                _exit(3);
            _exit(ok ? 0 : 1);
        }
        close(fds[i][1]);
    }
    int compiled = 0;
    char first[128] = "";
    for (int i = 0; i < 8; i++) {
        int st;
        cr_assert_eq(waitpid(pids[i], &st, 0), pids[i]);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "process %d failed", i);
        char line[128] = "";
        cr_assert_gt(read(fds[i][0], line, sizeof line - 1), 0);
        close(fds[i][0]);
        int ok, from_cache;
        char rest[100];
        cr_assert_eq(sscanf(line, "%d %d %99[^\n]", &ok, &from_cache, rest), 3);
        compiled += !from_cache;
        if (!first[0])
            strcpy(first, rest);
        cr_assert_str_eq(rest, first, "every process ends with the same kernel");
    }
    cr_assert_eq(compiled, 1, "%d processes compiled the same kernel", compiled);
}

/* The same inside one process: eight threads of one context miss one
 * kernel together. The cache's claim counts this process's pid as its own,
 * so each thread used to compile it (8 NVRTC runs, and the first to finish
 * dropped the claim the others were still under); now one compiles and the
 * others wait for its row. */
typedef struct {
    pthread_barrier_t *go;
    sale_status st;
    sale_kernel_info info;
} herd_thread;

static void *herd_worker(void *p)
{
    herd_thread *t = p;
    sale_key k;
    char err[256];
    if (sale_key_parse("fused:d=64,dt=bf16,arch=sm_86", &k, err, sizeof err) != SALE_OK) {
        t->st = SALE_ERR_INVALID;
        return NULL;
    }
    pthread_barrier_wait(t->go);
    t->st = sale_compile(ctx, &k, &t->info);
    return NULL;
}

Test(jit, eight_threads_of_one_context_compile_a_missing_kernel_once)
{
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 8);
    herd_thread t[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].go = &go;
        cr_assert_eq(pthread_create(&th[i], NULL, herd_worker, &t[i]), 0);
    }
    int compiled = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(t[i].st, SALE_OK, "thread %d: %s", i, sale_status_name(t[i].st));
        compiled += !t[i].info.from_cache;
        cr_assert_eq(t[i].info.src_hash, t[0].info.src_hash);
        cr_assert_eq(t[i].info.cubin_bytes, t[0].info.cubin_bytes);
    }
    pthread_barrier_destroy(&go);
    cr_assert_eq(compiled, 1, "%d threads compiled the same kernel", compiled);
}

/* The cubin carries its resources: reading them from the ELF agrees with
 * what ptxas printed (NVRTC's own cache can leave the log without them). */
Test(jit, cubin_resources_agree_with_the_ptxas_log)
{
    const int families[] = {SALE_FAMILY_QUANTIZE, SALE_FAMILY_DENSE, SALE_FAMILY_SELECT};
    for (int i = 0; i < 3; i++) {
        sale_key k = sale_key_default((sale_family)families[i]);
        k.arch = 90;
        char err[256];
        cr_assert_eq(sale_key_resolve(&k, err, sizeof err), SALE_OK);
        char *src = jit_build_source(&k), *msg = NULL;
        jit_result r;
        cr_assert_eq(jit_compile("t.cu", src, 90, NULL, &r, &msg), SALE_OK, "%s", msg ? msg : "");
        jit_result e;
        memset(&e, 0, sizeof e);
        cr_assert_eq(jit_parse_cubin(r.cubin, r.cubin_bytes, &e), 0);
        cr_assert_gt(r.registers, 0);
        cr_assert_eq(e.registers, r.registers, "%s: ELF %d registers, log %d", sale_family_name(k.family), e.registers,
                     r.registers);
        cr_assert_eq(e.stack, r.stack);
        jit_result_free(&r);
        free(src);
    }
    unsigned char junk[64] = "not an elf";
    jit_result e;
    memset(&e, 0, sizeof e);
    cr_assert_eq(jit_parse_cubin(junk, sizeof junk, &e), -1);
    cr_assert_eq(jit_parse_cubin(junk, 3, &e), -1);
}

/* Version 0 (plain): NVRTC compiles it for sm_80, sm_89 and sm_90 in its
 * variants (both code widths, both dtypes, both head dims, block_q 128, other
 * block geometry); one thread per query row, no dynamic shared memory. And it
 * stays plain: no tensor-core, ldmatrix or cp.async instruction in the text. */
Test(jit, plain_template_compiles_for_sm80_sm89_sm90)
{
    const char *keys[] = {"plain:d=128,dt=bf16,est=4,arch=sm_80",
                          "plain:d=64,dt=f16,est=8,arch=sm_80",
                          "plain:d=128,dt=f16,est=4,bq=128,arch=sm_89",
                          "plain:d=64,dt=bf16,est=4,bk=16,seg=64,win=64,arch=sm_89",
                          "plain:d=128,dt=bf16,est=8,arch=sm_90",
                          "plain:d=128,dt=f16,est=8,bq=128,bk=64,seg=256,win=256,arch=sm_90"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        sale_key k;
        sale_kernel_info info = compile_text(keys[i], &k);
        cr_assert_gt(info.cubin_bytes, 1000);
        cr_assert_gt(info.registers, 0, "ptxas resources not parsed for %s", info.key);
        cr_assert_str_eq(info.entry, "sale_plain_kernel");
        cr_assert_eq(info.threads, k.block_q ? k.block_q : 64, "%s: one thread per query row", info.key);
        cr_assert_eq(info.smem_dynamic, 0);
        cr_assert(strncmp(info.key, "plain:", 6) == 0, "%s", info.key);
    }
    const tpl_file *t = tpl_find("plain.cu");
    cr_assert_not_null(t);
    cr_assert_str_eq(tpl_family_file(SALE_FAMILY_PLAIN), "plain.cu");
    const char *tricks[] = {"mma.sync", "wgmma", "ldmatrix", "cp.async", "sale_common.cuh"};
    for (size_t i = 0; i < sizeof tricks / sizeof tricks[0]; i++)
        cr_assert(strstr(t->text, tricks[i]) == NULL, "plain.cu mentions %s: version 0 has no tricks", tricks[i]);
}


/* On sm_90a the select with thr=fixed is the wgmma estimation (warps 20 by
 * default, or 12; stages 2..7, the ring's barriers in 128 B): two kernels in one cubin, the estimation its
 * named entry with the key's threads, no spills (ptxas: a spill in the wgmma loop serialises it); with thr=run the
 * same key is the mma.sync select. */
Test(jit, sm90a_thr_fixed_select_is_the_wgmma_estimation_without_spills)
{
    const char *keys[] = {"select:d=128,dt=bf16,thr=fixed,arch=sm_90a", "select:d=128,dt=f16,thr=fixed,warps=12,arch=sm_90a",
                          "select:d=128,dt=bf16,thr=fixed,warps=20,stages=2,arch=sm_90a",
                          "select:d=128,dt=bf16,thr=fixed,warps=20,stages=7,arch=sm_90a"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        sale_key k;
        sale_kernel_info info = compile_text(keys[i], &k);
        cr_assert_str_eq(info.entry, "sale_select_wgmma_kernel");
        const int warps = strstr(info.key, "warps=12") ? 12 : 20;
        cr_assert(warps == 12 || strstr(info.key, "warps=20") != NULL, "%s", info.key);
        cr_assert_eq(info.threads, warps * 32, "%s: %d threads", info.key, info.threads);
        cr_assert_eq(info.spill_stores + info.spill_loads, 0, "%s spills %d/%d bytes", info.key, info.spill_stores,
                     info.spill_loads);
        cr_assert(strstr(info.key, "thr=fixed") != NULL, "%s", info.key);
    }
    sale_key k;
    sale_kernel_info info = compile_text("select:d=128,dt=bf16,thr=run,arch=sm_90a", &k);
    cr_assert_str_eq(info.entry, "sale_select_kernel", "thr=run keeps the mma.sync select");
}

/* ptxas says "Potential Performance Loss: wgmma.mma_async instructions are
 * serialized ..." (C7510-C7519) when a kernel reads or writes a wgmma's
 * registers while it may be in flight, or runs short of registers for the
 * pipeline: the kernel then waits after every wgmma and loses much of its
 * speed, with correct results and no other sign. Every sm_90a kernel the
 * default fleet builds (and the tuner's other attend ring depth) must compile
 * without it; the runtime also logs it as a warning (ctx.c), for tiles a
 * caller or the tuner picks. */
static const char *const sm90a_keys[] = {
    "dense:d=128,dt=bf16,arch=sm_90a",
    "dense:d=128,dt=f16,arch=sm_90a",
    "attend:d=128,dt=bf16,warps=5,stages=3,arch=sm_90a",
    "attend:d=128,dt=f16,warps=5,stages=2,arch=sm_90a",
    "attend:d=128,dt=bf16,warps=12,stages=3,arch=sm_90a",
    "attend:d=128,dt=f16,warps=12,stages=2,arch=sm_90a",
    "select:d=128,dt=bf16,est=8,thr=fixed,arch=sm_90a",
    "select:d=128,dt=f16,est=8,thr=fixed,warps=12,arch=sm_90a",
    "fused:d=128,dt=bf16,est=8,thr=fixed,warps=4,arch=sm_90a",
};

/* compile a key's text straight through NVRTC (no cache) for the arch it resolves to */
static jit_result compile_raw(const char *text, sale_key *k)
{
    char err[256];
    cr_assert_eq(sale_key_parse(text, k, err, sizeof err), SALE_OK, "%s: %s", text, err);
    cr_assert_eq(sale_key_resolve(k, err, sizeof err), SALE_OK, "%s: %s", text, err);
    char *src = jit_build_source(k);
    cr_assert_not_null(src, "%s: no source", text);
    jit_result r;
    char *msg = NULL;
    sale_status st = jit_compile(tpl_family_file(k->family), src, k->arch, NULL, &r, &msg);
    free(src);
    cr_assert_eq(st, SALE_OK, "%s: %s", text, msg ? msg : "");
    free(msg);
    return r;
}

Test(jit, sm90a_kernels_compile_without_serialised_wgmma)
{
    for (size_t i = 0; i < sizeof sm90a_keys / sizeof sm90a_keys[0]; i++) {
        sale_key k;
        jit_result r = compile_raw(sm90a_keys[i], &k);
        cr_assert_eq(k.arch, SALE_ARCH_SM90A, "%s resolves to another arch", sm90a_keys[i]);
        const char *loss = r.log ? strstr(r.log, "Potential Performance Loss") : NULL;
        char line[400] = "";
        if (loss)
            snprintf(line, sizeof line, "%.399s", loss);
        jit_result_free(&r);
        cr_assert_null(loss, "%s: ptxas: %s", sm90a_keys[i], line);
    }
}

/* cuobjdump (with nvdisasm beside it, which it runs): $SALE_CUOBJDUMP, else the
 * toolkit's, else the pip wheels scripts/setup-python.sh puts into .venv
 * (nvidia-cuda-cuobjdump, nvidia-cuda-nvdisasm). NULL when there is none. */
static const char *find_cuobjdump(char *buf, size_t n)
{
    const char *env = getenv("SALE_CUOBJDUMP");
    if (env && *env) {
        snprintf(buf, n, "%s", env);
        return access(buf, X_OK) == 0 ? buf : NULL;
    }
    snprintf(buf, n, "%s/bin/nvdisasm", SALE_CUDA_ROOT);
    if (access(buf, X_OK) == 0) {
        snprintf(buf, n, "%s/bin/cuobjdump", SALE_CUDA_ROOT);
        if (access(buf, X_OK) == 0)
            return buf;
    }
    glob_t g;
    const char *found = NULL;
    if (glob(SALE_SOURCE_DIR "/.venv/lib/python3*/site-packages/nvidia/cu*/bin/nvdisasm", 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc && !found; i++) {
            snprintf(buf, n, "%s", g.gl_pathv[i]);
            char *slash = strrchr(buf, '/');
            snprintf(slash + 1, n - (size_t)(slash + 1 - buf), "cuobjdump");
            if (access(buf, X_OK) == 0)
                found = buf;
        }
        globfree(&g);
    }
    return found;
}

/* The opcode counts of a cubin's SASS: ops[i] counted into counts[i] by its
 * base name (HGMMA.64x128x16.F32.BF16 counts as HGMMA; a predicate such as
 * "@!P0" is skipped). Returns the number of instructions, or -1 with why. */
static long sass_counts(const char *tool, const jit_result *r, const char *const *ops, long *counts, int nops,
                        char *why, size_t whylen)
{
    char path[300], cmd[4096];
    snprintf(path, sizeof path, "%.250s/sass_XXXXXX", tmpdir);
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, r->cubin, r->cubin_bytes) != (ssize_t)r->cubin_bytes) {
        snprintf(why, whylen, "cannot write %s", path);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", tool);
    *strrchr(dir, '/') = 0;
    snprintf(cmd, sizeof cmd, "NVDISASM_PATH='%s' PATH='%s':\"$PATH\" '%s' -sass '%s' 2>&1", dir, dir, tool, path);
    FILE *p = popen(cmd, "r");
    if (!p) {
        snprintf(why, whylen, "cannot run %.300s", tool);
        return -1;
    }
    long total = 0;
    char line[1024], first[256] = "";
    for (int i = 0; i < nops; i++)
        counts[i] = 0;
    while (fgets(line, sizeof line, p)) {
        if (!first[0])
            snprintf(first, sizeof first, "%.255s", line);
        /* an instruction line: spaces, the address comment, spaces, [predicate] OPCODE[.MODS] ... */
        const char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (strncmp(s, "/*", 2) != 0)
            continue;
        const char *e = strstr(s, "*/");
        if (!e || e - s != 6)
            continue;
        s = e + 2;
        while (*s == ' ')
            s++;
        if (*s == '@') {
            while (*s && *s != ' ')
                s++;
            while (*s == ' ')
                s++;
        }
        size_t len = strcspn(s, ". ;");
        if (len == 0 || s[0] < 'A' || s[0] > 'Z')
            continue;
        total++;
        for (int i = 0; i < nops; i++)
            if (strlen(ops[i]) == len && strncmp(s, ops[i], len) == 0)
                counts[i]++;
    }
    int rc = pclose(p);
    unlink(path);
    if (rc != 0 || total == 0) {
        snprintf(why, whylen, "%s -sass exited %d with %ld instructions: %s", tool, rc, total, first);
        return -1;
    }
    return total;
}

/* The check that the sm_90a kernels are the Hopper ones, read from
 * their SASS (cuobjdump + nvdisasm; no GPU needed): the attention kernels'
 * GEMMs are HGMMA (dense, attend and fused on wgmma), the estimation's are
 * IGMMA (select, int8), K/V and the K codes arrive by TMA (UTMALDG) where the
 * design says so (dense, attend, select; fused loads with cp.async), and no
 * kernel touches local memory (LDL/STL: a spill, or an array ptxas could not
 * keep in registers). Skips, visibly, without cuobjdump. */
Test(jit, sm90a_kernels_run_on_wgmma_and_tma_in_their_sass)
{
    char buf[1024];
    const char *tool = find_cuobjdump(buf, sizeof buf);
    if (!tool) {
        cr_skip_test("no cuobjdump + nvdisasm ($SALE_CUOBJDUMP, %s/bin, or .venv's nvidia-cuda-cuobjdump and "
                     "nvidia-cuda-nvdisasm from scripts/setup-python.sh): the SASS is not checked",
                     SALE_CUDA_ROOT);
    }
    static const char *const ops[] = {"HGMMA", "IGMMA", "UTMALDG", "LDL", "STL", "HMMA"};
    enum { HGMMA, IGMMA, UTMALDG, LDL, STL, HMMA, NOPS };
    for (size_t i = 0; i < sizeof sm90a_keys / sizeof sm90a_keys[0]; i++) {
        sale_key k;
        jit_result r = compile_raw(sm90a_keys[i], &k);
        long c[NOPS];
        char why[512];
        long total = sass_counts(tool, &r, ops, c, NOPS, why, sizeof why);
        jit_result_free(&r);
        cr_assert_gt(total, 0, "%s: %s", sm90a_keys[i], why);
        const char *key = sm90a_keys[i];
        int is_select = k.family == SALE_FAMILY_SELECT, is_fused = k.family == SALE_FAMILY_FUSED;
        if (is_select) {
            cr_expect_gt(c[IGMMA], 0, "%s: no IGMMA in %ld instructions: the estimation is not on wgmma", key, total);
        } else {
            cr_expect_gt(c[HGMMA], 0, "%s: no HGMMA in %ld instructions: the attention is not on wgmma", key, total);
            cr_expect_eq(c[HMMA], 0, "%s: %ld HMMA (mma.sync) beside the wgmma attention", key, c[HMMA]);
        }
        if (!is_fused)
            cr_expect_gt(c[UTMALDG], 0, "%s: no TMA load (UTMALDG)", key);
        cr_expect_eq(c[LDL] + c[STL], 0, "%s: %ld LDL + %ld STL: local memory in a wgmma kernel", key, c[LDL], c[STL]);
    }
    /* and the check can fail: an sm_80 kernel has none of them */
    sale_key k;
    jit_result r = compile_raw("attend:d=128,dt=bf16,arch=sm_80", &k);
    long c[NOPS];
    char why[512];
    long total = sass_counts(tool, &r, ops, c, NOPS, why, sizeof why);
    jit_result_free(&r);
    cr_assert_gt(total, 0, "sm_80 attend: %s", why);
    cr_assert_eq(c[HGMMA] + c[IGMMA] + c[UTMALDG], 0, "sm_80 attend: GMMA or TMA counted where there is none");
    cr_assert_gt(c[HMMA], 0, "sm_80 attend: its mma.sync (HMMA) not counted: the SASS reader is broken");
}
