/* key.c — kernel keys: defaults, validation with messages that name the
 * field and the rule, the canonical text form, its parser and hash. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "sale_layout.h"

static const char *const family_names[SALE_FAMILY_COUNT] = {"quantize", "fused", "select", "attend", "dense",
                                                                    "plain"};

const char *sale_family_name(sale_family f)
{
    return (unsigned)f < SALE_FAMILY_COUNT ? family_names[f] : NULL;
}

const char *sale_dtype_name(sale_dtype d)
{
    switch (d) {
    case SALE_DTYPE_F16: return "f16";
    case SALE_DTYPE_BF16: return "bf16";
    case SALE_DTYPE_F32: return "f32";
    }
    return NULL;
}

const char *sale_arch_name(int arch)
{
    switch (arch) {
    case SALE_ARCH_CURRENT: return "current";
    case 80: return "sm_80";
    case 86: return "sm_86";
    case 89: return "sm_89";
    case 90: return "sm_90";
    case SALE_ARCH_SM90A: return "sm_90a";
    }
    return NULL;
}

int sale_arch_parse(const char *t)
{
    if (!t)
        return -1;
    if (!strcmp(t, "current"))
        return SALE_ARCH_CURRENT;
    if (!strncmp(t, "sm_", 3))
        t += 3;
    if (!strcmp(t, "80")) return 80;
    if (!strcmp(t, "86")) return 86;
    if (!strcmp(t, "89")) return 89;
    if (!strcmp(t, "90")) return 90;
    if (!strcmp(t, "90a")) return SALE_ARCH_SM90A;
    return -1;
}

const char *sale_thr_name(int thr)
{
    switch (thr) {
    case SALE_THR_OPEN: return "*";
    case SALE_THR_RUN: return "run";
    case SALE_THR_FIXED: return "fixed";
    }
    return NULL;
}

int sale_thr_parse(const char *t)
{
    if (!t)
        return -1;
    if (!strcmp(t, "run"))
        return SALE_THR_RUN;
    if (!strcmp(t, "fixed"))
        return SALE_THR_FIXED;
    return -1;
}

int key_default_est_bits(int arch)
{
    return (arch == 90 || arch == SALE_ARCH_SM90A) ? 8 : 4;
}

/* Which fields change a family's code: the others are not part of its
 * canonical form (sale_key_format writes a field iff this says 1), so
 * prewarming over them does not multiply cubins. Plain
 * (version 0) reads every algorithm field: the block geometry (bq, bk, seg,
 * win), the code format (est) and the threshold variant (thr); its tiles are
 * fixed (warps = bq/32, stages = 1). */
int key_family_uses(sale_family f, const char *field)
{
    if (!strcmp(field, "bq"))
        return f != SALE_FAMILY_QUANTIZE;
    if (!strcmp(field, "bk"))
        return f != SALE_FAMILY_DENSE;
    if (!strcmp(field, "seg") || !strcmp(field, "win") || !strcmp(field, "thr"))
        return f == SALE_FAMILY_FUSED || f == SALE_FAMILY_SELECT || f == SALE_FAMILY_PLAIN;
    /* qg: the quantization granularity, written beside est (the codes') */
    if (!strcmp(field, "est") || !strcmp(field, "qg"))
        return f == SALE_FAMILY_FUSED || f == SALE_FAMILY_SELECT || f == SALE_FAMILY_QUANTIZE ||
               f == SALE_FAMILY_PLAIN;
    /* quantize codes every key, whatever the mask */
    if (!strcmp(field, "causal"))
        return f != SALE_FAMILY_QUANTIZE;
    return 1;
}

/* The key text's fields: short name (as written), long name (also read). */
static const char *const key_fields[][2] = {{"d", "head_dim"}, {"bq", "block_q"}, {"bk", "block_k"},
                                            {"seg", "block_seg"}, {"win", "local_window"}, {"est", "est_bits"},
                                            {"warps", "warps"}, {"stages", "stages"}, {"dt", "dtype"},
                                            {"causal", "causal"}, {"arch", "arch"}, {"qg", "qg"},
                                            {"thr", "threshold"}};

int sale_key_family_uses(sale_family f, const char *field)
{
    if (!field)
        return 0;
    for (size_t i = 0; i < sizeof key_fields / sizeof key_fields[0]; i++)
        if (!strcmp(field, key_fields[i][1]))
            field = key_fields[i][0];
    return key_family_uses(f, field);
}

sale_key sale_key_default(sale_family family)
{
    sale_key k;
    memset(&k, 0, sizeof k);
    k.family = family;
    k.dtype = (sale_dtype)-1; /* open */
    k.causal = -1;            /* open */
    return k;
}

#define ERR(...)                                                                                                      \
    do {                                                                                                              \
        if (err && errlen)                                                                                            \
            snprintf(err, errlen, __VA_ARGS__);                                                                       \
        return SALE_ERR_INVALID;                                                                                      \
    } while (0)

sale_status sale_key_validate(const sale_key *k, char *err, size_t errlen)
{
    if (!k)
        ERR("key: NULL");
    if ((unsigned)k->family >= SALE_FAMILY_COUNT)
        ERR("family: unknown family %d (quantize, fused, select, attend, dense, plain)", (int)k->family);
    if (k->head_dim == 256)
        ERR("head_dim: 256 is refused: its K/V tiles do not fit the shared memory of one SM with these kernels "
            "(supported: 64, 128)");
    if (k->head_dim && k->head_dim != 64 && k->head_dim != 128)
        ERR("head_dim: must be 64 or 128, got %d", k->head_dim);
    if (k->block_q && k->block_q != 64 && k->block_q != 128)
        ERR("block_q: must be 64 or 128, got %d", k->block_q);
    /* the kernels' tiles take these three (sale_layout_legal); 48 passed a
     * "multiple of 16 up to 64" rule here and failed later, as a block_seg of
     * 128 that is not a multiple of it */
    if (k->block_k && k->block_k != 16 && k->block_k != 32 && k->block_k != 64)
        ERR("block_k: must be 16, 32 or 64, got %d", k->block_k);
    if (k->block_seg) {
        int bk = k->block_k ? k->block_k : 32;
        /* negative: -32 % 32 is 0 and -32 / 32 passes the bound below */
        if (k->block_seg < 0 || k->block_seg % bk)
            ERR("block_seg: must be a positive multiple of block_k (%d), got %d", bk, k->block_seg);
        if (k->block_seg / bk > 32)
            ERR("block_seg: at most 32 blocks of block_k per segment, got %d/%d = %d", k->block_seg, bk,
                k->block_seg / bk);
    }
    if (k->local_window < 0 || k->local_window > (1 << 20))
        ERR("local_window: must be between 0 and 1048576, got %d", k->local_window);
    if (k->local_window) {
        int bk = k->block_k ? k->block_k : 32;
        if (k->local_window % bk)
            ERR("local_window: must be a multiple of block_k (%d), got %d", bk, k->local_window);
    }
    if ((int)k->dtype != -1 && k->dtype != SALE_DTYPE_F16 && k->dtype != SALE_DTYPE_BF16)
        ERR("dtype: kernels take f16 or bf16, got %s", sale_dtype_name(k->dtype) ? sale_dtype_name(k->dtype) : "?");
    if (k->est_bits && k->est_bits != 4 && k->est_bits != 8)
        ERR("est_bits: must be 4 or 8, got %d", k->est_bits);
    if (k->est_bits == 4 && (k->arch == 90 || k->arch == SALE_ARCH_SM90A) && key_family_uses(k->family, "est"))
        ERR("est_bits: 4-bit estimation is refused on %s: Hopper has no int4 tensor cores (mma.s4 is emulated, "
            "~52 TOPS against ~1270 for int8); use est=8",
            sale_arch_name(k->arch));
    if (k->causal != -1 && k->causal != 1)
        ERR("causal: only causal prefill is implemented (causal=1), got %d", k->causal);
    if (k->warps && (k->warps < 1 || k->warps > 20))
        ERR("warps: must be between 1 and 20, got %d", k->warps);
    if (k->stages && (k->stages < 1 || k->stages > 7))
        ERR("stages: must be between 1 and 7, got %d", k->stages);
    if (k->arch != SALE_ARCH_CURRENT && !sale_arch_name(k->arch))
        ERR("arch: unknown architecture %d (sm_80, sm_86, sm_89, sm_90, sm_90a)", k->arch);
    if (!thr_known(k->thr))
        ERR("thr: unknown threshold variant %d (run, fixed)", k->thr);
    /* Tile rules that depend on the template's layout. */
    if (k->warps && k->stages && k->head_dim && k->block_q && k->block_k && k->block_seg) {
        sale_layout_cfg c = key_layout(k);
        c.dtype = (int)k->dtype == -1 ? 1 : c.dtype;
        c.est_bits = k->est_bits ? k->est_bits : 8;
        c.arch = k->arch ? k->arch : 90;
        c.thr = k->thr ? k->thr : SALE_THR_RUN;
        char why[256] = "";
        /* arch open (the current device, not known yet): legal on sm_90 or,
         * for the wgmma tiles, on sm_90a; checked again once it is known */
        sale_layout_cfg c9a = c;
        c9a.arch = SALE_ARCH_SM90A;
        if (!sale_layout_legal(&c, why, sizeof why) && !(k->arch == SALE_ARCH_CURRENT && sale_layout_legal(&c9a, NULL, 0)))
            ERR("tiles: %s", why);
    }
    return SALE_OK;
}

sale_layout_cfg key_layout(const sale_key *k)
{
    sale_layout_cfg c = {(int)k->family, k->head_dim, k->block_q, k->block_k, k->block_seg, k->local_window,
                         (int)k->dtype,  k->est_bits, k->warps,   k->stages,  k->arch,         k->thr};
    return c;
}

/* Whether k's family has a wgmma kernel on sm_90a for k's algorithm fields
 * (open ones take their defaults), with that kernel's default tiles: the
 * layout rules decide (sale_layout_wgmma, sale_layout_wgmma_select,
 * sale_layout_legal), not a second copy of them. */
static int wgmma_legal(const sale_key *k)
{
    sale_key f = *k;
    f.arch = SALE_ARCH_SM90A;
    key_fill_algorithm(&f);
    sale_layout_cfg c = key_layout(&f);
    sale_layout_default_tiles(c.family, c.head_dim, c.arch, &c.warps, &c.stages);
    if (f.family == SALE_FAMILY_SELECT) {
        c.warps = SALE_SE_DEFAULT_WARPS;
        c.stages = SALE_SE_DEFAULT_STAGES;
    }
    return (sale_layout_wgmma(&c) || sale_layout_wgmma_select(&c) || sale_layout_fused_wg(&c)) &&
           sale_layout_legal(&c, NULL, 0);
}

int sale_key_run_arch(const sale_key *k, int arch)
{
    if (!k || arch != 90)
        return arch;
    /* a select that asks for an mma.sync tile keeps it (dense and attend: sale_attention decides) */
    if (k->family == SALE_FAMILY_SELECT && k->warps && k->warps != SALE_WG_WARPS && k->warps != SALE_SE_DEFAULT_WARPS)
        return arch;
    /* so does a fused that asks for tiles other than the one warpgroup of its wgmma half */
    if (k->family == SALE_FAMILY_FUSED && k->warps && k->warps != 4)
        return arch;
    return wgmma_legal(k) ? SALE_ARCH_SM90A : arch;
}

int sale_key_run_set(const sale_key *key, sale_key out[2], char *err, size_t errlen)
{
    if (!key || !out) {
        if (err && errlen)
            snprintf(err, errlen, "sale_key_run_set: key and out must not be NULL");
        return -1;
    }
    if (key->arch == SALE_ARCH_CURRENT || key->arch == SALE_ARCH_SM90A) {
        if (err && errlen)
            snprintf(err, errlen, "sale_key_run_set: arch: a device's arch (80, 86, 89, 90), got %s",
                      key->arch == SALE_ARCH_CURRENT ? "current" : "sm_90a");
        return -1;
    }
    int n = 0;
    for (int rows = 0; rows < 2; rows++) {
        sale_key k = *key;
        if (k.est_bits == 4 && k.arch == 90)
            k.est_bits = 8;
        k.arch = sale_key_run_arch(&k, k.arch);
        if (rows) {
            /* a caller's warps (the rows kernel's included) is the one kernel that runs */
            if (k.family != SALE_FAMILY_ATTEND || k.arch != SALE_ARCH_SM90A || key->warps)
                break;
            k.warps = SALE_WR_WARPS;
        }
        char e[256] = "";
        if (sale_key_resolve(&k, e, sizeof e) != SALE_OK) {
            if (rows)
                break; /* no rows kernel for these block sizes */
            if (err && errlen)
                snprintf(err, errlen, "%s", e);
            return -1;
        }
        out[n++] = k;
    }
    return n;
}

int sale_attention_arch(sale_family f, int head_dim, int block_q, int block_k, int arch)
{
    if (arch != 90 || (unsigned)f >= SALE_FAMILY_COUNT)
        return arch;
    sale_key k = sale_key_default(f);
    k.head_dim = head_dim;
    k.block_q = block_q;
    k.block_k = block_k;
    return wgmma_legal(&k) ? SALE_ARCH_SM90A : arch;
}

int key_code_arch(int dev_arch)
{
    if (dev_arch == SALE_ARCH_SM90A)
        return SALE_ARCH_SM90A;
    if (dev_arch >= 80 && dev_arch < 86)
        return 80;
    if (dev_arch >= 86 && dev_arch < 89)
        return 86;
    if (dev_arch == 89 || dev_arch == 90)
        return dev_arch;
    return 0;
}

void key_fill_algorithm(sale_key *k)
{
    if (!k->head_dim) k->head_dim = 128;
    if (!k->block_q) k->block_q = 64;
    if (!k->block_k) k->block_k = 32;
    if (!k->block_seg) k->block_seg = 128;
    if (!k->local_window) k->local_window = 128;
    if ((int)k->dtype == -1) k->dtype = SALE_DTYPE_BF16;
    if (!k->est_bits) k->est_bits = key_default_est_bits(k->arch);
    if (k->causal == -1) k->causal = 1;
    if (!k->thr) k->thr = SALE_THR_RUN;
    /* fields the family does not use take fixed values: one cubin per code */
    if (!key_family_uses(k->family, "bq")) k->block_q = 64;
    if (!key_family_uses(k->family, "bk")) k->block_k = 32;
    if (!key_family_uses(k->family, "seg")) k->block_seg = 128;
    if (!key_family_uses(k->family, "win")) k->local_window = 128;
    if (!key_family_uses(k->family, "est")) k->est_bits = 8;
    if (!key_family_uses(k->family, "thr")) k->thr = SALE_THR_RUN;
}

void key_take_tiles(sale_key *k, const sale_key *tuned)
{
    if (!k->warps)
        k->warps = tuned->warps;
    if (!k->stages)
        k->stages = tuned->stages;
}

void key_length_default_warps(sale_key *k, int seq_len)
{
    if (k->warps || seq_len <= 0)
        return;
    sale_layout_cfg rc = key_layout(k);
    if (sale_layout_rows_default(&rc, win_bucket_n(seq_len)))
        k->warps = SALE_WR_WARPS;
}

sale_status sale_key_resolve(sale_key *k, char *err, size_t errlen)
{
    sale_status s = sale_key_validate(k, err, errlen);
    if (s)
        return s;
    if (k->arch == SALE_ARCH_CURRENT)
        ERR("arch: must be resolved to a concrete architecture before compiling");
    key_fill_algorithm(k);
    if (!k->warps || !k->stages) {
        int w = 4, st = 2, open_w = !k->warps, open_s = !k->stages;
        sale_layout_default_tiles((int)k->family, k->head_dim, k->arch, &w, &st);
        if (k->family == SALE_FAMILY_SELECT && k->arch == SALE_ARCH_SM90A && wgmma_legal(k)) {
            /* the wgmma estimation: 4 consumer warpgroups (bench/RESULTS.md, 2026-11-29 third
             * session: 18.5 ms against 25.8 with 2 at 64K) */
            w = SALE_SE_DEFAULT_WARPS;
            st = SALE_SE_DEFAULT_STAGES;
        }
        if (open_w) k->warps = w;
        if (open_s) k->stages = st;
        /* the family's default may not suit these block sizes (e.g. block_q
         * 128 needs 8 warps at head_dim 128): take the first legal choice of
         * the family's space for the fields left open */
        sale_layout_cfg c = key_layout(k);
        if (!sale_layout_legal(&c, NULL, 0)) {
            int ws[16], ss[16], nw = 0, ns = 0;
            sale_layout_space((int)k->family, k->head_dim, k->arch, ws, &nw, ss, &ns);
            for (int i = nw - 1; i >= 0; i--)
                for (int j = 0; j < ns; j++) {
                    c.warps = open_w ? ws[i] : k->warps;
                    c.stages = open_s ? ss[j] : k->stages;
                    if (sale_layout_legal(&c, NULL, 0)) {
                        k->warps = c.warps;
                        k->stages = c.stages;
                        goto found;
                    }
                }
        }
    found:;
    }
    return sale_key_validate(k, err, errlen);
}

static int put(char *buf, size_t len, size_t *pos, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int put(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + (*pos < len ? *pos : len), *pos < len ? len - *pos : 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    *pos += (size_t)n;
    return 0;
}

static void put_int(char *buf, size_t len, size_t *pos, const char *name, int v, int open)
{
    if (open)
        put(buf, len, pos, ",%s=*", name);
    else
        put(buf, len, pos, ",%s=%d", name, v);
}

sale_status sale_key_format(const sale_key *k, char *buf, size_t len)
{
    if (!buf || !len)
        return SALE_ERR_INVALID;
    /* only text sale_key_parse takes back: an invalid key (arch 70, thr 7,
     * dtype f32, seg=-32, causal 0, illegal tiles...) is refused, not written
     * as "arch=?" (two such keys would share a text and a hash) */
    buf[0] = 0;
    if (sale_key_validate(k, NULL, 0) != SALE_OK)
        return SALE_ERR_INVALID;
    size_t pos = 0;
    sale_family f = k->family;
    put(buf, len, &pos, "%s:", family_names[f]);
    if (k->head_dim)
        put(buf, len, &pos, "d=%d", k->head_dim);
    else
        put(buf, len, &pos, "d=*");
    if (key_family_uses(f, "bq")) put_int(buf, len, &pos, "bq", k->block_q, !k->block_q);
    if (key_family_uses(f, "bk")) put_int(buf, len, &pos, "bk", k->block_k, !k->block_k);
    if (key_family_uses(f, "seg")) put_int(buf, len, &pos, "seg", k->block_seg, !k->block_seg);
    if (key_family_uses(f, "win")) put_int(buf, len, &pos, "win", k->local_window, !k->local_window);
    if ((int)k->dtype == -1)
        put(buf, len, &pos, ",dt=*");
    else
        put(buf, len, &pos, ",dt=%s", sale_dtype_name(k->dtype));
    if (key_family_uses(f, "est"))
        put_int(buf, len, &pos, "est", k->est_bits, !k->est_bits);
    /* the quantization granularity is part of the code: query scale per
     * row, key scale per block of block_k keys */
    if (key_family_uses(f, "qg"))
        put(buf, len, &pos, ",qg=row.blk");
    if (key_family_uses(f, "causal"))
        put_int(buf, len, &pos, "causal", k->causal, k->causal == -1);
    put_int(buf, len, &pos, "warps", k->warps, !k->warps);
    put_int(buf, len, &pos, "stages", k->stages, !k->stages);
    put(buf, len, &pos, ",arch=%s", sale_arch_name(k->arch));
    /* last, so that text written before it existed reads as a prefix */
    if (key_family_uses(f, "thr"))
        put(buf, len, &pos, ",thr=%s", sale_thr_name(k->thr));
    return pos < len ? SALE_OK : SALE_ERR_INVALID;
}

static int parse_int(const char *v, int *out)
{
    if (!strcmp(v, "*")) {
        *out = 0;
        return 0;
    }
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < 0 || x > 1 << 24)
        return -1;
    *out = (int)x;
    return 0;
}

sale_status sale_key_parse(const char *text, sale_key *key, char *err, size_t errlen)
{
    if (!text || !key)
        ERR("key: NULL");
    char buf[512];
    if (strlen(text) >= sizeof buf)
        ERR("key: text longer than %zu characters", sizeof buf - 1);
    strcpy(buf, text);
    char *colon = strchr(buf, ':');
    if (colon)
        *colon = 0;
    char *fam = buf;
    while (isspace((unsigned char)*fam))
        fam++;
    int fi = -1;
    for (int i = 0; i < SALE_FAMILY_COUNT; i++)
        if (!strcmp(fam, family_names[i]))
            fi = i;
    if (fi < 0)
        ERR("family: unknown family '%s' (quantize, fused, select, attend, dense, plain)", fam);
    sale_key k = sale_key_default((sale_family)fi);
    char *save = NULL;
    /* each field once: "d=64,d=128" is a mistake, not "the last one wins" */
    unsigned seen = 0;
    for (char *tok = colon ? strtok_r(colon + 1, ", ", &save) : NULL; tok; tok = strtok_r(NULL, ", ", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            ERR("%s: expected field=value", tok);
        *eq = 0;
        const char *name = tok, *v = eq + 1;
        for (unsigned f = 0; f < sizeof key_fields / sizeof key_fields[0]; f++)
            if (!strcmp(name, key_fields[f][0]) || !strcmp(name, key_fields[f][1])) {
                if (seen & (1u << f))
                    ERR("%s: given twice in the key", key_fields[f][1]);
                seen |= 1u << f;
            }
        int *ip = NULL;
        if (!strcmp(name, "d") || !strcmp(name, "head_dim")) ip = &k.head_dim;
        else if (!strcmp(name, "bq") || !strcmp(name, "block_q")) ip = &k.block_q;
        else if (!strcmp(name, "bk") || !strcmp(name, "block_k")) ip = &k.block_k;
        else if (!strcmp(name, "seg") || !strcmp(name, "block_seg")) ip = &k.block_seg;
        else if (!strcmp(name, "win") || !strcmp(name, "local_window")) ip = &k.local_window;
        else if (!strcmp(name, "est") || !strcmp(name, "est_bits")) ip = &k.est_bits;
        else if (!strcmp(name, "warps")) ip = &k.warps;
        else if (!strcmp(name, "stages")) ip = &k.stages;
        if (ip) {
            if (parse_int(v, ip))
                ERR("%s: expected a non-negative integer or *, got '%s'", name, v);
            if (*ip == 0 && strcmp(v, "*"))
                ERR("%s: 0 is not a value; leave the field open with * (or omit it)", name);
        } else if (!strcmp(name, "dt") || !strcmp(name, "dtype")) {
            if (!strcmp(v, "*")) k.dtype = (sale_dtype)-1;
            else if (!strcmp(v, "f16") || !strcmp(v, "fp16")) k.dtype = SALE_DTYPE_F16;
            else if (!strcmp(v, "bf16")) k.dtype = SALE_DTYPE_BF16;
            else ERR("dtype: expected f16 or bf16, got '%s'", v);
        } else if (!strcmp(name, "causal")) {
            if (!strcmp(v, "*")) k.causal = -1;
            else if (parse_int(v, &k.causal)) ERR("causal: expected 1, got '%s'", v);
        } else if (!strcmp(name, "arch")) {
            int a = sale_arch_parse(v);
            if (a < 0)
                ERR("arch: unknown architecture '%s' (sm_80, sm_86, sm_89, sm_90, sm_90a, current)", v);
            k.arch = a;
        } else if (!strcmp(name, "thr") || !strcmp(name, "threshold")) {
            if (!strcmp(v, "*")) {
                k.thr = SALE_THR_OPEN;
            } else {
                int t = sale_thr_parse(v);
                if (t < 0)
                    ERR("thr: unknown threshold variant '%s' (run, fixed, or * for open)", v);
                k.thr = t;
            }
        } else if (!strcmp(name, "qg")) {
            if (strcmp(v, "row.blk"))
                ERR("qg: only quantization granularity row.blk is implemented, got '%s'", v);
        } else {
            ERR("%s: unknown field (d, bq, bk, seg, win, dt, est, causal, warps, stages, arch, thr)", name);
        }
    }
    sale_status s = sale_key_validate(&k, err, errlen);
    if (s)
        return s;
    *key = k;
    return SALE_OK;
}

uint64_t sale_key_hash(const sale_key *key)
{
    char buf[512];
    if (sale_key_format(key, buf, sizeof buf))
        return 0;
    return db_fnv1a64(buf, strlen(buf), DB_FNV_SEED);
}
