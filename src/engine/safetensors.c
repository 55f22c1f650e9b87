/* safetensors.c: the safetensors reader, writer and sharded-snapshot resolver (see
 * safetensors.h for the contract).
 *
 * Hugging Face ships SmolLM3 as safetensors; reading them directly (mapped, no copy)
 * spares users a conversion step. The header is JSON, parsed with jansson; everything it
 * claims is checked against the file before a pointer into the mapping is handed out,
 * following the rules of the specification's reference implementation. */
#include "engine/safetensors.h"
#include "common/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER 100000000ull   /* the reference implementation's limit */
#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"

static const struct { const char *name; sg_dtype t; } g_dtypes[] = {
    {"F32", SG_F32}, {"F16", SG_F16}, {"BF16", SG_BF16}, {"F64", SG_F64},
    {"I8", SG_I8}, {"I16", SG_I16}, {"I32", SG_I32}, {"I64", SG_I64},
};
#define N_DTYPES (sizeof g_dtypes / sizeof g_dtypes[0])

const char *st_dtype_name(sg_dtype t) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (g_dtypes[i].t == t) return g_dtypes[i].name;
    return NULL;
}

static int dtype_of(const char *name, sg_dtype *out) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (strcmp(g_dtypes[i].name, name) == 0) { *out = g_dtypes[i].t; return 0; }
    return -1;
}

/* Bytes of a tensor of this dtype and shape; -1 on overflow. */
static int tensor_bytes(sg_dtype t, uint32_t n_dims, const uint64_t *shape, uint64_t *out) {
    uint64_t n = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (shape[d] && n > UINT64_MAX / shape[d]) return -1;
        n *= shape[d];
    }
    uint64_t sz = dtype_info((uint32_t)t)->type_size;
    if (n > SIZE_MAX / sz) return -1;
    *out = n * sz;
    return 0;
}

/* A JSON integer that is >= 0. */
static int json_u64(const json_t *j, uint64_t *out) {
    if (!json_is_integer(j) || json_integer_value(j) < 0) return -1;
    *out = (uint64_t)json_integer_value(j);
    return 0;
}

/* ---- reading ---- */

typedef struct span { uint64_t begin, end; size_t i; } span;

static int by_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}
static int by_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static void release(st_file *f) {
    for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (size_t i = 0; i < 2 * f->n_meta; i++) free(f->meta[i]);
    free(f->meta);
    f->tensors = NULL;
    f->n_tensors = 0;
    f->meta = NULL;
    f->n_meta = 0;
}

static int read_metadata(st_file *f, const json_t *m, sg_error *err) {
    if (!json_is_object(m)) return sg_fail(err, "__metadata__ is not an object");
    f->meta = sg_xcalloc(2 * json_object_size(m) + 1, sizeof(char *));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)m, k, v) {
        if (!json_is_string(v)) return sg_fail(err, "__metadata__: value of \"%.64s\" is not a string", k);
        f->meta[2 * f->n_meta] = sg_xstrdup(k);
        f->meta[2 * f->n_meta + 1] = sg_xstrdup(json_string_value(v));
        f->n_meta++;
    }
    return 0;
}

/* Fills t from one header entry; data_size is the size of the data area. */
static int read_entry(st_tensor *t, const char *name, const json_t *e, uint64_t data_size,
                      span *sp, sg_error *err) {
    if (!json_is_object(e)) return sg_fail(err, "tensor '%.64s': entry is not an object", name);
    const json_t *dt = json_object_get(e, "dtype"), *sh = json_object_get(e, "shape"),
                 *off = json_object_get(e, "data_offsets");
    if (!json_is_string(dt)) return sg_fail(err, "tensor '%.64s': missing dtype", name);
    if (dtype_of(json_string_value(dt), &t->dtype))
        return sg_fail(err, "tensor '%.64s': dtype %.16s is not supported (F32, F16, BF16, F64, I8, I16, I32, I64 are)",
                       name, json_string_value(dt));
    if (!json_is_array(sh)) return sg_fail(err, "tensor '%.64s': missing shape", name);
    if (json_array_size(sh) > ST_MAX_DIMS)
        return sg_fail(err, "tensor '%.64s': rank %zu (at most %d)", name, json_array_size(sh), ST_MAX_DIMS);
    t->n_dims = (uint32_t)json_array_size(sh);
    for (uint32_t d = 0; d < t->n_dims; d++)
        if (json_u64(json_array_get(sh, d), &t->shape[d]))
            return sg_fail(err, "tensor '%.64s': shape[%u] is not a non-negative integer", name, d);
    uint64_t begin, end, nbytes;
    if (!json_is_array(off) || json_array_size(off) != 2 || json_u64(json_array_get(off, 0), &begin) ||
        json_u64(json_array_get(off, 1), &end))
        return sg_fail(err, "tensor '%.64s': data_offsets is not [begin, end]", name);
    if (end < begin) return sg_fail(err, "tensor '%.64s': data_offsets end %llu < begin %llu", name,
                                    (unsigned long long)end, (unsigned long long)begin);
    if (end > data_size)
        return sg_fail(err, "tensor '%.64s': data_offsets end %llu is past the data area (%llu bytes)", name,
                       (unsigned long long)end, (unsigned long long)data_size);
    if (tensor_bytes(t->dtype, t->n_dims, t->shape, &nbytes))
        return sg_fail(err, "tensor '%.64s': size of the shape overflows", name);
    if (nbytes != end - begin)
        return sg_fail(err, "tensor '%.64s': shape and dtype make %llu bytes but data_offsets span %llu", name,
                       (unsigned long long)nbytes, (unsigned long long)(end - begin));
    t->nbytes = (size_t)nbytes;
    sp->begin = begin;
    sp->end = end;
    return 0;
}

static int parse(st_file *f, const unsigned char *data, size_t size, sg_error *err) {
    if (size < 8) return sg_fail(err, "%zu bytes is too small for a safetensors header", size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | data[i];
    if (n > size - 8)
        return sg_fail(err, "header length %llu exceeds the file size (%zu bytes)", (unsigned long long)n, size);
    if (n > ST_MAX_HEADER)
        return sg_fail(err, "header length %llu exceeds the limit of %llu bytes", (unsigned long long)n, ST_MAX_HEADER);
    if (n == 0 || data[8] != '{') return sg_fail(err, "header does not start with '{'");
    uint64_t data_size = size - 8 - n;
    const unsigned char *base = data + 8 + n;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)data + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return sg_fail(err, "header JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
    if (!json_is_object(root)) { json_decref(root); return sg_fail(err, "header JSON is not an object"); }

    size_t cap = json_object_size(root);
    f->tensors = sg_xcalloc(cap + 1, sizeof(st_tensor));
    span *spans = sg_xcalloc(cap + 1, sizeof(span));
    int rc = 0;
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v) {
        if (strcmp(k, "__metadata__") == 0) {
            if ((rc = read_metadata(f, v, err))) break;
            continue;
        }
        st_tensor *t = &f->tensors[f->n_tensors];
        if ((rc = read_entry(t, k, v, data_size, &spans[f->n_tensors], err))) break;
        t->data = base + spans[f->n_tensors].begin;
        t->name = sg_xstrdup(k);
        spans[f->n_tensors].i = f->n_tensors;
        f->n_tensors++;
    }
    json_decref(root);
    if (rc == 0) {
        /* The tensors must tile [0, data_size) exactly. */
        qsort(spans, f->n_tensors, sizeof *spans, by_span);
        uint64_t at = 0;
        for (size_t i = 0; i < f->n_tensors && rc == 0; i++) {
            if (spans[i].begin != at) {
                const char *nm = f->tensors[spans[i].i].name;
                rc = spans[i].begin > at
                    ? sg_fail(err, "tensor '%.64s': data starts at %llu, leaving a hole after %llu", nm,
                              (unsigned long long)spans[i].begin, (unsigned long long)at)
                    : sg_fail(err, "tensor '%.64s': data at %llu overlaps the previous tensor (ends at %llu)", nm,
                              (unsigned long long)spans[i].begin, (unsigned long long)at);
            }
            at = spans[i].end;
        }
        if (rc == 0 && at != data_size)
            rc = sg_fail(err, "tensors cover %llu of the %llu data bytes", (unsigned long long)at,
                         (unsigned long long)data_size);
    }
    free(spans);
    if (rc == 0) qsort(f->tensors, f->n_tensors, sizeof *f->tensors, by_name);
    return rc;
}

int st_parse(st_file *f, const unsigned char *data, size_t size, sg_error *err) {
    memset(f, 0, sizeof *f);
    if (parse(f, data, size, err)) {
        release(f);
        return -1;
    }
    return 0;
}

int st_open(st_file *f, const char *path, sg_error *err) {
    sg_mapfile map;
    memset(f, 0, sizeof *f);
    if (sg_mapfile_open(&map, path, err)) return -1;
    if (st_parse(f, map.data, map.size, err)) {
        sg_mapfile_close(&map);
        return sg_fail_wrap(err, "%s", path);
    }
    f->map = map;
    return 0;
}

void st_close(st_file *f) {
    if (!f) return;
    release(f);
    sg_mapfile_close(&f->map);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    size_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->tensors[mid].name);
        if (c == 0) return &f->tensors[mid];
        if (c < 0) hi = mid; else lo = mid + 1;
    }
    return NULL;
}

const char *st_metadata(const st_file *f, const char *key) {
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

/* ---- sharded snapshots ---- */

static int by_route(const void *a, const void *b) {
    return strcmp(((const st_route *)a)->name, ((const st_route *)b)->name);
}

static bool plain_file_name(const char *s) {
    return s[0] && strcmp(s, ".") != 0 && strcmp(s, "..") != 0 && !strchr(s, '/');
}

static char *join(const char *dir, const char *name) {
    sg_buf b;
    sg_buf_init(&b);
    sg_buf_printf(&b, "%s/%s", dir, name);
    return sg_buf_steal(&b);
}

/* Reads the index and opens its shards into s (which st_set_close cleans on failure). */
static int open_index(st_set *s, const char *dir, const char *index_path, sg_error *err) {
    size_t len;
    char *text = sg_read_file(index_path, &len, err);
    if (!text) return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root) return sg_fail(err, "%s: %s (line %d, column %d)", index_path, jerr.text, jerr.line, jerr.column);
    const json_t *wm = json_object_get(root, "weight_map");
    int rc = 0;
    if (!json_is_object(wm)) {
        json_decref(root);
        return sg_fail(err, "%s: no weight_map object", index_path);
    }
    size_t n = json_object_size(wm);
    s->routes = sg_xcalloc(n + 1, sizeof(st_route));
    const char **shard_names = sg_xcalloc(n + 1, sizeof(char *));   /* distinct, borrowed */
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)wm, k, v) {
        const char *shard = json_string_value(v);
        if (!shard || !plain_file_name(shard)) {
            rc = sg_fail(err, "%s: weight_map[\"%.64s\"] is not a file name in the snapshot folder", index_path, k);
            break;
        }
        size_t j = 0;
        while (j < s->n_files && strcmp(shard_names[j], shard) != 0) j++;
        if (j == s->n_files) shard_names[s->n_files++] = shard;
        s->routes[s->n_routes].name = sg_xstrdup(k);
        s->routes[s->n_routes].file = j;
        s->n_routes++;
    }
    size_t n_shards = s->n_files;
    s->n_files = 0;
    if (rc == 0) s->files = sg_xcalloc(n_shards + 1, sizeof(st_file));
    for (size_t j = 0; rc == 0 && j < n_shards; j++) {
        char *p = join(dir, shard_names[j]);
        rc = st_open(&s->files[j], p, err);
        free(p);
        if (rc == 0) s->n_files++;
    }
    for (size_t i = 0; rc == 0 && i < s->n_routes; i++)
        if (!st_find(&s->files[s->routes[i].file], s->routes[i].name))
            rc = sg_fail(err, "%s: weight_map names tensor '%.64s' in %s, which lacks it", index_path,
                         s->routes[i].name, shard_names[s->routes[i].file]);
    free(shard_names);
    json_decref(root);
    if (rc == 0) qsort(s->routes, s->n_routes, sizeof *s->routes, by_route);
    return rc;
}

int st_set_open(st_set *s, const char *dir, sg_error *err) {
    memset(s, 0, sizeof *s);
    char *index = join(dir, ST_INDEX_NAME);
    struct stat sb;
    int rc;
    if (stat(index, &sb) == 0) {
        rc = open_index(s, dir, index, err);
    } else {
        char *single = join(dir, ST_SINGLE_NAME);
        s->files = sg_xcalloc(1, sizeof(st_file));
        if (stat(single, &sb) != 0)
            rc = sg_fail(err, "%s: neither %s nor %s found", dir, ST_INDEX_NAME, ST_SINGLE_NAME);
        else if ((rc = st_open(&s->files[0], single, err)) == 0)
            s->n_files = 1;
        free(single);
    }
    free(index);
    if (rc) st_set_close(s);
    return rc;
}

void st_set_close(st_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_files; i++) st_close(&s->files[i]);
    for (size_t i = 0; i < s->n_routes; i++) free(s->routes[i].name);
    free(s->files);
    free(s->routes);
    memset(s, 0, sizeof *s);
}

const st_tensor *st_set_find(const st_set *s, const char *name) {
    if (!s->routes) return s->n_files ? st_find(&s->files[0], name) : NULL;
    st_route key = {.name = (char *)name};
    const st_route *r = bsearch(&key, s->routes, s->n_routes, sizeof *s->routes, by_route);
    return r ? st_find(&s->files[r->file], name) : NULL;
}

/* ---- writing ---- */

static int by_write_name(const void *a, const void *b) {
    return strcmp((*(const st_write_tensor *const *)a)->name, (*(const st_write_tensor *const *)b)->name);
}

static int write_all(FILE *fp, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, fp) == n ? 0 : -1; }

/* Checks the tensors and builds the padded header; order receives them in name order. */
static int build_header(const st_write_tensor *t, size_t n, const char *const *meta, size_t n_meta,
                        const st_write_tensor **order, uint64_t *sizes, sg_buf *h, sg_error *err) {
    for (size_t i = 0; i < n; i++) order[i] = &t[i];
    qsort(order, n, sizeof *order, by_write_name);
    sg_buf_putc(h, '{');
    if (n_meta) {
        sg_buf_puts(h, "\"__metadata__\":{");
        for (size_t i = 0; i < n_meta; i++) {
            if (i) sg_buf_putc(h, ',');
            sg_buf_json_str(h, meta[2 * i], strlen(meta[2 * i]));
            sg_buf_putc(h, ':');
            sg_buf_json_str(h, meta[2 * i + 1], strlen(meta[2 * i + 1]));
        }
        sg_buf_putc(h, '}');
    }
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const st_write_tensor *w = order[i];
        const char *dn = st_dtype_name(w->dtype);
        if (!w->name || strcmp(w->name, "__metadata__") == 0)
            return sg_fail(err, "tensor %zu has no usable name", i);
        if (i > 0 && strcmp(order[i - 1]->name, w->name) == 0)
            return sg_fail(err, "duplicate tensor name '%.64s'", w->name);
        if (!dn) return sg_fail(err, "tensor '%.64s': safetensors has no dtype for type %d", w->name, (int)w->dtype);
        if (w->n_dims > ST_MAX_DIMS)
            return sg_fail(err, "tensor '%.64s': rank %u (at most %d)", w->name, w->n_dims, ST_MAX_DIMS);
        if (tensor_bytes(w->dtype, w->n_dims, w->shape, &sizes[i]) || sizes[i] > UINT64_MAX - at)
            return sg_fail(err, "tensor '%.64s': size overflows", w->name);
        if (sizes[i] && !w->data) return sg_fail(err, "tensor '%.64s' has no data", w->name);
        if (n_meta || i) sg_buf_putc(h, ',');
        sg_buf_json_str(h, w->name, strlen(w->name));
        sg_buf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", dn);
        for (uint32_t d = 0; d < w->n_dims; d++)
            sg_buf_printf(h, "%s%llu", d ? "," : "", (unsigned long long)w->shape[d]);
        sg_buf_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)at,
                      (unsigned long long)(at + sizes[i]));
        at += sizes[i];
    }
    sg_buf_putc(h, '}');
    while (h->len % 8) sg_buf_putc(h, ' ');   /* keeps the data 8-byte aligned */
    return 0;
}

int st_write_meta(const char *path, const st_write_tensor *t, size_t n,
                  const char *const *meta, size_t n_meta, sg_error *err) {
    const st_write_tensor **order = sg_xcalloc(n + 1, sizeof *order);
    uint64_t *sizes = sg_xcalloc(n + 1, sizeof *sizes);
    sg_buf h, tmp;
    sg_buf_init(&h);
    sg_buf_init(&tmp);
    int rc = build_header(t, n, meta, n_meta, order, sizes, &h, err);
    FILE *fp = NULL;
    bool created = false;
    if (rc == 0) {
        /* Write beside the target under a unique name; rename makes it appear whole. */
        static atomic_uint counter;
        int fd = -1;
        for (int tries = 0; tries < 100 && fd < 0; tries++) {
            sg_buf_reset(&tmp);
            sg_buf_printf(&tmp, "%s.tmp-%ld-%u", path, (long)getpid(), atomic_fetch_add(&counter, 1));
            fd = open(tmp.data, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
            if (fd < 0 && errno != EEXIST) break;
        }
        if (fd < 0) rc = sg_fail(err, "cannot create %s: %s", tmp.data, strerror(errno));
        else if (!(fp = fdopen(fd, "wb"))) { close(fd); rc = sg_fail(err, "fdopen failed"); }
        created = fd >= 0;
    }
    if (rc == 0) {
        unsigned char len[8];
        for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
        bool bad = write_all(fp, len, 8) || write_all(fp, h.data, h.len);
        for (size_t i = 0; i < n && !bad; i++) bad = write_all(fp, order[i]->data, (size_t)sizes[i]);
        if (bad || fflush(fp) != 0 || fsync(fileno(fp)) != 0) rc = sg_fail(err, "write failed: %s", strerror(errno));
    }
    if (fp && fclose(fp) != 0 && rc == 0) rc = sg_fail(err, "write failed: %s", strerror(errno));
    if (rc == 0 && rename(tmp.data, path) != 0) rc = sg_fail(err, "cannot rename to %s: %s", path, strerror(errno));
    if (rc != 0) {
        if (created) unlink(tmp.data);
        sg_fail_wrap(err, "%s", path);
    }
    sg_buf_free(&h);
    sg_buf_free(&tmp);
    free(order);
    free(sizes);
    return rc;
}

int st_write(const char *path, const st_write_tensor *t, size_t n, sg_error *err) {
    return st_write_meta(path, t, n, NULL, 0, err);
}
