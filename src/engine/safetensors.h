/* safetensors.h: reading (memory-mapped) and writing Hugging Face .safetensors files,
 * and resolving a sharded snapshot through model.safetensors.index.json.
 *
 * Format: u64 little-endian header length N, N bytes of JSON mapping tensor names to
 * {"dtype", "shape", "data_offsets": [begin, end]} (relative to the byte after the
 * header), optional "__metadata__". The header is checked in full: offsets inside the
 * file, sizes that agree with dtype x shape, no overlaps, no absurd ranks. */
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
    sg_mapfile map;
    st_tensor *tensors;
    size_t n_tensors;
} st_file;

int  st_open(st_file *f, const char *path, sg_error *err);
int  st_parse(st_file *f, const unsigned char *data, size_t size, sg_error *err);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);

/* A snapshot's weights: one file, or the shards named by model.safetensors.index.json. */
typedef struct st_set {
    st_file *files;
    size_t n_files;
} st_set;

/* Opens DIR/model.safetensors.index.json (and every shard it names) if present, else
 * DIR/model.safetensors. */
int  st_set_open(st_set *s, const char *dir, sg_error *err);
void st_set_close(st_set *s);
const st_tensor *st_set_find(const st_set *s, const char *name);

/* Writing: tensors with data in memory; the header is written in name order. */
typedef struct st_write_tensor {
    const char *name;
    sg_dtype dtype;
    uint32_t n_dims;
    uint64_t shape[ST_MAX_DIMS];
    const void *data;
} st_write_tensor;

int st_write(const char *path, const st_write_tensor *t, size_t n, sg_error *err);

#endif
