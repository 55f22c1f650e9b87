/* test_safetensors.c: the safetensors reader (Hugging Face reference files, hostile
 * headers, truncation), the writer (round trips, byte-identical rewrites of the
 * reference files) and sharded snapshots resolved through model.safetensors.index.json. */
#include "engine/safetensors.h"
#include "common/buf.h"
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *ref(const char *model, const char *kind) {
    return tu_path("%s/reference/%s/%s/model.safetensors", tu_shared(), model, kind);
}

static float f32_at(const st_tensor *t, size_t i) {
    float f;
    memcpy(&f, (const unsigned char *)t->data + 4 * i, 4);
    return f;
}
static uint16_t u16_at(const st_tensor *t, size_t i) {
    uint16_t v;
    memcpy(&v, (const unsigned char *)t->data + 2 * i, 2);
    return v;
}

static void test_reference_smollm3(void) {
    st_file f32, bf16;
    sg_error err = {{0}};
    CHECK_MSG(st_open(&f32, ref("smollm3-tiny", "f32"), &err) == 0, "%s", err.msg);
    CHECK_MSG(st_open(&bf16, ref("smollm3-tiny", "bf16"), &err) == 0, "%s", err.msg);
    /* 4 layers x 9 tensors + embed_tokens + norm; embeddings are tied (no lm_head). */
    CHECK_EQ_INT(f32.n_tensors, 38);
    CHECK_EQ_INT(bf16.n_tensors, 38);
    CHECK_EQ_STR(st_metadata(&f32, "format"), "pt");
    CHECK(st_metadata(&f32, "nope") == NULL);
    const st_tensor *e = st_find(&f32, "model.embed_tokens.weight");
    CHECK(e && e->dtype == SG_F32 && e->n_dims == 2 && e->shape[0] == 1024 && e->shape[1] == 256 &&
          e->nbytes == 1024 * 256 * 4);
    const st_tensor *n = st_find(&f32, "model.norm.weight");
    CHECK(n && n->n_dims == 1 && n->shape[0] == 256);
    const st_tensor *k = st_find(&f32, "model.layers.3.self_attn.k_proj.weight");
    CHECK(k && k->shape[0] == 64 && k->shape[1] == 256);   /* 2 KV heads x head_dim 32 */
    const st_tensor *d = st_find(&f32, "model.layers.0.mlp.down_proj.weight");
    CHECK(d && d->shape[0] == 256 && d->shape[1] == 512);
    CHECK(st_find(&f32, "model.layers.4.self_attn.k_proj.weight") == NULL);
    CHECK(st_find(&f32, "lm_head.weight") == NULL);
    CHECK(st_find(&f32, "__metadata__") == NULL);
    for (size_t i = 1; i < f32.n_tensors; i++) CHECK(strcmp(f32.tensors[i - 1].name, f32.tensors[i].name) < 0);
    for (size_t i = 0; i < f32.n_tensors; i++) {
        const st_tensor *t = &f32.tensors[i];
        CHECK(st_find(&f32, t->name) == t);
        CHECK((const unsigned char *)t->data >= f32.map.data + 8 &&
              (const unsigned char *)t->data + t->nbytes <= f32.map.data + f32.map.size);
        /* The bf16 file is the f32 weights rounded to nearest even: check every value. */
        const st_tensor *b = st_find(&bf16, t->name);
        CHECK(b && b->dtype == SG_BF16 && b->nbytes * 2 == t->nbytes);
        if (!b) continue;
        size_t bad = 0;
        for (size_t j = 0; j < t->nbytes / 4; j++) bad += sg_f32_to_bf16(f32_at(t, j)) != u16_at(b, j);
        CHECK_MSG(bad == 0, "%s: %zu bf16 values differ", t->name, bad);
    }
    st_close(&f32);
    st_close(&bf16);
    st_close(&bf16);   /* closing twice is harmless */
}

/* Copies a file's tensors into st_write_tensor entries. */
static st_write_tensor *as_write(const st_file *f) {
    st_write_tensor *w = calloc(f->n_tensors + 1, sizeof *w);
    for (size_t i = 0; i < f->n_tensors; i++) {
        w[i].name = f->tensors[i].name;
        w[i].dtype = f->tensors[i].dtype;
        w[i].n_dims = f->tensors[i].n_dims;
        memcpy(w[i].shape, f->tensors[i].shape, sizeof w[i].shape);
        w[i].data = f->tensors[i].data;
    }
    return w;
}

/* The writer reproduces the reference files (written by Hugging Face's safetensors)
 * byte for byte: same key order, same padding. */
static void test_reference_rewrite(void) {
    const char *files[][2] = {{"smollm3-tiny", "f32"}, {"smollm3-tiny", "bf16"}, {"llama-tiny", "f32"}, {"llama-tiny", "bf16"}};
    for (size_t k = 0; k < 4; k++) {
        st_file f;
        sg_error err = {{0}};
        const char *src = ref(files[k][0], files[k][1]);
        if (st_open(&f, src, &err)) { CHECK_MSG(0, "%s", err.msg); continue; }
        st_write_tensor *w = as_write(&f);
        /* Reverse the input order: the writer sorts by name itself. */
        for (size_t i = 0; i < f.n_tensors / 2; i++) {
            st_write_tensor x = w[i];
            w[i] = w[f.n_tensors - 1 - i];
            w[f.n_tensors - 1 - i] = x;
        }
        const char *meta[] = {"format", "pt"};
        const char *out = tu_path("%s/rewrite.safetensors", tu_tmpdir());
        CHECK_MSG(st_write_meta(out, w, f.n_tensors, meta, 1, &err) == 0, "%s", err.msg);
        size_t n1, n2;
        unsigned char *a = tu_read(src, &n1), *b = tu_read(out, &n2);
        CHECK_MSG(a && b && n1 == n2 && memcmp(a, b, n1) == 0, "%s/%s rewrite differs", files[k][0], files[k][1]);
        free(a);
        free(b);
        free(w);
        remove(out);
        st_close(&f);
    }
}

static void test_roundtrip(void) {
    static const float fa[6] = {1, -2, 3.5f, 0, 1e-3f, 6};
    static const double da[3] = {1.0 / 3, -2, 1e300};
    static const int8_t i8[5] = {-128, -1, 0, 1, 127};
    static const int16_t i16[2] = {-32768, 32767};
    static const int32_t i32[3] = {INT32_MIN, 0, INT32_MAX};
    static const int64_t i64[1] = {INT64_MIN};
    uint16_t h[4], bf[4];
    for (int i = 0; i < 4; i++) { h[i] = sg_f32_to_f16((float)i); bf[i] = sg_f32_to_bf16((float)-i); }
    float scalar = 42;
    st_write_tensor t[] = {
        {"z.f32", SG_F32, 2, {2, 3}, fa},
        {"a.f16", SG_F16, 1, {4}, h},
        {"b.bf16", SG_BF16, 3, {1, 2, 2}, bf},
        {"c.f64", SG_F64, 1, {3}, da},
        {"d.i8", SG_I8, 1, {5}, i8},
        {"e.i16", SG_I16, 2, {2, 1}, i16},
        {"f.i32", SG_I32, 1, {3}, i32},
        {"g.i64", SG_I64, 8, {1, 1, 1, 1, 1, 1, 1, 1}, i64},
        {"h.scalar", SG_F32, 0, {0}, &scalar},
        {"i.empty", SG_F32, 2, {0, 5}, NULL},
        {"name with \"quotes\" and \\ and \xc3\xa9", SG_F32, 1, {1}, &scalar},
    };
    enum { NT = sizeof t / sizeof t[0] };
    const char *path = tu_path("%s/rt.safetensors", tu_tmpdir());
    sg_error err = {{0}};
    CHECK_MSG(st_write(path, t, NT, &err) == 0, "%s", err.msg);
    size_t len;
    unsigned char *raw = tu_read(path, &len);
    if (raw) {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = hl << 8 | raw[i];
        CHECK(hl % 8 == 0 && hl < len && raw[8] == '{' && raw[8 + hl - 1] == ' ');
        free(raw);
    }
    st_file f;
    CHECK_MSG(st_open(&f, path, &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(f.n_tensors, NT);
    CHECK_EQ_INT(f.n_meta, 0);
    for (int i = 0; i < NT; i++) {
        const st_tensor *r = st_find(&f, t[i].name);
        CHECK_MSG(r != NULL, "%s", t[i].name);
        if (!r) continue;
        CHECK_EQ_INT(r->dtype, t[i].dtype);
        CHECK_EQ_INT(r->n_dims, t[i].n_dims);
        size_t n = dtype_info(t[i].dtype)->type_size;
        for (uint32_t d = 0; d < t[i].n_dims; d++) { CHECK_EQ_INT(r->shape[d], t[i].shape[d]); n *= t[i].shape[d]; }
        CHECK_EQ_INT(r->nbytes, n);
        CHECK(n == 0 || memcmp(r->data, t[i].data, n) == 0);
    }
    st_close(&f);
}

static bool file_exists(const char *p) { struct stat st; return stat(p, &st) == 0; }

static void test_writer_errors(void) {
    float x[4] = {0};
    const char *dir = tu_path("%s/werr", tu_tmpdir());
    mkdir(dir, 0755);
    const char *path = tu_path("%s/out.safetensors", dir);
    sg_error err = {{0}};
    st_write_tensor dup[2] = {{"a", SG_F32, 1, {4}, x}, {"a", SG_F32, 1, {4}, x}};
    CHECK(st_write(path, dup, 2, &err) == -1 && strstr(err.msg, "duplicate tensor name 'a'"));
    st_write_tensor q[1] = {{"q", SG_Q4_K, 1, {256}, x}};
    CHECK(st_write(path, q, 1, &err) == -1 && strstr(err.msg, "no dtype"));
    st_write_tensor nodata[1] = {{"n", SG_F32, 1, {4}, NULL}};
    CHECK(st_write(path, nodata, 1, &err) == -1 && strstr(err.msg, "no data"));
    st_write_tensor rank[1] = {{"r", SG_F32, 9, {1}, x}};
    CHECK(st_write(path, rank, 1, &err) == -1 && strstr(err.msg, "rank 9"));
    st_write_tensor huge[1] = {{"h", SG_F32, 2, {1ull << 40, 1ull << 40}, x}};
    CHECK(st_write(path, huge, 1, &err) == -1 && strstr(err.msg, "overflows"));
    st_write_tensor meta[1] = {{"__metadata__", SG_F32, 1, {4}, x}};
    CHECK(st_write(path, meta, 1, &err) == -1);
    CHECK(!file_exists(path));
    CHECK(st_write(tu_path("%s/no/such/dir/x.safetensors", dir), NULL, 0, &err) == -1);
    DIR *dd = opendir(dir);
    int entries = 0;
    while (dd && readdir(dd)) entries++;
    if (dd) closedir(dd);
    CHECK_EQ_INT(entries, 2);   /* nothing left behind */
    /* An empty file (no tensors) is valid. */
    CHECK(st_write(path, NULL, 0, &err) == 0);
    st_file f;
    CHECK_MSG(st_open(&f, path, &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(f.n_tensors, 0);
    st_close(&f);
}

/* ---- sharded snapshots ---- */

static void write_text(const char *path, const char *text) { CHECK(tu_write(path, text, strlen(text)) == 0); }

static void test_sharded(void) {
    const char *dir = tu_path("%s/sharded", tu_tmpdir());
    mkdir(dir, 0755);
    float a[4] = {1, 2, 3, 4}, b[2] = {5, 6}, c[3] = {7, 8, 9}, x[1] = {10};
    st_write_tensor s1[] = {{"model.a", SG_F32, 2, {2, 2}, a}, {"model.b", SG_F32, 1, {2}, b}};
    st_write_tensor s2[] = {{"model.c", SG_F32, 1, {3}, c}, {"model.unlisted", SG_F32, 1, {1}, x}};
    sg_error err = {{0}};
    CHECK(st_write(tu_path("%s/model-00001-of-00002.safetensors", dir), s1, 2, &err) == 0);
    CHECK(st_write(tu_path("%s/model-00002-of-00002.safetensors", dir), s2, 2, &err) == 0);
    const char *index = tu_path("%s/model.safetensors.index.json", dir);
    write_text(index,
               "{\"metadata\": {\"total_size\": 36},\n"
               " \"weight_map\": {\"model.c\": \"model-00002-of-00002.safetensors\",\n"
               "                 \"model.a\": \"model-00001-of-00002.safetensors\",\n"
               "                 \"model.b\": \"model-00001-of-00002.safetensors\"}}\n");
    /* A decoy single file: with an index present it must be ignored. */
    CHECK(st_write(tu_path("%s/model.safetensors", dir), s2, 1, &err) == 0);
    st_set s;
    CHECK_MSG(st_set_open(&s, dir, &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(s.n_files, 2);   /* each distinct shard once */
    CHECK_EQ_INT(s.n_routes, 3);
    const st_tensor *t = st_set_find(&s, "model.a");
    CHECK(t && t->nbytes == 16 && f32_at(t, 3) == 4);
    t = st_set_find(&s, "model.b");
    CHECK(t && t->nbytes == 8 && f32_at(t, 1) == 6);
    t = st_set_find(&s, "model.c");
    CHECK(t && t->nbytes == 12 && f32_at(t, 2) == 9);
    CHECK(st_set_find(&s, "model.unlisted") == NULL);   /* the weight_map decides */
    CHECK(st_set_find(&s, "model.d") == NULL);
    st_set_close(&s);
    st_set_close(&s);

    /* Failures: each names the problem. */
    struct { const char *json, *want; } bad[] = {
        {"{\"weight_map\": {\"model.x\": \"model-00001-of-00002.safetensors\"}}", "weight_map names tensor 'model.x'"},
        {"{\"weight_map\": {\"model.a\": \"../model-00001-of-00002.safetensors\"}}", "not a file name"},
        {"{\"weight_map\": {\"model.a\": \"/etc/passwd\"}}", "not a file name"},
        {"{\"weight_map\": {\"model.a\": \"..\"}}", "not a file name"},
        {"{\"weight_map\": {\"model.a\": 3}}", "not a file name"},
        {"{\"weight_map\": {\"model.a\": \"missing.safetensors\"}}", "missing.safetensors"},
        {"{\"weight_map\": []}", "no weight_map"},
        {"{\"nothing\": 1}", "no weight_map"},
        {"[1, 2]", "no weight_map"},
        {"{\"weight_map\": {\"model.a\": \"x\", \"model.a\": \"y\"}}", "duplicate"},
        {"{\"weight_map\": {", "model.safetensors.index.json"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(index, bad[i].json);
        err.msg[0] = 0;
        CHECK_MSG(st_set_open(&s, dir, &err) == -1 && strstr(err.msg, bad[i].want), "case %zu: \"%s\"", i, err.msg);
        CHECK(s.files == NULL && s.routes == NULL && s.n_files == 0);
        st_set_close(&s);
    }
    /* A shard that fails to parse: the error names it. */
    write_text(tu_path("%s/broken.safetensors", dir), "not safetensors");
    write_text(index, "{\"weight_map\": {\"model.a\": \"model-00001-of-00002.safetensors\", \"model.z\": \"broken.safetensors\"}}");
    CHECK(st_set_open(&s, dir, &err) == -1 && strstr(err.msg, "broken.safetensors"));

    /* Without an index: the single file. */
    remove(index);
    CHECK_MSG(st_set_open(&s, dir, &err) == 0, "%s", err.msg);
    CHECK(s.n_files == 1 && s.routes == NULL);
    t = st_set_find(&s, "model.c");
    CHECK(t && f32_at(t, 0) == 7);
    CHECK(st_set_find(&s, "model.a") == NULL);
    st_set_close(&s);
    remove(tu_path("%s/model.safetensors", dir));
    CHECK(st_set_open(&s, dir, &err) == -1 && strstr(err.msg, "neither"));
    CHECK(st_set_open(&s, "/nonexistent", &err) == -1);

    /* The reference snapshot folder. */
    CHECK_MSG(st_set_open(&s, tu_path("%s/reference/smollm3-tiny/bf16", tu_shared()), &err) == 0, "%s", err.msg);
    t = st_set_find(&s, "model.layers.2.mlp.up_proj.weight");
    CHECK(t && t->dtype == SG_BF16 && t->shape[0] == 512 && t->shape[1] == 256);
    st_set_close(&s);
}

/* ---- hostile files ---- */

/* Builds a file from a header string and data bytes (the header is not padded). */
static void build(sg_buf *b, const char *header, size_t data_len) {
    sg_buf_reset(b);
    uint64_t n = strlen(header);
    for (int i = 0; i < 8; i++) sg_buf_putc(b, (char)(n >> (8 * i)));
    sg_buf_puts(b, header);
    for (size_t i = 0; i < data_len; i++) sg_buf_putc(b, (char)i);
}

#define EXPECT_ERR(b, want) do { \
        st_file f_; sg_error e_ = {{0}}; \
        int rc_ = st_parse(&f_, (const unsigned char *)(b)->data, (b)->len, &e_); \
        CHECK_MSG(rc_ == -1 && strstr(e_.msg, want) != NULL, "got %d \"%s\", want \"%s\"", rc_, e_.msg, want); \
        if (rc_ == 0) st_close(&f_); \
        CHECK(f_.tensors == NULL && f_.meta == NULL); \
    } while (0)
#define EXPECT_OK(b) do { \
        st_file f_; sg_error e_ = {{0}}; \
        int rc_ = st_parse(&f_, (const unsigned char *)(b)->data, (b)->len, &e_); \
        CHECK_MSG(rc_ == 0, "%s", e_.msg); \
        st_close(&f_); \
    } while (0)

static void test_bad_files(void) {
    sg_buf b;
    sg_buf_init(&b);
    EXPECT_ERR(&b, "too small");
    build(&b, "{}", 0);
    EXPECT_OK(&b);
    build(&b, "{}  ", 0);
    EXPECT_OK(&b);
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    EXPECT_OK(&b);
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 7);
    EXPECT_ERR(&b, "past the data area");
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 9);
    EXPECT_ERR(&b, "tensors cover 8 of the 9 data bytes");
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
    EXPECT_ERR(&b, "tensor 'a': shape and dtype make 12 bytes but data_offsets span 8");
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8);
    EXPECT_ERR(&b, "end 0 < begin 8");
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    EXPECT_ERR(&b, "tensor 'a': data starts at 4, leaving a hole after 0");
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    EXPECT_ERR(&b, "overlaps");
    build(&b, "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2);
    EXPECT_ERR(&b, "tensor 'a': dtype U8 is not supported");
    build(&b, "{\"mask\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2);
    EXPECT_ERR(&b, "tensor 'mask': dtype BOOL is not supported");
    build(&b, "{\"a\":{\"shape\":[2],\"data_offsets\":[0,2]}}", 2);
    EXPECT_ERR(&b, "missing dtype");
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,2]}}", 2);
    EXPECT_ERR(&b, "missing shape");
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4);
    EXPECT_ERR(&b, "rank 9");
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4);
    EXPECT_OK(&b);
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4);
    EXPECT_ERR(&b, "shape[0] is not a non-negative integer");
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4);
    EXPECT_ERR(&b, "shape[0]");
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4);
    EXPECT_ERR(&b, "overflows");
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4);
    EXPECT_ERR(&b, "data_offsets is not [begin, end]");
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,-4]}}", 4);
    EXPECT_ERR(&b, "data_offsets is not [begin, end]");
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}", 4);
    EXPECT_ERR(&b, "header JSON");
    build(&b, "{\"a\":[]}", 0);
    EXPECT_ERR(&b, "tensor 'a': entry is not an object");
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    EXPECT_ERR(&b, "duplicate");
    build(&b, "{\"__metadata__\":{\"format\":1}}", 0);
    EXPECT_ERR(&b, "__metadata__: value of \"format\" is not a string");
    build(&b, "{\"__metadata__\":[]}", 0);
    EXPECT_ERR(&b, "__metadata__ is not an object");
    build(&b, "{\"__metadata__\":{\"format\":\"pt\",\"x\":\"y\"}}", 0);
    EXPECT_OK(&b);
    build(&b, "[]", 0);
    EXPECT_ERR(&b, "does not start with '{'");
    build(&b, " {}", 0);
    EXPECT_ERR(&b, "does not start with '{'");
    build(&b, "", 0);
    EXPECT_ERR(&b, "does not start with '{'");
    build(&b, "{\"a\":", 0);
    EXPECT_ERR(&b, "header JSON");
    build(&b, "{} x", 0);
    EXPECT_ERR(&b, "header JSON");
    build(&b, "{\"\xff\":1}", 0);
    EXPECT_ERR(&b, "header JSON");   /* not UTF-8 */
    build(&b, "{\"a\\u0000b\":{}}", 0);
    EXPECT_ERR(&b, "header JSON");   /* NUL in a name */
    /* Zero-size tensors sit anywhere in the tiling. */
    build(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
              "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4,8]}}", 8);
    EXPECT_OK(&b);
    /* The header length field. */
    build(&b, "{}", 0);
    b.data[0] = 3;
    EXPECT_ERR(&b, "header length 3 exceeds the file size (10 bytes)");
    memset(b.data, 0xff, 8);
    EXPECT_ERR(&b, "header length 18446744073709551615 exceeds the file size");
    sg_buf_free(&b);
}

/* A header over 100 MB is refused even when the file is that large (a sparse file). */
static void test_header_cap(void) {
    const char *path = tu_path("%s/huge-header.safetensors", tu_tmpdir());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    if (fd < 0) return;
    unsigned char hdr[9] = {0};
    uint64_t n = 100000001;
    for (int i = 0; i < 8; i++) hdr[i] = (unsigned char)(n >> (8 * i));
    hdr[8] = '{';
    CHECK(write(fd, hdr, 9) == 9);
    CHECK(ftruncate(fd, 8 + (off_t)n) == 0);
    close(fd);
    st_file f;
    sg_error err = {{0}};
    CHECK(st_open(&f, path, &err) == -1 && strstr(err.msg, "exceeds the limit of 100000000 bytes"));
    remove(path);
}

static unsigned char *small_valid_file(size_t *n) {
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[3] = {1, 2, 3};
    int8_t c[5] = {1, 2, 3, 4, 5};
    st_write_tensor t[] = {
        {"model.a", SG_F32, 2, {3, 2}, a}, {"model.h", SG_BF16, 1, {3}, h}, {"model.c", SG_I8, 1, {5}, c},
    };
    const char *meta[] = {"format", "pt"};
    const char *path = tu_path("%s/small.safetensors", tu_tmpdir());
    sg_error err = {{0}};
    CHECK_MSG(st_write_meta(path, t, 3, meta, 1, &err) == 0, "%s", err.msg);
    return tu_read(path, n);
}

static void test_truncated_prefixes(void) {
    size_t n;
    unsigned char *full = small_valid_file(&n);
    if (!full) { CHECK(0); return; }
    st_file f;
    sg_error err = {{0}};
    CHECK_MSG(st_parse(&f, full, n, &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(f.n_tensors, 3);
    st_close(&f);
    int accepted = 0;
    for (size_t len = 0; len < n; len++) {
        unsigned char *p = malloc(len ? len : 1);   /* exact size: ASan sees overreads */
        memcpy(p, full, len);
        if (st_parse(&f, p, len, &err) == 0) { accepted++; st_close(&f); }
        free(p);
    }
    CHECK_EQ_INT(accepted, 0);
    free(full);
}

static void test_corrupted_bytes(void) {
    size_t n;
    unsigned char *full = small_valid_file(&n);
    if (!full) { CHECK(0); return; }
    unsigned char *p = malloc(n);
    int outside = 0, ok = 0;
    for (size_t i = 0; i < n; i++) {
        for (int v = 0; v < 4; v++) {
            static const unsigned char vals[] = {0x01, 0x80, 0xff, 0x10};
            memcpy(p, full, n);
            p[i] ^= vals[v];
            st_file f;
            sg_error err;
            if (st_parse(&f, p, n, &err) != 0) continue;
            ok++;
            for (size_t t = 0; t < f.n_tensors; t++) {
                const unsigned char *d = f.tensors[t].data;
                outside += d < p + 8 || d + f.tensors[t].nbytes > p + n;
            }
            st_close(&f);
        }
    }
    CHECK_EQ_INT(outside, 0);
    CHECK(ok > 0);
    free(p);
    free(full);
}

static void test_open_errors(void) {
    st_file f;
    sg_error err = {{0}};
    CHECK(st_open(&f, "/nonexistent/model.safetensors", &err) == -1 && strstr(err.msg, "/nonexistent"));
    CHECK(f.tensors == NULL);
    st_close(&f);
    CHECK(st_open(&f, tu_path("%s/reference/llama-tiny/gguf/llama-tiny-Q4_0.gguf", tu_shared()), &err) == -1 &&
          strstr(err.msg, "llama-tiny-Q4_0.gguf"));
    CHECK(st_dtype_name(SG_BF16) && strcmp(st_dtype_name(SG_BF16), "BF16") == 0);
    CHECK(st_dtype_name(SG_Q4_K) == NULL);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_reference_smollm3);
    RUN(test_reference_rewrite);
    RUN(test_roundtrip);
    RUN(test_writer_errors);
    RUN(test_sharded);
    RUN(test_bad_files);
    RUN(test_header_cap);
    RUN(test_truncated_prefixes);
    RUN(test_corrupted_bytes);
    RUN(test_open_errors);
    return tu_finish(argv[0]);
}
