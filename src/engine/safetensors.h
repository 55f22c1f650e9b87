/* safetensors.h: reading (memory-mapped) and writing Hugging Face .safetensors files,
 * and resolving a sharded snapshot through model.safetensors.index.json.
 *
 * Format: u64 little-endian header length N, N bytes of JSON mapping tensor names to
 * {"dtype", "shape", "data_offsets": [begin, end]} (relative to the byte after the
 * header), optional "__metadata__". The header is checked in full, as the safetensors
 * specification and its reference implementation demand: a header of at most 100 MB that
 * starts with '{', no duplicate keys, offsets inside the file, sizes that agree with
 * dtype x shape, rank <= 8, and tensors that cover the data area exactly, without holes
 * or overlaps (so the file cannot hide other content). Rank 0 (a scalar) and dimensions
 * of 0 (an empty tensor) are allowed, as the specification allows them.
 *
 * Dtypes: F32, F16, BF16, F64, I8, I16, I32, I64 are read; the others (BOOL, U8..U64,
 * the F8 / F4 formats) have no sg_dtype and are rejected with an error naming the tensor,
 * rather than silently skipped, so a converter never drops a tensor unnoticed.
 *
 * Data pointers are aligned only as far as the file aligns them (this module's writer and
 * the reference one pad the header to 8 bytes; tensors are packed without padding), so
 * read elements with memcpy or convert them rather than cast. */
#ifndef SG_SAFETENSORS_H
#define SG_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/mapfile.h"
#include "engine/dtype.h"

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    char *name;
    sg_dtype dtype;            /* SG_F32, SG_F16, SG_BF16, SG_F64, SG_I8..SG_I64 */
    uint32_t n_dims;
    uint64_t shape[ST_MAX_DIMS]; /* row-major: shape[n_dims-1] varies fastest */
    const void *data;          /* into the mapping */
    size_t nbytes;
} st_tensor;

typedef struct st_file {
    sg_mapfile map;            /* empty when parsed from memory */
    st_tensor *tensors;        /* sorted by name */
    size_t n_tensors;
    char **meta;               /* "__metadata__": key, value, key, value, ... */
    size_t n_meta;             /* pairs */
} st_file;

/* On failure f is left empty (st_close on it is harmless) and err names the problem. */
int  st_open(st_file *f, const char *path, sg_error *err);
/* Parses an image already in memory (data must outlive f). */
int  st_parse(st_file *f, const unsigned char *data, size_t size, sg_error *err);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
/* A "__metadata__" value ("format" -> "pt"); NULL when absent. */
const char *st_metadata(const st_file *f, const char *key);
/* "F32", "BF16", ... as safetensors spells them; NULL for a dtype it cannot hold. */
const char *st_dtype_name(sg_dtype t);

/* A snapshot's weights: one file, or the shards named by model.safetensors.index.json. */
typedef struct st_route {
    char *name;                /* tensor name */
    size_t file;               /* index into files */
} st_route;

typedef struct st_set {
    st_file *files;
    size_t n_files;
    st_route *routes;          /* the weight_map, sorted by name; NULL for one file */
    size_t n_routes;
} st_set;

/* Opens DIR/model.safetensors.index.json (and every shard it names, once each) if
 * present, else DIR/model.safetensors. Shard names must be plain file names in DIR (no
 * '/', not "." or ".."), and every weight_map entry must exist in its shard. */
int  st_set_open(st_set *s, const char *dir, sg_error *err);
void st_set_close(st_set *s);
/* With an index, only the weight_map is consulted (a tensor a shard holds but the map
 * does not name is not found), as transformers does. */
const st_tensor *st_set_find(const st_set *s, const char *name);

/* Writing: tensors with data in memory; the header is written in name order, the data in
 * header order, the header padded with spaces to a multiple of 8 bytes as the reference
 * implementation does. Written to a temporary file beside PATH and renamed on success. */
typedef struct st_write_tensor {
    const char *name;
    sg_dtype dtype;
    uint32_t n_dims;
    uint64_t shape[ST_MAX_DIMS];
    const void *data;
} st_write_tensor;

int st_write(const char *path, const st_write_tensor *t, size_t n, sg_error *err);
/* The same with a "__metadata__" object (written first): meta holds n_meta key, value
 * pairs, flattened. */
int st_write_meta(const char *path, const st_write_tensor *t, size_t n,
                  const char *const *meta, size_t n_meta, sg_error *err);

#endif
