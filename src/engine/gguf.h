/* gguf.h: reading and writing GGUF v3 files (the llama.cpp model format).
 *
 * Reading maps the file and parses the header, metadata and tensor table; tensor data
 * stays in the mapping (gguf_tensor.data points into it). Every count, length, offset and
 * shape is checked against the file's size before use, so a truncated or hostile file
 * gives an error naming the problem, never a read past the mapping. Version 3 and 2
 * (same layout) are read; version 1 and big-endian files are rejected.
 *
 * What the reader rejects, beyond truncation: duplicate keys or tensor names, empty keys
 * or names, nested arrays (GGUF allows arrays of arrays, but no model uses them), unknown
 * value or tensor types (smolgate knows the types in dtype.h), more than 4 dimensions, a
 * dimension of 0, ne[0] not a multiple of the type's block size, a general.alignment that
 * is not a u32 power of two, tensor offsets that are unaligned, overlap, or run past the
 * end of the file. Booleans read as 0 = false, anything else = true.
 *
 * Writing collects metadata and tensors and writes them in one pass; tensor data comes
 * from a pointer or from a fill callback, so multi-gigabyte models are streamed. The
 * layout is llama.cpp's (metadata in insertion order, tensor infos, padding to the
 * alignment, each tensor's data padded to the alignment). The file is written to a
 * temporary name beside PATH and renamed on success, so a failed write leaves nothing. */
#ifndef SG_GGUF_H
#define SG_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/mapfile.h"
#include "engine/dtype.h"

typedef enum gguf_type {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5,
    GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10,
    GGUF_I64 = 11, GGUF_F64 = 12
} gguf_type;

typedef struct gguf_str {
    const char *p;      /* points into the mapping: NOT NUL-terminated */
    uint64_t n;         /* bytes */
} gguf_str;

typedef struct gguf_value {
    gguf_type type;
    union {
        uint64_t u;     /* U8, U16, U32, U64, BOOL */
        int64_t i;      /* I8, I16, I32, I64 */
        double f;       /* F32, F64 */
        gguf_str str;   /* STRING */
        struct {
            gguf_type elem;            /* element type (never ARRAY: nested arrays are rejected) */
            uint64_t n;                /* element count */
            const unsigned char *data; /* raw little-endian elements (numeric types) */
            gguf_str *strs;            /* elem == STRING: n entries, owned by the file */
        } arr;
    };
} gguf_value;

typedef struct gguf_kv {
    gguf_str key;
    gguf_value v;
} gguf_kv;

typedef struct gguf_tensor {
    gguf_str name;
    uint32_t n_dims;
    uint64_t ne[4];     /* ne[0] varies fastest; unused dims are 1 */
    sg_dtype type;
    uint64_t offset;    /* relative to the data section */
    const void *data;   /* into the mapping */
    size_t nbytes;
} gguf_tensor;

typedef struct gguf_file {
    sg_mapfile map;     /* empty when parsed from memory */
    uint32_t version;
    uint64_t alignment;
    gguf_kv *kv;
    uint64_t n_kv;
    gguf_tensor *tensors;
    uint64_t n_tensors;
    uint64_t data_offset;  /* start of the data section in the file */
    /* private: open-addressing hash of tensor names (indices + 1; 0 = empty slot) */
    size_t *tensor_slots;
    size_t tensor_slots_cap;   /* a power of two */
} gguf_file;

/* On failure f is left empty (gguf_close on it is harmless) and err names the problem. */
int  gguf_open(gguf_file *f, const char *path, sg_error *err);
/* Parses a GGUF image already in memory (data must outlive f). */
int  gguf_parse(gguf_file *f, const unsigned char *data, size_t size, sg_error *err);
void gguf_close(gguf_file *f);
/* "u8", "string", "array", ...; "?" for an unknown type. */
const char *gguf_type_name(uint32_t t);

/* Metadata lookup; NULL when absent. */
const gguf_kv *gguf_find(const gguf_file *f, const char *key);
/* Typed getters: return 0 and store the value when the key exists and converts without
 * loss (any integer type to an integer, any float or integer to a float); -1 otherwise. */
int gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out);
int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
int gguf_get_f64(const gguf_file *f, const char *key, double *out);
int gguf_get_bool(const gguf_file *f, const char *key, bool *out);
/* Returns a NUL-terminated heap copy of a string value (caller frees), or NULL. */
char *gguf_get_str(const gguf_file *f, const char *key);
/* Element i of a numeric array, converted like the getters above (-1 when v is not such
 * an array or i is out of range). */
int gguf_arr_i64(const gguf_value *v, uint64_t i, int64_t *out);
int gguf_arr_f64(const gguf_value *v, uint64_t i, double *out);

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);
bool gguf_str_eq(gguf_str s, const char *c);

/* ---- writing ---- */
typedef struct gguf_writer gguf_writer;
/* Produces the next nbytes of tensor data into dst; returns 0, or -1 to abort the write.
 * Called repeatedly, in order, with chunks of at most 4 MiB until the tensor is done. */
typedef int (*gguf_fill_fn)(void *ctx, void *dst, size_t nbytes);

gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);
void gguf_set_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_set_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_set_u64(gguf_writer *w, const char *key, uint64_t v);
void gguf_set_f32(gguf_writer *w, const char *key, float v);
void gguf_set_bool(gguf_writer *w, const char *key, bool v);
void gguf_set_str(gguf_writer *w, const char *key, const char *v);
void gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *v, size_t n);
void gguf_set_arr_i32(gguf_writer *w, const char *key, const int32_t *v, size_t n);
void gguf_set_arr_f32(gguf_writer *w, const char *key, const float *v, size_t n);
/* Setting a key that is already set replaces its value and keeps its position. Mistakes
 * (an unknown type, a bad tensor shape, a duplicate tensor name) are reported by
 * gguf_writer_write, so the setters need no error checks. */
/* Copies any metadata value (for converters that carry keys over). */
void gguf_set_value(gguf_writer *w, const char *key, const gguf_value *v);
/* Adds a tensor; data (kept by the caller until gguf_writer_write returns) or fill.
 * Names must be shorter than 64 bytes (llama.cpp's limit). */
void gguf_add_tensor(gguf_writer *w, const char *name, sg_dtype type, uint32_t n_dims,
                     const uint64_t *ne, const void *data, gguf_fill_fn fill, void *fill_ctx);
/* Writes the file (alignment from "general.alignment" if set, else 32). */
int gguf_writer_write(gguf_writer *w, const char *path, sg_error *err);

#endif
