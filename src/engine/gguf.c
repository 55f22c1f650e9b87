/* gguf.c: the GGUF reader and writer (see gguf.h for the contract).
 *
 * Why hand-written: no Debian-packaged library reads GGUF outside ggml itself, and the
 * reader is the security boundary for model files that users download, so it is kept
 * small enough to audit: one cursor that never moves past the end of the image, and
 * every size computed with overflow checks before anything is allocated or read. */
#include "engine/gguf.h"
#include "common/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4
#define GGUF_MAX_NAME 64          /* llama.cpp's GGML_MAX_NAME, NUL included */
/* Smallest encodings, used to reject counts no file of this size could hold:
 * key length + type + a 1-byte value; name length + n_dims + type + offset. */
#define GGUF_MIN_KV_BYTES 13
#define GGUF_MIN_TENSOR_BYTES 24
#define GGUF_HEADER_BYTES 24

/* ---- small helpers ---- */

static uint64_t le_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint32_t le_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Bytes per element of a scalar value type; 0 for STRING, ARRAY and unknown types. */
static size_t scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    default: return 0;
    }
}

const char *gguf_type_name(uint32_t t) {
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                  "string", "array", "u64", "i64", "f64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "?";
}

/* A file's key or name, made safe to print in an error message: at most 64 bytes, with
 * bytes outside printable ASCII shown as '?'. */
typedef struct shown { char s[80]; } shown;
static shown show(gguf_str str) {
    shown out;
    size_t n = str.n < 64 ? (size_t)str.n : 64, j = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)str.p[i];
        out.s[j++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (str.n > n) { memcpy(out.s + j, "...", 3); j += 3; }
    out.s[j] = 0;
    return out;
}

bool gguf_str_eq(gguf_str s, const char *c) {
    size_t n = strlen(c);
    return s.n == n && memcmp(s.p, c, n) == 0;
}

static uint64_t hash_bytes(const char *p, uint64_t n) {
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (uint64_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

static bool str_same(gguf_str a, gguf_str b) {
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

/* Open-addressing table of indices + 1 into an array of gguf_str (reached through
 * get_name). Inserting a name already present returns the earlier index. */
typedef gguf_str (*name_of_fn)(const void *items, size_t i);
static gguf_str kv_name(const void *items, size_t i) { return ((const gguf_kv *)items)[i].key; }
static gguf_str tensor_name(const void *items, size_t i) { return ((const gguf_tensor *)items)[i].name; }

static size_t *slots_new(size_t n, size_t *cap_out) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;   /* n is bounded by the file size, so this ends */
    *cap_out = cap;
    return sg_xcalloc(cap, sizeof(size_t));
}

/* Returns SIZE_MAX when inserted, else the index of the duplicate. */
static size_t slots_insert(size_t *slots, size_t cap, const void *items, name_of_fn name_of, size_t i) {
    gguf_str s = name_of(items, i);
    for (size_t h = (size_t)hash_bytes(s.p, s.n) & (cap - 1);; h = (h + 1) & (cap - 1)) {
        if (!slots[h]) { slots[h] = i + 1; return SIZE_MAX; }
        if (str_same(name_of(items, slots[h] - 1), s)) return slots[h] - 1;
    }
}

/* ---- reading ---- */

/* A cursor over the image; every read checks the bytes are there first. */
typedef struct cursor {
    const unsigned char *p;
    size_t size, pos;
} cursor;

static size_t left(const cursor *c) { return c->size - c->pos; }

static int rd_u32(cursor *c, uint32_t *v) {
    if (left(c) < 4) return -1;
    *v = le_u32(c->p + c->pos);
    c->pos += 4;
    return 0;
}
static int rd_u64(cursor *c, uint64_t *v) {
    if (left(c) < 8) return -1;
    *v = le_u64(c->p + c->pos);
    c->pos += 8;
    return 0;
}
/* A u64 length then that many bytes. Returns -1 when the length field itself is cut off,
 * -2 when the bytes run past the end (*len_out then holds the claimed length). */
static int rd_str(cursor *c, gguf_str *s, uint64_t *len_out) {
    uint64_t n;
    if (rd_u64(c, &n)) return -1;
    *len_out = n;
    if (n > left(c)) return -2;
    s->p = (const char *)c->p + c->pos;
    s->n = n;
    c->pos += (size_t)n;
    return 0;
}

static void decode_scalar(uint32_t t, const unsigned char *p, gguf_value *v) {
    switch (t) {
    case GGUF_U8: v->u = p[0]; break;
    case GGUF_BOOL: v->u = p[0] != 0; break;
    case GGUF_I8: v->i = (int8_t)p[0]; break;
    case GGUF_U16: v->u = (uint16_t)(p[0] | p[1] << 8); break;
    case GGUF_I16: v->i = (int16_t)(uint16_t)(p[0] | p[1] << 8); break;
    case GGUF_U32: v->u = le_u32(p); break;
    case GGUF_I32: v->i = (int32_t)le_u32(p); break;
    case GGUF_U64: v->u = le_u64(p); break;
    case GGUF_I64: v->i = (int64_t)le_u64(p); break;
    case GGUF_F32: { uint32_t x = le_u32(p); float f; memcpy(&f, &x, 4); v->f = f; break; }
    case GGUF_F64: { uint64_t x = le_u64(p); double d; memcpy(&d, &x, 8); v->f = d; break; }
    default: break;
    }
}

/* Reads a value of type t for key k. */
static int read_value(cursor *c, uint32_t t, gguf_str k, gguf_value *v, sg_error *err) {
    v->type = (gguf_type)t;
    if (t == GGUF_STRING) {
        uint64_t n;
        int rc = rd_str(c, &v->str, &n);
        if (rc == -1) return sg_fail(err, "%s: string length cut off by the end of the file", show(k).s);
        if (rc == -2)
            return sg_fail(err, "%s: string of %llu bytes exceeds the file size", show(k).s,
                           (unsigned long long)n);
        return 0;
    }
    if (t != GGUF_ARRAY) {
        size_t sz = scalar_size(t);
        if (!sz) return sg_fail(err, "%s: unknown value type %u", show(k).s, t);
        if (left(c) < sz) return sg_fail(err, "%s: %s value cut off by the end of the file", show(k).s, gguf_type_name(t));
        decode_scalar(t, c->p + c->pos, v);
        c->pos += sz;
        return 0;
    }
    uint32_t et;
    uint64_t n;
    if (rd_u32(c, &et) || rd_u64(c, &n))
        return sg_fail(err, "%s: array header cut off by the end of the file", show(k).s);
    if (et == GGUF_ARRAY) return sg_fail(err, "%s: nested arrays are not supported", show(k).s);
    v->arr.elem = (gguf_type)et;
    v->arr.n = n;
    v->arr.data = c->p + c->pos;
    v->arr.strs = NULL;
    if (et == GGUF_STRING) {
        if (n > left(c) / 8)  /* each string takes at least its 8-byte length */
            return sg_fail(err, "%s: array of %llu strings exceeds the file size", show(k).s,
                           (unsigned long long)n);
        v->arr.strs = sg_xmalloc((size_t)(n ? n : 1) * sizeof(gguf_str));
        for (uint64_t i = 0; i < n; i++) {
            uint64_t len;
            if (rd_str(c, &v->arr.strs[i], &len)) {
                free(v->arr.strs);
                v->arr.strs = NULL;
                return sg_fail(err, "%s: string %llu of %llu (%llu bytes) exceeds the file size",
                               show(k).s, (unsigned long long)i, (unsigned long long)n,
                               (unsigned long long)len);
            }
        }
        return 0;
    }
    size_t sz = scalar_size(et);
    if (!sz) return sg_fail(err, "%s: array of unknown element type %u", show(k).s, et);
    if (n > left(c) / sz)
        return sg_fail(err, "%s: array of %llu %s values exceeds the file size", show(k).s,
                       (unsigned long long)n, gguf_type_name(et));
    c->pos += (size_t)n * sz;
    return 0;
}

static void free_kvs(gguf_kv *kv, uint64_t n) {
    if (!kv) return;
    for (uint64_t i = 0; i < n; i++)
        if (kv[i].v.type == GGUF_ARRAY) free(kv[i].v.arr.strs);
    free(kv);
}

/* Sort key for the overlap check (qsort has no context argument, hence the copy). */
typedef struct placed { uint64_t offset; size_t i; } placed;
static int by_offset(const void *a, const void *b) {
    uint64_t x = ((const placed *)a)->offset, y = ((const placed *)b)->offset;
    return x < y ? -1 : x > y;
}

static int read_alignment(const gguf_file *f, uint64_t *out, sg_error *err) {
    *out = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *a = gguf_find(f, "general.alignment");
    if (!a) return 0;
    if (a->v.type != GGUF_U32)
        return sg_fail(err, "general.alignment must be a u32, not %s", gguf_type_name(a->v.type));
    if (a->v.u == 0 || (a->v.u & (a->v.u - 1)))
        return sg_fail(err, "general.alignment = %llu is not a power of two", (unsigned long long)a->v.u);
    *out = a->v.u;
    return 0;
}

static int read_tensor_info(cursor *c, uint64_t i, gguf_tensor *t, sg_error *err) {
    uint64_t len;
    int rc = rd_str(c, &t->name, &len);
    if (rc == -1) return sg_fail(err, "tensor %llu: name cut off by the end of the file", (unsigned long long)i);
    if (rc == -2)
        return sg_fail(err, "tensor %llu: name of %llu bytes exceeds the file size", (unsigned long long)i,
                       (unsigned long long)len);
    if (t->name.n == 0) return sg_fail(err, "tensor %llu has an empty name", (unsigned long long)i);
    shown name = show(t->name);
    const char *nm = name.s;
    uint32_t type;
    if (rd_u32(c, &t->n_dims)) return sg_fail(err, "tensor '%s': cut off by the end of the file", nm);
    if (t->n_dims > GGUF_MAX_DIMS)
        return sg_fail(err, "tensor '%s': %u dimensions (at most %d)", nm, t->n_dims, GGUF_MAX_DIMS);
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++)
        if (rd_u64(c, &t->ne[d])) return sg_fail(err, "tensor '%s': cut off by the end of the file", nm);
    if (rd_u32(c, &type) || rd_u64(c, &t->offset))
        return sg_fail(err, "tensor '%s': cut off by the end of the file", nm);
    const sg_dtype_info *ti = dtype_info(type);
    if (!ti) return sg_fail(err, "tensor '%s': unknown tensor type %u", nm, type);
    t->type = (sg_dtype)type;
    /* ggml keeps element counts in int64_t: the product must fit there. */
    uint64_t rows = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        if (t->ne[d] == 0) return sg_fail(err, "tensor '%s': dimension %u is 0", nm, d);
        if (t->ne[d] > (uint64_t)INT64_MAX) return sg_fail(err, "tensor '%s': dimension %u is too large", nm, d);
        if (d > 0) {
            if (rows > (uint64_t)INT64_MAX / t->ne[d])
                return sg_fail(err, "tensor '%s': element count overflows", nm);
            rows *= t->ne[d];
        }
    }
    if (t->ne[0] % ti->block_size)
        return sg_fail(err, "tensor '%s': ne[0] = %llu is not a multiple of the %s block size %u", nm,
                       (unsigned long long)t->ne[0], ti->name, ti->block_size);
    if (rows > (uint64_t)INT64_MAX / t->ne[0]) return sg_fail(err, "tensor '%s': element count overflows", nm);
    size_t row = dtype_row_bytes(t->type, t->ne[0]);
    if (row == 0 || rows > SIZE_MAX / row) return sg_fail(err, "tensor '%s': byte size overflows", nm);
    t->nbytes = row * (size_t)rows;
    return 0;
}

/* Places every tensor in the data section: aligned, inside the file, not overlapping. */
static int place_tensors(gguf_file *f, const unsigned char *data, size_t size, sg_error *err) {
    if (f->n_tensors == 0) return 0;
    if (f->data_offset > size) return sg_fail(err, "data section starts past the end of the file");
    uint64_t avail = size - f->data_offset;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset % f->alignment)
            return sg_fail(err, "tensor '%s': offset %llu is not a multiple of the alignment %llu",
                           show(t->name).s, (unsigned long long)t->offset, (unsigned long long)f->alignment);
        if (t->offset > avail || t->nbytes > avail - t->offset)
            return sg_fail(err, "tensor '%s': data at offset %llu (%zu bytes) runs past the end of the file "
                           "(data section holds %llu bytes)", show(t->name).s, (unsigned long long)t->offset,
                           t->nbytes, (unsigned long long)avail);
        t->data = data + f->data_offset + t->offset;
    }
    placed *order = sg_xmalloc((size_t)f->n_tensors * sizeof *order);
    for (size_t i = 0; i < f->n_tensors; i++) order[i] = (placed){f->tensors[i].offset, i};
    qsort(order, (size_t)f->n_tensors, sizeof *order, by_offset);
    int rc = 0;
    for (size_t i = 1; i < f->n_tensors && rc == 0; i++) {
        const gguf_tensor *a = &f->tensors[order[i - 1].i], *b = &f->tensors[order[i].i];
        if (b->offset < a->offset + a->nbytes)
            rc = sg_fail(err, "tensors '%s' and '%s' overlap", show(a->name).s, show(b->name).s);
    }
    free(order);
    return rc;
}

static int parse(gguf_file *f, const unsigned char *data, size_t size, sg_error *err) {
    cursor c = {data, size, 0};
    if (size < GGUF_HEADER_BYTES)
        return sg_fail(err, "%zu bytes is too small for a GGUF header (%d bytes)", size, GGUF_HEADER_BYTES);
    if (memcmp(data, "GGUF", 4) != 0)
        return sg_fail(err, "not a GGUF file (magic %02x %02x %02x %02x)", data[0], data[1], data[2], data[3]);
    c.pos = 4;
    rd_u32(&c, &f->version);
    if (f->version == 0x02000000 || f->version == 0x03000000)
        return sg_fail(err, "big-endian GGUF files are not supported");
    if (f->version == 1)
        return sg_fail(err, "GGUF version 1 is not supported (convert the file with a current llama.cpp)");
    if (f->version != 2 && f->version != 3) return sg_fail(err, "unsupported GGUF version %u", f->version);
    rd_u64(&c, &f->n_tensors);
    rd_u64(&c, &f->n_kv);
    uint64_t room = left(&c);
    if (f->n_kv > room / GGUF_MIN_KV_BYTES)
        return sg_fail(err, "header claims %llu metadata entries, more than a %zu-byte file can hold",
                       (unsigned long long)f->n_kv, size);
    room -= f->n_kv * GGUF_MIN_KV_BYTES;
    if (f->n_tensors > room / GGUF_MIN_TENSOR_BYTES)
        return sg_fail(err, "header claims %llu tensors, more than a %zu-byte file can hold",
                       (unsigned long long)f->n_tensors, size);

    /* Metadata. n_kv counts only entries parsed so far, so cleanup frees exactly those. */
    uint64_t n_kv = f->n_kv;
    f->kv = sg_xcalloc((size_t)(n_kv ? n_kv : 1), sizeof(gguf_kv));
    f->n_kv = 0;
    size_t cap;
    size_t *slots = slots_new((size_t)n_kv, &cap);
    for (uint64_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &f->kv[i];
        uint64_t len;
        uint32_t t;
        int rc = rd_str(&c, &kv->key, &len);
        if (rc == -1) { free(slots); return sg_fail(err, "metadata entry %llu: key cut off by the end of the file", (unsigned long long)i); }
        if (rc == -2) {
            free(slots);
            return sg_fail(err, "metadata entry %llu: key of %llu bytes exceeds the file size",
                           (unsigned long long)i, (unsigned long long)len);
        }
        if (kv->key.n == 0) { free(slots); return sg_fail(err, "metadata entry %llu has an empty key", (unsigned long long)i); }
        if (slots_insert(slots, cap, f->kv, kv_name, (size_t)i) != SIZE_MAX) {
            free(slots);
            return sg_fail(err, "duplicate metadata key %s", show(kv->key).s);
        }
        if (rd_u32(&c, &t)) { free(slots); return sg_fail(err, "%s: value type cut off by the end of the file", show(kv->key).s); }
        if (read_value(&c, t, kv->key, &kv->v, err)) { free(slots); return -1; }
        f->n_kv = i + 1;
    }
    free(slots);
    if (read_alignment(f, &f->alignment, err)) return -1;

    /* Tensor infos. */
    uint64_t n_t = f->n_tensors;
    f->tensors = sg_xcalloc((size_t)(n_t ? n_t : 1), sizeof(gguf_tensor));
    f->tensor_slots = slots_new((size_t)n_t, &f->tensor_slots_cap);
    for (uint64_t i = 0; i < n_t; i++) {
        if (read_tensor_info(&c, i, &f->tensors[i], err)) return -1;
        if (slots_insert(f->tensor_slots, f->tensor_slots_cap, f->tensors, tensor_name, (size_t)i) != SIZE_MAX)
            return sg_fail(err, "duplicate tensor name '%s'", show(f->tensors[i].name).s);
    }
    /* The data section starts at the next multiple of the alignment (at most 2^31, and
     * c.pos <= size, so this cannot overflow). */
    f->data_offset = (c.pos + f->alignment - 1) / f->alignment * f->alignment;
    return place_tensors(f, data, size, err);
}

static void release(gguf_file *f) {
    free_kvs(f->kv, f->n_kv);
    free(f->tensors);
    free(f->tensor_slots);
    sg_mapfile map = f->map;
    memset(f, 0, sizeof *f);
    f->map = map;
}

int gguf_parse(gguf_file *f, const unsigned char *data, size_t size, sg_error *err) {
    memset(f, 0, sizeof *f);
    if (parse(f, data, size, err)) {
        release(f);
        return -1;
    }
    return 0;
}

int gguf_open(gguf_file *f, const char *path, sg_error *err) {
    sg_mapfile map;
    memset(f, 0, sizeof *f);
    if (sg_mapfile_open(&map, path, err)) return -1;
    if (gguf_parse(f, map.data, map.size, err)) {
        sg_mapfile_close(&map);
        return sg_fail_wrap(err, "%s", path);
    }
    f->map = map;
    return 0;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    release(f);
    sg_mapfile_close(&f->map);
}

/* ---- lookup ---- */

const gguf_kv *gguf_find(const gguf_file *f, const char *key) {
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (gguf_str_eq(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    if (!f->tensor_slots) {   /* a gguf_file not built by gguf_parse */
        for (uint64_t i = 0; i < f->n_tensors; i++)
            if (gguf_str_eq(f->tensors[i].name, name)) return &f->tensors[i];
        return NULL;
    }
    size_t cap = f->tensor_slots_cap, n = strlen(name);
    for (size_t h = (size_t)hash_bytes(name, n) & (cap - 1); f->tensor_slots[h]; h = (h + 1) & (cap - 1)) {
        const gguf_tensor *t = &f->tensors[f->tensor_slots[h] - 1];
        if (gguf_str_eq(t->name, name)) return t;
    }
    return NULL;
}

static bool is_unsigned(gguf_type t) { return t == GGUF_U8 || t == GGUF_U16 || t == GGUF_U32 || t == GGUF_U64; }
static bool is_signed(gguf_type t) { return t == GGUF_I8 || t == GGUF_I16 || t == GGUF_I32 || t == GGUF_I64; }
static bool is_float(gguf_type t) { return t == GGUF_F32 || t == GGUF_F64; }

static int value_u64(const gguf_value *v, uint64_t *out) {
    if (is_unsigned(v->type)) { *out = v->u; return 0; }
    if (is_signed(v->type) && v->i >= 0) { *out = (uint64_t)v->i; return 0; }
    return -1;
}
static int value_i64(const gguf_value *v, int64_t *out) {
    if (is_signed(v->type)) { *out = v->i; return 0; }
    if (is_unsigned(v->type) && v->u <= (uint64_t)INT64_MAX) { *out = (int64_t)v->u; return 0; }
    return -1;
}
static int value_f64(const gguf_value *v, double *out) {
    if (is_float(v->type)) { *out = v->f; return 0; }
    if (is_signed(v->type)) { *out = (double)v->i; return 0; }
    if (is_unsigned(v->type)) { *out = (double)v->u; return 0; }
    return -1;
}

int gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out) {
    const gguf_kv *kv = gguf_find(f, key);
    return kv ? value_u64(&kv->v, out) : -1;
}
int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out) {
    const gguf_kv *kv = gguf_find(f, key);
    return kv ? value_i64(&kv->v, out) : -1;
}
int gguf_get_f64(const gguf_file *f, const char *key, double *out) {
    const gguf_kv *kv = gguf_find(f, key);
    return kv ? value_f64(&kv->v, out) : -1;
}
int gguf_get_bool(const gguf_file *f, const char *key, bool *out) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || kv->v.type != GGUF_BOOL) return -1;
    *out = kv->v.u != 0;
    return 0;
}
char *gguf_get_str(const gguf_file *f, const char *key) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || kv->v.type != GGUF_STRING) return NULL;
    return sg_xstrndup(kv->v.str.p, (size_t)kv->v.str.n);
}

/* Decodes numeric array element i into a scalar value. */
static int arr_elem(const gguf_value *v, uint64_t i, gguf_value *e) {
    if (v->type != GGUF_ARRAY || i >= v->arr.n) return -1;
    size_t sz = scalar_size(v->arr.elem);
    if (!sz || v->arr.elem == GGUF_BOOL) return -1;
    e->type = v->arr.elem;
    decode_scalar(v->arr.elem, v->arr.data + i * sz, e);
    return 0;
}
int gguf_arr_i64(const gguf_value *v, uint64_t i, int64_t *out) {
    gguf_value e;
    return arr_elem(v, i, &e) ? -1 : value_i64(&e, out);
}
int gguf_arr_f64(const gguf_value *v, uint64_t i, double *out) {
    gguf_value e;
    return arr_elem(v, i, &e) ? -1 : value_f64(&e, out);
}

/* ---- writing ---- */

typedef struct wkv {
    char *key;
    sg_buf val;          /* u32 type + encoded value, exactly as written to the file */
} wkv;

typedef struct wtensor {
    char *name;
    sg_dtype type;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    size_t nbytes;
    const void *data;
    gguf_fill_fn fill;
    void *fill_ctx;
} wtensor;

struct gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    sg_error bad;        /* first mistake made through the setters */
    bool has_bad;
};

gguf_writer *gguf_writer_new(void) { return sg_xcalloc(1, sizeof(gguf_writer)); }

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) { free(w->kv[i].key); sg_buf_free(&w->kv[i].val); }
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

__attribute__((format(printf, 2, 3)))
static void writer_bad(gguf_writer *w, const char *fmt, ...) {
    if (w->has_bad) return;
    w->has_bad = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->bad.msg, sizeof w->bad.msg, fmt, ap);
    va_end(ap);
}

static void put_u32(sg_buf *b, uint32_t v) {
    unsigned char p[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    sg_buf_append(b, p, 4);
}
static void put_u64(sg_buf *b, uint64_t v) {
    unsigned char p[8];
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
    sg_buf_append(b, p, 8);
}
static void put_str(sg_buf *b, const char *s, size_t n) {
    put_u64(b, n);
    sg_buf_append(b, s, n);
}

/* The buffer for key, emptied, at the key's old position or appended. */
static sg_buf *kv_slot(gguf_writer *w, const char *key) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) { sg_buf_reset(&w->kv[i].val); return &w->kv[i].val; }
    if (w->n_kv == w->cap_kv) {
        w->cap_kv = w->cap_kv ? 2 * w->cap_kv : 32;
        w->kv = sg_xrealloc(w->kv, w->cap_kv * sizeof *w->kv);
    }
    wkv *kv = &w->kv[w->n_kv++];
    kv->key = sg_xstrdup(key);
    sg_buf_init(&kv->val);
    return &kv->val;
}

static void set_scalar(gguf_writer *w, const char *key, gguf_type t, uint64_t bits) {
    sg_buf *b = kv_slot(w, key);
    put_u32(b, t);
    for (size_t i = 0; i < scalar_size(t); i++) sg_buf_putc(b, (char)(bits >> (8 * i)));
}

void gguf_set_u32(gguf_writer *w, const char *key, uint32_t v) { set_scalar(w, key, GGUF_U32, v); }
void gguf_set_i32(gguf_writer *w, const char *key, int32_t v) { set_scalar(w, key, GGUF_I32, (uint32_t)v); }
void gguf_set_u64(gguf_writer *w, const char *key, uint64_t v) { set_scalar(w, key, GGUF_U64, v); }
void gguf_set_bool(gguf_writer *w, const char *key, bool v) { set_scalar(w, key, GGUF_BOOL, v ? 1 : 0); }
void gguf_set_f32(gguf_writer *w, const char *key, float v) {
    uint32_t x;
    memcpy(&x, &v, 4);
    set_scalar(w, key, GGUF_F32, x);
}

void gguf_set_str(gguf_writer *w, const char *key, const char *v) {
    sg_buf *b = kv_slot(w, key);
    put_u32(b, GGUF_STRING);
    put_str(b, v ? v : "", v ? strlen(v) : 0);
}

static sg_buf *begin_array(gguf_writer *w, const char *key, gguf_type elem, size_t n) {
    sg_buf *b = kv_slot(w, key);
    put_u32(b, GGUF_ARRAY);
    put_u32(b, elem);
    put_u64(b, n);
    return b;
}

void gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *v, size_t n) {
    sg_buf *b = begin_array(w, key, GGUF_STRING, n);
    for (size_t i = 0; i < n; i++) put_str(b, v[i] ? v[i] : "", v[i] ? strlen(v[i]) : 0);
}
void gguf_set_arr_i32(gguf_writer *w, const char *key, const int32_t *v, size_t n) {
    sg_buf *b = begin_array(w, key, GGUF_I32, n);
    for (size_t i = 0; i < n; i++) put_u32(b, (uint32_t)v[i]);
}
void gguf_set_arr_f32(gguf_writer *w, const char *key, const float *v, size_t n) {
    sg_buf *b = begin_array(w, key, GGUF_F32, n);
    for (size_t i = 0; i < n; i++) { uint32_t x; memcpy(&x, &v[i], 4); put_u32(b, x); }
}

void gguf_set_value(gguf_writer *w, const char *key, const gguf_value *v) {
    switch (v->type) {
    case GGUF_STRING: {
        sg_buf *b = kv_slot(w, key);
        put_u32(b, GGUF_STRING);
        put_str(b, v->str.p, (size_t)v->str.n);
        return;
    }
    case GGUF_ARRAY: {
        size_t sz = scalar_size(v->arr.elem);
        if (v->arr.elem != GGUF_STRING && !sz) {
            writer_bad(w, "%s: cannot write an array of element type %u", key, v->arr.elem);
            return;
        }
        sg_buf *b = begin_array(w, key, v->arr.elem, (size_t)v->arr.n);
        if (v->arr.elem == GGUF_STRING)
            for (uint64_t i = 0; i < v->arr.n; i++) put_str(b, v->arr.strs[i].p, (size_t)v->arr.strs[i].n);
        else
            sg_buf_append(b, v->arr.data, (size_t)v->arr.n * sz);   /* already little-endian */
        return;
    }
    case GGUF_F32: { float x = (float)v->f; uint32_t bits; memcpy(&bits, &x, 4); set_scalar(w, key, GGUF_F32, bits); return; }
    case GGUF_F64: { uint64_t bits; memcpy(&bits, &v->f, 8); set_scalar(w, key, GGUF_F64, bits); return; }
    default:
        if (!scalar_size(v->type)) { writer_bad(w, "%s: cannot write a value of type %u", key, v->type); return; }
        set_scalar(w, key, v->type, is_signed(v->type) ? (uint64_t)v->i : v->u);
    }
}

void gguf_add_tensor(gguf_writer *w, const char *name, sg_dtype type, uint32_t n_dims,
                     const uint64_t *ne, const void *data, gguf_fill_fn fill, void *fill_ctx) {
    const sg_dtype_info *ti = dtype_info((uint32_t)type);
    if (!ti) { writer_bad(w, "tensor '%s': unknown tensor type %u", name, (unsigned)type); return; }
    if (n_dims > GGUF_MAX_DIMS) { writer_bad(w, "tensor '%s': %u dimensions (at most 4)", name, n_dims); return; }
    if (strlen(name) == 0 || strlen(name) >= GGUF_MAX_NAME) {
        writer_bad(w, "tensor '%s': name must be 1 to %u bytes long", name, GGUF_MAX_NAME - 1);
        return;
    }
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0) { writer_bad(w, "duplicate tensor name '%s'", name); return; }
    wtensor t = {.type = type, .n_dims = n_dims, .data = data, .fill = fill, .fill_ctx = fill_ctx};
    uint64_t rows = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] == 0 || t.ne[d] > (uint64_t)INT64_MAX) { writer_bad(w, "tensor '%s': dimension %u is 0 or too large", name, d); return; }
        if (d > 0) {
            if (rows > (uint64_t)INT64_MAX / t.ne[d]) { writer_bad(w, "tensor '%s': element count overflows", name); return; }
            rows *= t.ne[d];
        }
    }
    size_t row = dtype_row_bytes(type, t.ne[0]);
    if (row == 0) { writer_bad(w, "tensor '%s': ne[0] is not a multiple of the block size %u", name, ti->block_size); return; }
    if (rows > SIZE_MAX / row) { writer_bad(w, "tensor '%s': byte size overflows", name); return; }
    t.nbytes = row * (size_t)rows;
    if (w->n_t == w->cap_t) {
        w->cap_t = w->cap_t ? 2 * w->cap_t : 64;
        w->t = sg_xrealloc(w->t, w->cap_t * sizeof *w->t);
    }
    t.name = sg_xstrdup(name);
    w->t[w->n_t++] = t;
}

static int write_all(FILE *fp, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, fp) == n ? 0 : -1; }

static int write_pad(FILE *fp, uint64_t pos, uint64_t align) {
    static const unsigned char zeros[256];
    uint64_t pad = (align - pos % align) % align;
    while (pad > 0) {
        size_t k = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
        if (write_all(fp, zeros, k)) return -1;
        pad -= k;
    }
    return 0;
}

/* Alignment the file will be written with: general.alignment if set (any unsigned
 * integer type the setters produce), else 32. */
static int writer_alignment(const gguf_writer *w, uint64_t *out, sg_error *err) {
    *out = GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") != 0) continue;
        const unsigned char *p = (const unsigned char *)w->kv[i].val.data;
        if (le_u32(p) != GGUF_U32) return sg_fail(err, "general.alignment must be set as a u32");
        uint32_t a = le_u32(p + 4);
        if (a == 0 || (a & (a - 1))) return sg_fail(err, "general.alignment = %u is not a power of two", a);
        *out = a;
    }
    return 0;
}

#define FILL_CHUNK ((size_t)4 << 20)

static int write_tensor_data(FILE *fp, const wtensor *t, unsigned char **chunk, sg_error *err) {
    if (t->data) {
        if (write_all(fp, t->data, t->nbytes)) return sg_fail(err, "write failed: %s", strerror(errno));
        return 0;
    }
    if (!t->fill) return sg_fail(err, "tensor '%s' has neither data nor a fill callback", t->name);
    if (!*chunk) *chunk = sg_xmalloc(FILL_CHUNK);
    for (size_t done = 0; done < t->nbytes;) {
        size_t k = t->nbytes - done < FILL_CHUNK ? t->nbytes - done : FILL_CHUNK;
        if (t->fill(t->fill_ctx, *chunk, k)) return sg_fail(err, "tensor '%s': producing its data failed", t->name);
        if (write_all(fp, *chunk, k)) return sg_fail(err, "write failed: %s", strerror(errno));
        done += k;
    }
    return 0;
}

static int write_body(const gguf_writer *w, FILE *fp, uint64_t align, sg_error *err) {
    sg_buf b;
    sg_buf_init(&b);
    sg_buf_append(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, w->n_t);
    put_u64(&b, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        put_str(&b, w->kv[i].key, strlen(w->kv[i].key));
        sg_buf_append(&b, w->kv[i].val.data, w->kv[i].val.len);
        if (b.len >= FILL_CHUNK) {   /* big vocabularies: don't build the header twice */
            if (write_all(fp, b.data, b.len)) goto io;
            sg_buf_reset(&b);
        }
    }
    uint64_t pos = 0;   /* offset within the data section */
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        put_str(&b, t->name, strlen(t->name));
        put_u32(&b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) put_u64(&b, t->ne[d]);
        put_u32(&b, (uint32_t)t->type);
        put_u64(&b, pos);
        pos += (t->nbytes + align - 1) / align * align;
    }
    if (write_all(fp, b.data, b.len)) goto io;
    sg_buf_free(&b);
    off_t here = ftello(fp);
    if (here < 0 || write_pad(fp, (uint64_t)here, align)) return sg_fail(err, "write failed: %s", strerror(errno));
    unsigned char *chunk = NULL;
    int rc = 0;
    for (size_t i = 0; i < w->n_t && rc == 0; i++) {
        rc = write_tensor_data(fp, &w->t[i], &chunk, err);
        if (rc == 0 && write_pad(fp, w->t[i].nbytes, align)) rc = sg_fail(err, "write failed: %s", strerror(errno));
    }
    free(chunk);
    return rc;
io:
    sg_buf_free(&b);
    return sg_fail(err, "write failed: %s", strerror(errno));
}

int gguf_writer_write(gguf_writer *w, const char *path, sg_error *err) {
    if (w->has_bad) return sg_fail(err, "%s: %s", path, w->bad.msg);
    uint64_t align;
    if (writer_alignment(w, &align, err)) return sg_fail_wrap(err, "%s", path);

    /* Write beside the target (same file system, so rename is atomic) under a unique name. */
    static atomic_uint counter;
    sg_buf tmp;
    sg_buf_init(&tmp);
    int fd = -1;
    for (int tries = 0; tries < 100 && fd < 0; tries++) {
        sg_buf_reset(&tmp);
        sg_buf_printf(&tmp, "%s.tmp-%ld-%u", path, (long)getpid(), atomic_fetch_add(&counter, 1));
        fd = open(tmp.data, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        sg_fail(err, "cannot create %s: %s", tmp.data, strerror(errno));
        sg_buf_free(&tmp);
        return -1;
    }
    FILE *fp = fdopen(fd, "wb");
    if (!fp) { close(fd); unlink(tmp.data); sg_buf_free(&tmp); return sg_fail(err, "fdopen failed"); }
    int rc = write_body(w, fp, align, err);
    if (rc == 0 && (fflush(fp) != 0 || fsync(fileno(fp)) != 0)) rc = sg_fail(err, "write failed: %s", strerror(errno));
    if (fclose(fp) != 0 && rc == 0) rc = sg_fail(err, "write failed: %s", strerror(errno));
    if (rc == 0 && rename(tmp.data, path) != 0) rc = sg_fail(err, "cannot rename to %s: %s", path, strerror(errno));
    if (rc != 0) {
        unlink(tmp.data);
        sg_fail_wrap(err, "%s", path);
    }
    sg_buf_free(&tmp);
    return rc;
}
