/* safetensors.c — the strict safetensors reader/writer of safetensors.h. The
 * JSON header is parsed by a small recursive reader that accepts exactly
 * JSON (objects, arrays, strings, numbers, true/false/null) and keeps only
 * what the format defines: per tensor dtype, shape and data_offsets, and an
 * optional "__metadata__" object that is skipped. */
#include "safetensors.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static void set_err(char *err, size_t n, const char *fmt, ...)
{
    if (!err || !n)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ JSON */

typedef struct jp {
    const char *s;
    size_t n, i;
    const char *path;
    char *err;
    size_t errlen;
    int depth;
} jp;

static int jfail(jp *j, const char *fmt, ...)
{
    char m[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    set_err(j->err, j->errlen, "%s: header: %s (at byte %zu of the JSON header)", j->path, m, j->i);
    return -1;
}

static void jws(jp *j)
{
    while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' || j->s[j->i] == '\r'))
        j->i++;
}

static int jexpect(jp *j, char c)
{
    jws(j);
    if (j->i >= j->n || j->s[j->i] != c)
        return jfail(j, "expected '%c'", c);
    j->i++;
    return 0;
}

static int jpeek(jp *j)
{
    jws(j);
    return j->i < j->n ? (unsigned char)j->s[j->i] : -1;
}

/* A string into out (truncation is an error); out may be NULL (skip). */
static int jstring(jp *j, char *out, size_t outlen)
{
    if (jexpect(j, '"'))
        return -1;
    size_t o = 0;
    for (;;) {
        if (j->i >= j->n)
            return jfail(j, "unterminated string");
        unsigned char c = (unsigned char)j->s[j->i++];
        if (c == '"')
            break;
        if (c < 0x20)
            return jfail(j, "control character in a string");
        unsigned cp = c;
        if (c == '\\') {
            if (j->i >= j->n)
                return jfail(j, "unterminated string");
            char e = j->s[j->i++];
            switch (e) {
            case '"': cp = '"'; break;
            case '\\': cp = '\\'; break;
            case '/': cp = '/'; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'n': cp = '\n'; break;
            case 'r': cp = '\r'; break;
            case 't': cp = '\t'; break;
            case 'u':
                cp = 0;
                for (int k = 0; k < 4; k++, j->i++) {
                    if (j->i >= j->n)
                        return jfail(j, "bad \\u escape");
                    char h = j->s[j->i];
                    cp <<= 4;
                    if (h >= '0' && h <= '9') cp |= (unsigned)(h - '0');
                    else if (h >= 'a' && h <= 'f') cp |= (unsigned)(h - 'a' + 10);
                    else if (h >= 'A' && h <= 'F') cp |= (unsigned)(h - 'A' + 10);
                    else return jfail(j, "bad \\u escape");
                }
                if (cp == 0)
                    return jfail(j, "\\u0000 in a string");
                break;
            default: return jfail(j, "bad escape '\\%c'", e);
            }
        }
        if (!out)
            continue;
        unsigned char enc[4];
        int ne;
        if (c == '\\' && cp >= 0x80) { /* \uXXXX beyond ASCII: UTF-8 (surrogates kept as is) */
            if (cp < 0x800) {
                enc[0] = (unsigned char)(0xC0 | (cp >> 6)), enc[1] = (unsigned char)(0x80 | (cp & 0x3F)), ne = 2;
            } else {
                enc[0] = (unsigned char)(0xE0 | (cp >> 12)), enc[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
                enc[2] = (unsigned char)(0x80 | (cp & 0x3F)), ne = 3;
            }
        } else {
            enc[0] = (unsigned char)cp, ne = 1;
        }
        if (o + (size_t)ne >= outlen)
            return jfail(j, "string longer than %zu bytes", outlen - 1);
        memcpy(out + o, enc, (size_t)ne);
        o += (size_t)ne;
    }
    if (out)
        out[o] = '\0';
    return 0;
}

/* A non-negative integer that fits in 53 bits (what JSON numbers carry exactly). */
static int juint(jp *j, uint64_t *v, const char *what)
{
    jws(j);
    size_t st = j->i;
    uint64_t x = 0;
    while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9') {
        x = x * 10 + (uint64_t)(j->s[j->i] - '0');
        if (x > (1ULL << 53))
            return jfail(j, "%s: integer too large", what);
        j->i++;
    }
    if (j->i == st)
        return jfail(j, "%s: expected a non-negative integer", what);
    if (j->i - st > 1 && j->s[st] == '0')
        return jfail(j, "%s: leading zero", what);
    if (j->i < j->n && (j->s[j->i] == '.' || j->s[j->i] == 'e' || j->s[j->i] == 'E'))
        return jfail(j, "%s: expected an integer", what);
    *v = x;
    return 0;
}

static int jskip(jp *j);

static int jskip_number(jp *j)
{
    size_t st = j->i;
    if (j->i < j->n && j->s[j->i] == '-')
        j->i++;
    size_t d = j->i;
    while (j->i < j->n && strchr("0123456789.eE+-", j->s[j->i]))
        j->i++;
    if (j->i == d || j->i == st)
        return jfail(j, "bad value");
    return 0;
}

static int jskip(jp *j)
{
    int c = jpeek(j);
    if (++j->depth > 64)
        return jfail(j, "nesting too deep");
    int r = 0;
    if (c == '"') {
        r = jstring(j, NULL, 0);
    } else if (c == '{' || c == '[') {
        j->i++;
        char close = c == '{' ? '}' : ']';
        if (jpeek(j) == close) {
            j->i++;
        } else {
            for (;;) {
                if (c == '{' && (jstring(j, NULL, 0) || jexpect(j, ':')))
                    return -1;
                if (jskip(j))
                    return -1;
                int d = jpeek(j);
                j->i++;
                if (d == close)
                    break;
                if (d != ',')
                    return j->i--, jfail(j, "expected ',' or '%c'", close);
            }
        }
    } else if (c >= 0 && strchr("tfn", c)) {
        const char *w = c == 't' ? "true" : c == 'f' ? "false" : "null";
        size_t l = strlen(w);
        if (j->n - j->i < l || memcmp(j->s + j->i, w, l))
            return jfail(j, "bad value");
        j->i += l;
    } else {
        r = jskip_number(j);
    }
    j->depth--;
    return r;
}

static const struct {
    const char *name;
    int bytes, dtype;
} dtypes[] = {{"F32", 4, SALE_DTYPE_F32}, {"F16", 2, SALE_DTYPE_F16}, {"BF16", 2, SALE_DTYPE_BF16},
              {"F64", 8, -1},            {"I64", 8, -1},            {"U64", 8, -1},
              {"I32", 4, -1},            {"U32", 4, -1},            {"I16", 2, -1},
              {"U16", 2, -1},            {"I8", 1, -1},             {"U8", 1, -1},
              {"BOOL", 1, -1},           {"F8_E4M3", 1, -1},        {"F8_E5M2", 1, -1}};

/* One tensor entry: {"dtype": ..., "shape": [...], "data_offsets": [b, e]}. */
static int jtensor(jp *j, st_tensor *t)
{
    int have_dt = 0, have_shape = 0, have_off = 0;
    if (jexpect(j, '{'))
        return -1;
    for (;;) {
        char key[32];
        if (jstring(j, key, sizeof key) || jexpect(j, ':'))
            return -1;
        /* a field given twice is ambiguous (which one did the writer mean?) */
        if ((!strcmp(key, "dtype") && have_dt) || (!strcmp(key, "shape") && have_shape) ||
            (!strcmp(key, "data_offsets") && have_off))
            return jfail(j, "tensor '%s': field '%s' appears twice", t->name, key);
        if (!strcmp(key, "dtype")) {
            if (jstring(j, t->dtype_name, sizeof t->dtype_name))
                return -1;
            have_dt = 1;
        } else if (!strcmp(key, "shape")) {
            if (jexpect(j, '['))
                return -1;
            t->ndim = 0;
            if (jpeek(j) == ']') {
                j->i++;
            } else {
                for (;;) {
                    uint64_t v;
                    if (t->ndim == ST_MAX_DIMS)
                        return jfail(j, "tensor '%s': more than %d dims", t->name, ST_MAX_DIMS);
                    if (juint(j, &v, "shape"))
                        return -1;
                    t->shape[t->ndim++] = (int64_t)v;
                    int d = jpeek(j);
                    j->i++;
                    if (d == ']')
                        break;
                    if (d != ',')
                        return j->i--, jfail(j, "tensor '%s': shape: expected ',' or ']'", t->name);
                }
            }
            have_shape = 1;
        } else if (!strcmp(key, "data_offsets")) {
            if (jexpect(j, '[') || juint(j, &t->begin, "data_offsets") || jexpect(j, ',') ||
                juint(j, &t->end, "data_offsets") || jexpect(j, ']'))
                return -1;
            have_off = 1;
        } else {
            return jfail(j, "tensor '%s': unknown field '%s'", t->name, key);
        }
        int d = jpeek(j);
        j->i++;
        if (d == '}')
            break;
        if (d != ',')
            return j->i--, jfail(j, "tensor '%s': expected ',' or '}'", t->name);
    }
    if (!have_dt || !have_shape || !have_off)
        return jfail(j, "tensor '%s': missing %s", t->name, !have_dt ? "dtype" : !have_shape ? "shape" : "data_offsets");
    t->dtype = -2;
    for (size_t k = 0; k < sizeof dtypes / sizeof dtypes[0]; k++)
        if (!strcmp(dtypes[k].name, t->dtype_name)) {
            t->dtype = dtypes[k].dtype;
            t->elem_bytes = dtypes[k].bytes;
        }
    if (t->dtype == -2)
        return jfail(j, "tensor '%s': unknown dtype '%s'", t->name, t->dtype_name);
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

static int cmp_begin(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

/* Every name once, and no two tensors share a byte (the format's own reader
 * refuses both): q, k and v over one range would be calibrated on, silently. */
static int check_names_and_overlap(st_file *sf, char *err, size_t errlen)
{
    if (sf->n < 2)
        return 0;
    const st_tensor **o = malloc((size_t)sf->n * sizeof *o);
    if (!o)
        return set_err(err, errlen, "%s: out of memory", sf->path), -1;
    for (int k = 0; k < sf->n; k++)
        o[k] = &sf->t[k];
    int ret = 0;
    qsort(o, (size_t)sf->n, sizeof *o, cmp_name);
    for (int k = 1; k < sf->n && !ret; k++)
        if (!strcmp(o[k - 1]->name, o[k]->name))
            ret = -1, set_err(err, errlen, "%s: header: tensor '%s' appears twice", sf->path, o[k]->name);
    qsort(o, (size_t)sf->n, sizeof *o, cmp_begin);
    const st_tensor *last = NULL; /* the non-empty tensor that ends last so far */
    for (int k = 0; k < sf->n && !ret; k++) {
        if (o[k]->begin == o[k]->end)
            continue;
        if (last && o[k]->begin < last->end)
            ret = -1, set_err(err, errlen,
                              "%s: tensors '%s' and '%s' overlap: data_offsets [%llu, %llu] and [%llu, %llu]",
                              sf->path, last->name, o[k]->name, (unsigned long long)last->begin,
                              (unsigned long long)last->end, (unsigned long long)o[k]->begin,
                              (unsigned long long)o[k]->end);
        if (!last || o[k]->end > last->end)
            last = o[k];
    }
    free(o);
    return ret;
}

static int parse_header(st_file *sf, const char *h, size_t n, uint64_t data_bytes, char *err, size_t errlen)
{
    jp j = {.s = h, .n = n, .path = sf->path, .err = err, .errlen = errlen};
    int cap = 0, have_meta = 0;
    if (jexpect(&j, '{'))
        return -1;
    if (jpeek(&j) == '}') {
        j.i++;
    } else {
        for (;;) {
            char name[128];
            if (jstring(&j, name, sizeof name) || jexpect(&j, ':'))
                return -1;
            if (!strcmp(name, "__metadata__")) {
                if (have_meta++)
                    return jfail(&j, "__metadata__ appears twice");
                if (jpeek(&j) != '{')
                    return jfail(&j, "__metadata__ must be an object");
                if (jskip(&j))
                    return -1;
            } else {
                /* names seen twice are found after the parse, sorted (a pairwise
                 * search here took hours on a header of a million tensors) */
                if (sf->n == cap) {
                    cap = cap ? cap * 2 : 8;
                    st_tensor *nt = realloc(sf->t, (size_t)cap * sizeof *nt);
                    if (!nt)
                        return set_err(err, errlen, "%s: out of memory", sf->path), -1;
                    sf->t = nt;
                }
                st_tensor *t = &sf->t[sf->n++];
                memset(t, 0, sizeof *t);
                strcpy(t->name, name);
                if (jtensor(&j, t))
                    return -1;
            }
            int d = jpeek(&j);
            j.i++;
            if (d == '}')
                break;
            if (d != ',')
                return j.i--, jfail(&j, "expected ',' or '}'");
        }
    }
    jws(&j);
    if (j.i != n)
        return jfail(&j, "trailing bytes after the JSON object");
    for (int k = 0; k < sf->n; k++) {
        st_tensor *t = &sf->t[k];
        uint64_t elems = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] && elems > UINT64_MAX / 16 / (uint64_t)t->shape[d])
                return set_err(err, errlen, "%s: tensor '%s': shape too large", sf->path, t->name), -1;
            elems *= (uint64_t)t->shape[d];
        }
        if (t->begin > t->end || t->end > data_bytes)
            return set_err(err, errlen,
                           "%s: tensor '%s': data_offsets [%llu, %llu] outside the %llu data bytes of the file "
                           "(truncated?)",
                           sf->path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                           (unsigned long long)data_bytes),
                   -1;
        if (elems * (uint64_t)t->elem_bytes != t->end - t->begin)
            return set_err(err, errlen, "%s: tensor '%s': shape has %llu elements of %s (%llu bytes) but data_offsets "
                                        "span %llu bytes",
                           sf->path, t->name, (unsigned long long)elems, t->dtype_name,
                           (unsigned long long)(elems * (uint64_t)t->elem_bytes),
                           (unsigned long long)(t->end - t->begin)),
                   -1;
    }
    return check_names_and_overlap(sf, err, errlen);
}

/* ------------------------------------------------------------ reader */

int st_open(st_file *sf, const char *path, char *err, size_t errlen)
{
    memset(sf, 0, sizeof *sf);
    snprintf(sf->path, sizeof sf->path, "%s", path);
    char *h = NULL;
    unsigned char len8[8];
    struct stat st;
    sf->f = fopen(path, "rb");
    if (!sf->f) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fileno(sf->f), &st) != 0 || !S_ISREG(st.st_mode)) {
        set_err(err, errlen, "%s: not a regular file", path);
        goto fail;
    }
    sf->file_bytes = (uint64_t)st.st_size;
    if (sf->file_bytes < 8 || fread(len8, 1, 8, sf->f) != 8) {
        set_err(err, errlen, "%s: %llu bytes: too short for a safetensors file (8-byte header length, then the header)",
                path, (unsigned long long)sf->file_bytes);
        goto fail;
    }
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | len8[i];
    if (hl < 2 || hl > ST_MAX_HEADER || hl > sf->file_bytes - 8) {
        set_err(err, errlen,
                "%s: header length %llu is impossible (the file has %llu bytes after the length; the format allows "
                "2..%u)",
                path, (unsigned long long)hl, (unsigned long long)(sf->file_bytes - 8), ST_MAX_HEADER);
        goto fail;
    }
    h = malloc((size_t)hl);
    if (!h) {
        set_err(err, errlen, "%s: out of memory for a %llu-byte header", path, (unsigned long long)hl);
        goto fail;
    }
    if (fread(h, 1, (size_t)hl, sf->f) != (size_t)hl) {
        set_err(err, errlen, "%s: reading the header: %s", path, ferror(sf->f) ? strerror(errno) : "short read");
        goto fail;
    }
    sf->data_start = 8 + hl;
    if (parse_header(sf, h, (size_t)hl, sf->file_bytes - sf->data_start, err, errlen))
        goto fail;
    free(h);
    return 0;
fail:
    free(h);
    st_close(sf);
    return -1;
}

void st_close(st_file *sf)
{
    if (sf->f)
        fclose(sf->f);
    free(sf->t);
    sf->f = NULL;
    sf->t = NULL;
    sf->n = 0;
}

const st_tensor *st_find(const st_file *sf, const char *name)
{
    for (int k = 0; k < sf->n; k++)
        if (!strcmp(sf->t[k].name, name))
            return &sf->t[k];
    return NULL;
}

static void where(const st_tensor *t, uint64_t idx, char *buf, size_t n)
{
    int64_t sub[ST_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        sub[d] = t->shape[d] ? (int64_t)(idx % (uint64_t)t->shape[d]) : 0;
        idx = t->shape[d] ? idx / (uint64_t)t->shape[d] : 0;
    }
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && o < n; d++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", d ? "," : "", (long long)sub[d]);
    if (o < n)
        snprintf(buf + o, n - o, "]");
}

int st_read(st_file *sf, const st_tensor *t, sale_dtype as, void *out, char *err, size_t errlen)
{
    if (t->dtype < 0) {
        set_err(err, errlen, "%s: tensor '%s': dtype %s is not supported (F32, F16 or BF16)", sf->path, t->name,
                t->dtype_name);
        return -1;
    }
    if (fseeko(sf->f, (off_t)(sf->data_start + t->begin), SEEK_SET) != 0) {
        set_err(err, errlen, "%s: tensor '%s': seek: %s", sf->path, t->name, strerror(errno));
        return -1;
    }
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = malloc(CHUNK);
    if (!buf) {
        set_err(err, errlen, "%s: out of memory", sf->path);
        return -1;
    }
    uint64_t total = (t->end - t->begin) / (uint64_t)t->elem_bytes, done = 0;
    int ret = 0;
    while (done < total) {
        uint64_t n = total - done;
        if (n > CHUNK / (uint64_t)t->elem_bytes)
            n = CHUNK / (uint64_t)t->elem_bytes;
        if (fread(buf, (size_t)t->elem_bytes, (size_t)n, sf->f) != (size_t)n) {
            set_err(err, errlen, "%s: tensor '%s': %s after %llu of %llu elements", sf->path, t->name,
                    ferror(sf->f) ? strerror(errno) : "file ends", (unsigned long long)done,
                    (unsigned long long)total);
            ret = -1;
            break;
        }
        for (uint64_t i = 0; i < n; i++) {
            float x = half_load(buf, (sale_dtype)t->dtype, (size_t)i); /* little-endian host */
            if (!isfinite(x)) {
                char w[128];
                where(t, done + i, w, sizeof w);
                set_err(err, errlen, "%s: tensor '%s': element %s is %s", sf->path, t->name, w,
                        isnan(x) ? "NaN" : "Inf");
                ret = -1;
                break;
            }
            if (out)
                half_store(out, as, (size_t)(done + i), x);
        }
        if (ret)
            break;
        done += n;
    }
    free(buf);
    return ret;
}

/* ------------------------------------------------------------ writer */

static const char *dtype_tag(sale_dtype d)
{
    return d == SALE_DTYPE_F32 ? "F32" : d == SALE_DTYPE_F16 ? "F16" : d == SALE_DTYPE_BF16 ? "BF16" : NULL;
}

int st_write(const char *path, const st_out *t, int n, char *err, size_t errlen)
{
    size_t cap = 256 + (size_t)n * 512, o = 0;
    char *h = malloc(cap);
    char *tmp = malloc(strlen(path) + 8);
    FILE *f = NULL;
    int ret = -1;
    if (!h || !tmp) {
        set_err(err, errlen, "%s: out of memory", path);
        goto out;
    }
    sprintf(tmp, "%s.tmp", path);
    o += (size_t)snprintf(h + o, cap - o, "{");
    uint64_t off = 0;
    for (int k = 0; k < n; k++) {
        const char *tag = dtype_tag(t[k].dtype);
        if (!tag || t[k].ndim < 0 || t[k].ndim > ST_MAX_DIMS || strlen(t[k].name) >= 128 ||
            strpbrk(t[k].name, "\"\\")) {
            set_err(err, errlen, "%s: tensor '%s': bad name, dtype or dims", path, t[k].name);
            goto out;
        }
        uint64_t elems = 1;
        o += (size_t)snprintf(h + o, cap - o, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", k ? "," : "", t[k].name, tag);
        for (int d = 0; d < t[k].ndim; d++) {
            elems *= (uint64_t)t[k].shape[d];
            o += (size_t)snprintf(h + o, cap - o, "%s%lld", d ? "," : "", (long long)t[k].shape[d]);
        }
        uint64_t bytes = elems * (t[k].dtype == SALE_DTYPE_F32 ? 4u : 2u);
        o += (size_t)snprintf(h + o, cap - o, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                              (unsigned long long)(off + bytes));
        off += bytes;
    }
    o += (size_t)snprintf(h + o, cap - o, "}");
    while (o % 8) /* the format pads the header with spaces to 8 bytes */
        h[o++] = ' ';
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)o >> (8 * i));
    f = fopen(tmp, "wb");
    if (!f) {
        set_err(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    int bad = fwrite(len8, 1, 8, f) != 8 || fwrite(h, 1, o, f) != o;
    for (int k = 0; k < n && !bad; k++) {
        size_t elems = 1;
        for (int d = 0; d < t[k].ndim; d++)
            elems *= (size_t)t[k].shape[d];
        size_t es = t[k].dtype == SALE_DTYPE_F32 ? 4 : 2;
        bad = elems && fwrite(t[k].data, es, elems, f) != elems;
    }
    if (fclose(f) != 0 || bad) {
        f = NULL;
        set_err(err, errlen, "%s: write: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        set_err(err, errlen, "rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    ret = 0;
out:
    free(h);
    free(tmp);
    return ret;
}
