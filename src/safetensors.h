/* safetensors.h — a small, strict reader and writer of the safetensors
 * format (8-byte little-endian header length, a JSON header, raw tensor
 * bytes), for the captured Q/K/V that sale calibrate reads. Internal;
 * prefix st_. Every error names the file (and the tensor where one is at
 * fault). */
#ifndef SALE_SAFETENSORS_H
#define SALE_SAFETENSORS_H

#include <stdint.h>
#include <stdio.h>

#include "sale.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER (100u << 20) /* the format's own limit on the JSON header */

typedef struct st_tensor {
    char name[128];
    char dtype_name[16]; /* as written: "BF16", "F32", "I64", ... */
    int dtype;           /* a sale_dtype (F16, BF16, F32), or -1 for any other dtype */
    int elem_bytes;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end; /* byte offsets in the data section (after the header) */
} st_tensor;

typedef struct st_file {
    char path[1024];
    FILE *f;
    uint64_t file_bytes, data_start;
    st_tensor *t;
    int n;
} st_file;

/* Open path and validate its header: length within the file and the format's
 * limit, well-formed JSON, every tensor's dtype, shape and data_offsets, the
 * offsets inside the file, and shape product * element size equal to the
 * byte length. 0, or -1 with err ("PATH: tensor 'k': ...") and nothing open. */
int st_open(st_file *sf, const char *path, char *err, size_t errlen);
void st_close(st_file *sf);
const st_tensor *st_find(const st_file *sf, const char *name);

/* Read a tensor's bytes (end - begin of them) into out, converted to `as`
 * (F32, F16 or BF16); fails on a dtype other than F32/F16/BF16 and on any
 * NaN or Inf, naming the element. out may be NULL: only check. */
int st_read(st_file *sf, const st_tensor *t, sale_dtype as, void *out, char *err, size_t errlen);

typedef struct st_out {
    const char *name;
    sale_dtype dtype; /* F32, F16, BF16 */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* contiguous, product(shape) elements */
} st_out;

/* Write n tensors into a new file at path (written to path.tmp, then renamed). */
int st_write(const char *path, const st_out *t, int n, char *err, size_t errlen);

#endif
