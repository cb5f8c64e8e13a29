/* jit.c — NVRTC to cubin for one exact architecture: the source (prelude +
 * template) with the embedded headers, the compile log kept, ptxas resource
 * usage parsed, and the hash of everything that changes the code. */
#include <elf.h>
#include <nvrtc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

int jit_nvrtc_version(void)
{
    int maj = 0, min = 0;
    if (nvrtcVersion(&maj, &min) != NVRTC_SUCCESS)
        return 0;
    return maj * 1000 + min * 10;
}

sale_status sale_nvrtc_version(int *version)
{
    if (!version)
        return SALE_ERR_INVALID;
    *version = jit_nvrtc_version();
    return *version ? SALE_OK : SALE_ERR_COMPILE;
}

static const char *arch_option(int arch)
{
    switch (arch) {
    case 80: return "--gpu-architecture=sm_80";
    case 86: return "--gpu-architecture=sm_86";
    case 89: return "--gpu-architecture=sm_89";
    case 90: return "--gpu-architecture=sm_90";
    case SALE_ARCH_SM90A: return "--gpu-architecture=sm_90a";
    }
    return NULL;
}

/* Options shared by every compile; changing them changes every hash. */
static const char *const base_opts[] = {"-std=c++17", "-Xptxas=-v", "--fmad=true", "-DSALE_NVRTC=1"};
#define NBASE (int)(sizeof base_opts / sizeof base_opts[0])

void jit_options_string(int arch, char *buf, size_t len)
{
    size_t pos = 0;
    const char *a = arch_option(arch);
    pos += (size_t)snprintf(buf, len, "%s", a ? a : "?");
    for (int i = 0; i < NBASE && pos < len; i++)
        pos += (size_t)snprintf(buf + pos, len - pos, " %s", base_opts[i]);
}

char *jit_build_source(const sale_key *key)
{
    const tpl_file *t = tpl_find(tpl_family_file(key->family));
    if (!t)
        return NULL;
    char pre[2048];
    int n = tpl_prelude(key, pre, sizeof pre);
    if (n < 0)
        return NULL;
    char *src = malloc((size_t)n + t->len + 1);
    if (!src)
        return NULL;
    memcpy(src, pre, (size_t)n);
    memcpy(src + n, t->text, t->len + 1);
    return src;
}

uint64_t jit_source_hash(const sale_key *key, const char *source)
{
    uint64_t h = DB_FNV_SEED;
    h = db_fnv1a64(source, strlen(source), h);
    /* every header a template may include: editing one misses the cache */
    for (int i = 0; i < tpl_count(); i++) {
        const tpl_file *t = tpl_at(i);
        size_t nl = strlen(t->name);
        if (nl > 3 && !strcmp(t->name + nl - 3, ".cu"))
            continue;
        h = db_fnv1a64(t->name, nl, h);
        h = db_fnv1a64(t->text, t->len, h);
    }
    char opts[512];
    jit_options_string(key->arch, opts, sizeof opts);
    h = db_fnv1a64(opts, strlen(opts), h);
    char ver[64];
    snprintf(ver, sizeof ver, "nvrtc=%d lib=%s", jit_nvrtc_version(), SALE_VERSION_STRING);
    h = db_fnv1a64(ver, strlen(ver), h);
    return h;
}

/* ptxas -v prints, per entry: "Compiling entry function 'NAME' for 'sm_90'",
 * "N bytes stack frame, S bytes spill stores, L bytes spill loads" and
 * "Used R registers, ... M bytes smem". Keep the worst of every entry: the
 * module is one unit for the cache and the tuner's pruning. */
void jit_parse_resources(const char *log, jit_result *r)
{
    r->registers = r->smem_static = r->spill_stores = r->spill_loads = r->stack = 0;
    for (const char *p = log; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t n = eol ? (size_t)(eol - p) : strlen(p);
        char line[512];
        if (n >= sizeof line)
            n = sizeof line - 1;
        memcpy(line, p, n);
        line[n] = 0;
        int a, b, c;
        const char *s;
        if ((s = strstr(line, "bytes stack frame")) && sscanf(line, "ptxas . %d bytes stack frame, %d bytes spill stores, %d bytes spill loads", &a, &b, &c) == 3) {
            if (a > r->stack) r->stack = a;
            if (b > r->spill_stores) r->spill_stores = b;
            if (c > r->spill_loads) r->spill_loads = c;
        }
        if ((s = strstr(line, "Used ")) && sscanf(s, "Used %d registers", &a) == 1 && a > r->registers)
            r->registers = a;
        if ((s = strstr(line, " bytes smem"))) {
            const char *q = s;
            while (q > line && q[-1] >= '0' && q[-1] <= '9')
                q--;
            if (sscanf(q, "%d", &a) == 1 && a > r->smem_static)
                r->smem_static = a;
        }
        p = eol ? eol + 1 : NULL;
    }
}

/* NVRTC (12.9+) may serve a compile from its own cache without running
 * ptxas, and then the log has no resource lines. The cubin itself carries
 * them: .nv.info holds EIATTR_REGCOUNT (0x2f) and EIATTR_FRAME_SIZE (0x11)
 * per function (4-byte header, then symbol index and value), and
 * .nv.shared.<function> is sized to the static shared memory. Spill counts
 * are only in the log. Returns 0, or -1 if this is not a cubin we can read. */
int jit_parse_cubin(const unsigned char *c, size_t n, jit_result *r)
{
    if (n < sizeof(Elf64_Ehdr) || memcmp(c, ELFMAG, SELFMAG) || c[EI_CLASS] != ELFCLASS64)
        return -1;
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)c;
    if (eh->e_shoff > n || eh->e_shnum > (n - eh->e_shoff) / sizeof(Elf64_Shdr) || eh->e_shstrndx >= eh->e_shnum)
        return -1;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(c + eh->e_shoff);
    const Elf64_Shdr *names = &sh[eh->e_shstrndx];
    if (names->sh_offset > n || names->sh_size > n - names->sh_offset)
        return -1;
    for (int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_name >= names->sh_size || sh[i].sh_offset > n || sh[i].sh_size > n - sh[i].sh_offset)
            continue;
        const char *name = (const char *)c + names->sh_offset + sh[i].sh_name;
        if (!memchr(name, 0, names->sh_size - sh[i].sh_name))
            continue;
        if (!strncmp(name, ".nv.shared.", 11) && strncmp(name, ".nv.shared.reserved", 19)) {
            if ((int)sh[i].sh_size > r->smem_static)
                r->smem_static = (int)sh[i].sh_size;
        } else if (!strcmp(name, ".nv.info")) {
            const unsigned char *q = c + sh[i].sh_offset, *e = q + sh[i].sh_size;
            while (q + 4 <= e) {
                unsigned fmt = q[0], attr = q[1], size = fmt == 4 ? (unsigned)(q[2] | q[3] << 8) : 0;
                if (q + 4 + size > e)
                    break;
                if (fmt == 4 && size >= 8) {
                    uint32_t v;
                    memcpy(&v, q + 8, 4);
                    if (attr == 0x2f && (int)v > r->registers)
                        r->registers = (int)v;
                    if (attr == 0x11 && (int)v > r->stack)
                        r->stack = (int)v;
                }
                q += 4 + size;
            }
        }
    }
    return 0;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static char *fmt_error(const char *what, nvrtcResult r, const char *log)
{
    const char *rs = nvrtcGetErrorString(r);
    size_t n = strlen(what) + strlen(rs) + (log ? strlen(log) : 0) + 64;
    char *m = malloc(n);
    if (m)
        snprintf(m, n, "%s: %s%s%s", what, rs, log && *log ? "\n" : "", log ? log : "");
    return m;
}

sale_status jit_compile(const char *name, const char *source, int arch, char *const *opts_extra, jit_result *out,
                        char **errmsg)
{
    memset(out, 0, sizeof *out);
    *errmsg = NULL;
    const char *aopt = arch_option(arch);
    if (!aopt) {
        *errmsg = xstrdup("jit: unknown architecture");
        return SALE_ERR_INVALID;
    }
    int nh = 0;
    const char *hsrc[32], *hname[32];
    for (int i = 0; i < tpl_count() && nh < 32; i++) {
        const tpl_file *t = tpl_at(i);
        size_t nl = strlen(t->name);
        if (nl > 3 && !strcmp(t->name + nl - 3, ".cu"))
            continue;
        hsrc[nh] = t->text;
        hname[nh++] = t->name;
    }
    const char *opts[16];
    int no = 0;
    opts[no++] = aopt;
    for (int i = 0; i < NBASE; i++)
        opts[no++] = base_opts[i];
    for (int i = 0; opts_extra && opts_extra[i] && no < 16; i++)
        opts[no++] = opts_extra[i];

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    nvrtcProgram prog;
    nvrtcResult r = nvrtcCreateProgram(&prog, source, name, nh, hsrc, hname);
    if (r != NVRTC_SUCCESS) {
        *errmsg = fmt_error("nvrtcCreateProgram", r, NULL);
        return SALE_ERR_COMPILE;
    }
    sale_status st = SALE_OK;
    r = nvrtcCompileProgram(prog, no, opts);
    size_t loglen = 0;
    char *log = NULL;
    if (nvrtcGetProgramLogSize(prog, &loglen) == NVRTC_SUCCESS && (log = malloc(loglen + 1))) {
        if (nvrtcGetProgramLog(prog, log) != NVRTC_SUCCESS)
            log[0] = 0;
        log[loglen] = 0;
    }
    if (r != NVRTC_SUCCESS) {
        *errmsg = fmt_error("NVRTC compile failed", r, log);
        free(log);
        st = SALE_ERR_COMPILE;
        goto out;
    }
    size_t n = 0;
    r = nvrtcGetCUBINSize(prog, &n);
    if (r != NVRTC_SUCCESS || n == 0) {
        *errmsg = fmt_error("nvrtcGetCUBINSize", r, log);
        free(log);
        st = SALE_ERR_COMPILE;
        goto out;
    }
    out->cubin = malloc(n);
    if (!out->cubin) {
        free(log);
        st = SALE_ERR_NOMEM;
        *errmsg = xstrdup("out of memory for the cubin");
        goto out;
    }
    r = nvrtcGetCUBIN(prog, (char *)out->cubin);
    if (r != NVRTC_SUCCESS) {
        *errmsg = fmt_error("nvrtcGetCUBIN", r, log);
        free(log);
        free(out->cubin);
        out->cubin = NULL;
        st = SALE_ERR_COMPILE;
        goto out;
    }
    out->cubin_bytes = n;
    out->log = log;
    jit_parse_resources(log, out);
    if (!out->registers) /* a log without ptxas lines: read the cubin */
        jit_parse_cubin(out->cubin, n, out);
out:
    nvrtcDestroyProgram(&prog);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    out->compile_ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    return st;
}

void jit_result_free(jit_result *r)
{
    free(r->cubin);
    free(r->log);
    memset(r, 0, sizeof *r);
}
