/* test_gguf.c: the dtype table and conversions, the GGUF writer and reader (round trips
 * of every value type, llama.cpp's reference files read and rewritten byte for byte),
 * and the reader's defences against truncated and hostile files. */
#include "engine/gguf.h"
#include "common/buf.h"
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- dtype ---- */

static void test_dtype_table(void) {
    static const struct { int t; const char *name; uint32_t bs, ts; } want[] = {
        {0, "F32", 1, 4}, {1, "F16", 1, 2}, {2, "Q4_0", 32, 18}, {3, "Q4_1", 32, 20},
        {6, "Q5_0", 32, 22}, {7, "Q5_1", 32, 24}, {8, "Q8_0", 32, 34}, {9, "Q8_1", 32, 36},
        {10, "Q2_K", 256, 84}, {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144},
        {13, "Q5_K", 256, 176}, {14, "Q6_K", 256, 210}, {15, "Q8_K", 256, 292},
        {24, "I8", 1, 1}, {25, "I16", 1, 2}, {26, "I32", 1, 4}, {27, "I64", 1, 8},
        {28, "F64", 1, 8}, {30, "BF16", 1, 2},
    };
    int known = 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const sg_dtype_info *ti = dtype_info((uint32_t)want[i].t);
        CHECK(ti != NULL);
        if (!ti) continue;
        CHECK_EQ_STR(ti->name, want[i].name);
        CHECK_EQ_INT(ti->block_size, want[i].bs);
        CHECK_EQ_INT(ti->type_size, want[i].ts);
        CHECK_EQ_INT(dtype_from_name(want[i].name), want[i].t);
    }
    for (uint32_t t = 0; t < 64; t++) known += dtype_info(t) != NULL;
    CHECK_EQ_INT(known, 20);
    CHECK(dtype_info(4) == NULL);
    CHECK(dtype_info(SG_DTYPE_COUNT) == NULL);
    CHECK(dtype_info(UINT32_MAX) == NULL);
    CHECK_EQ_INT(dtype_from_name("q8_0"), SG_Q8_0);
    CHECK_EQ_INT(dtype_from_name("bf16"), SG_BF16);
    CHECK_EQ_INT(dtype_from_name("q4_k"), SG_Q4_K);
    CHECK_EQ_INT(dtype_from_name("Q4_K_M"), -1);
    CHECK_EQ_INT(dtype_from_name(""), -1);
    CHECK_EQ_INT(dtype_from_name(NULL), -1);
}

static void test_dtype_row_bytes(void) {
    CHECK_EQ_INT(dtype_row_bytes(SG_F32, 7), 28);
    CHECK_EQ_INT(dtype_row_bytes(SG_Q4_K, 256), 144);
    CHECK_EQ_INT(dtype_row_bytes(SG_Q4_K, 512), 288);
    CHECK_EQ_INT(dtype_row_bytes(SG_Q4_K, 100), 0);
    CHECK_EQ_INT(dtype_row_bytes(SG_Q8_0, 33), 0);
    CHECK_EQ_INT(dtype_row_bytes(SG_Q6_K, 4096), 16 * 210);
    CHECK_EQ_INT(dtype_row_bytes((sg_dtype)4, 32), 0);
    CHECK_EQ_INT(dtype_row_bytes(SG_F64, UINT64_MAX / 4), 0);       /* overflows size_t */
    CHECK_EQ_INT(dtype_row_bytes(SG_Q8_K, UINT64_MAX / 256 * 256), 0);
    CHECK_EQ_INT(dtype_row_bytes(SG_I8, 1ull << 40), 1ll << 40);
}

static uint32_t bits(float f) { uint32_t x; memcpy(&x, &f, 4); return x; }
static float from_bits(uint32_t x) { float f; memcpy(&f, &x, 4); return f; }

static void test_f16(void) {
    CHECK_EQ_INT(sg_f32_to_f16(1.0f), 0x3c00);
    CHECK_EQ_INT(sg_f32_to_f16(-2.0f), 0xc000);
    CHECK_EQ_INT(sg_f32_to_f16(65504.0f), 0x7bff);
    CHECK_EQ_INT(sg_f32_to_f16(65519.99f), 0x7bff);
    CHECK_EQ_INT(sg_f32_to_f16(65520.0f), 0x7c00);             /* ties to even: infinity */
    CHECK_EQ_INT(sg_f32_to_f16(1e10f), 0x7c00);
    CHECK_EQ_INT(sg_f32_to_f16(-INFINITY), 0xfc00);
    CHECK_EQ_INT(sg_f32_to_f16(0.0f), 0x0000);
    CHECK_EQ_INT(sg_f32_to_f16(-0.0f), 0x8000);
    CHECK_EQ_INT(sg_f32_to_f16(ldexpf(1, -24)), 0x0001);       /* smallest subnormal */
    CHECK_EQ_INT(sg_f32_to_f16(ldexpf(1, -25)), 0x0000);       /* tie, rounds to even 0 */
    CHECK_EQ_INT(sg_f32_to_f16(ldexpf(1.5f, -25)), 0x0001);
    CHECK_EQ_INT(sg_f32_to_f16(ldexpf(3, -25)), 0x0002);       /* 1.5 units: tie to even 2 */
    CHECK_EQ_INT(sg_f32_to_f16(ldexpf(1, -14)), 0x0400);       /* smallest normal */
    CHECK_EQ_INT(sg_f32_to_f16(ldexpf(1023.5f, -24)), 0x0400); /* rounds up into the normals */
    CHECK_EQ_INT(sg_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);  /* tie, even */
    CHECK_EQ_INT(sg_f32_to_f16(1.0f + ldexpf(3, -11)), 0x3c02);  /* tie, up to even */
    CHECK_EQ_INT(sg_f32_to_f16(1e-30f), 0);
    uint16_t n = sg_f32_to_f16(NAN);
    CHECK((n & 0x7c00) == 0x7c00 && (n & 0x3ff) != 0);
    n = sg_f32_to_f16(from_bits(0x7f800001));                  /* nan with a low payload */
    CHECK((n & 0x7c00) == 0x7c00 && (n & 0x3ff) != 0);
    CHECK(sg_f16_to_f32(0x7c00) == INFINITY);
    CHECK(sg_f16_to_f32(0xfc00) == -INFINITY);
    CHECK(isnan(sg_f16_to_f32(0x7e00)));
    CHECK(sg_f16_to_f32(0x0001) == ldexpf(1, -24));
    CHECK(sg_f16_to_f32(0x03ff) == ldexpf(1023, -24));
    CHECK(sg_f16_to_f32(0x3555) == 0.333251953125f);
    CHECK_EQ_INT(bits(sg_f16_to_f32(0x8000)), 0x80000000u);
    /* Every non-nan half survives the round trip exactly. */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sg_f16_to_f32((uint16_t)h);
        if (isnan(f)) { bad += !((h & 0x7c00) == 0x7c00 && (h & 0x3ff)); continue; }
        bad += sg_f32_to_f16(f) != h;
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_bf16(void) {
    CHECK_EQ_INT(sg_f32_to_bf16(1.0f), 0x3f80);
    CHECK_EQ_INT(sg_f32_to_bf16(from_bits(0x3f808000)), 0x3f80);  /* tie, even down */
    CHECK_EQ_INT(sg_f32_to_bf16(from_bits(0x3f818000)), 0x3f82);  /* tie, even up */
    CHECK_EQ_INT(sg_f32_to_bf16(from_bits(0x3f808001)), 0x3f81);
    CHECK_EQ_INT(sg_f32_to_bf16(from_bits(0x7f7fffff)), 0x7f80);  /* rounds to infinity */
    CHECK_EQ_INT(sg_f32_to_bf16(-INFINITY), 0xff80);
    CHECK_EQ_INT(sg_f32_to_bf16(from_bits(0x00000001)), 0x0000);
    uint16_t n = sg_f32_to_bf16(from_bits(0x7f800001));            /* would round to inf */
    CHECK((n & 0x7f80) == 0x7f80 && (n & 0x7f) != 0);
    n = sg_f32_to_bf16(from_bits(0xffffffff));
    CHECK((n & 0x7f80) == 0x7f80 && (n & 0x7f) != 0 && (n & 0x8000));
    CHECK(sg_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(sg_bf16_to_f32(0xc040) == -3.0f);
    int bad = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        float f = sg_bf16_to_f32((uint16_t)b);
        if (!isnan(f)) bad += sg_f32_to_bf16(f) != b;
    }
    CHECK_EQ_INT(bad, 0);
}

/* ---- writer / reader round trips ---- */

static bool str_is(gguf_str s, const char *c) { return gguf_str_eq(s, c); }

static bool file_exists(const char *p) { struct stat st; return stat(p, &st) == 0; }

/* Counts directory entries that start with prefix (to see no temp files are left). */
static int count_prefixed(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    if (d) closedir(d);
    return n;
}

static void put_le(unsigned char *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void test_roundtrip_metadata(void) {
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.architecture", "llama");
    gguf_set_u32(w, "k.u32", 4000000000u);
    gguf_set_i32(w, "k.i32", -7);
    gguf_set_u64(w, "k.u64", UINT64_MAX);
    gguf_set_f32(w, "k.f32", 0.125f);
    gguf_set_bool(w, "k.bool", true);
    gguf_set_bool(w, "k.false", false);
    gguf_set_str(w, "k.empty", "");
    gguf_set_str(w, "k.replaced", "first");
    const char *strs[] = {"a", "", "héllo", "with space"};
    gguf_set_arr_str(w, "k.arr_str", strs, 4);
    gguf_set_arr_str(w, "k.arr_str_empty", NULL, 0);
    int32_t ints[] = {1, -2, 2147483647, -2147483647 - 1};
    gguf_set_arr_i32(w, "k.arr_i32", ints, 4);
    gguf_set_arr_i32(w, "k.arr_i32_empty", NULL, 0);
    float fl[] = {1.5f, -0.0f, 1e30f};
    gguf_set_arr_f32(w, "k.arr_f32", fl, 3);
    /* The remaining types go through gguf_set_value. */
    gguf_value v = {.type = GGUF_U8, .u = 255};
    gguf_set_value(w, "k.u8", &v);
    v = (gguf_value){.type = GGUF_I8, .i = -128};
    gguf_set_value(w, "k.i8", &v);
    v = (gguf_value){.type = GGUF_U16, .u = 65535};
    gguf_set_value(w, "k.u16", &v);
    v = (gguf_value){.type = GGUF_I16, .i = -32768};
    gguf_set_value(w, "k.i16", &v);
    v = (gguf_value){.type = GGUF_I64, .i = INT64_MIN};
    gguf_set_value(w, "k.i64", &v);
    v = (gguf_value){.type = GGUF_F64, .f = 1.0 / 3.0};
    gguf_set_value(w, "k.f64", &v);
    v = (gguf_value){.type = GGUF_STRING, .str = {"abc", 2}};
    gguf_set_value(w, "k.strval", &v);
    /* Numeric arrays of every element type, raw little-endian. */
    static const gguf_type elems[] = {GGUF_U8, GGUF_I8, GGUF_U16, GGUF_I16, GGUF_U32, GGUF_I32,
                                      GGUF_F32, GGUF_BOOL, GGUF_U64, GGUF_I64, GGUF_F64};
    static const int esize[] = {1, 1, 2, 2, 4, 4, 4, 1, 8, 8, 8};
    unsigned char raw[11][3 * 8];
    for (int e = 0; e < 11; e++) {
        for (int i = 0; i < 3; i++) {
            uint64_t x = (uint64_t)(i + 1);
            if (elems[e] == GGUF_F32) { float f = (float)(i + 1) / 2; memcpy(&x, &f, 4); }
            if (elems[e] == GGUF_F64) { double d = (double)(i + 1) / 4; memcpy(&x, &d, 8); }
            if (elems[e] == GGUF_I8 || elems[e] == GGUF_I16 || elems[e] == GGUF_I64) x = (uint64_t)-(int64_t)(i + 1);
            put_le(raw[e] + i * esize[e], x, esize[e]);
        }
        char key[64];
        snprintf(key, sizeof key, "arr.%s", gguf_type_name(elems[e]));
        v = (gguf_value){.type = GGUF_ARRAY, .arr = {.elem = elems[e], .n = 3, .data = raw[e]}};
        gguf_set_value(w, key, &v);
        snprintf(key, sizeof key, "arr.%s.empty", gguf_type_name(elems[e]));
        v.arr.n = 0;
        gguf_set_value(w, key, &v);
    }
    gguf_set_str(w, "k.replaced", "second");   /* replaces in place */
    uint64_t ne[2] = {4, 2};
    float data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    gguf_add_tensor(w, "t", SG_F32, 2, ne, data, NULL, NULL);
    const char *path = tu_path("%s/meta.gguf", tu_tmpdir());
    sg_error err = {{0}};
    CHECK_MSG(gguf_writer_write(w, path, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);

    gguf_file f;
    CHECK_MSG(gguf_open(&f, path, &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(f.version, 3);
    CHECK_EQ_INT(f.alignment, 32);
    CHECK_EQ_INT(f.n_kv, 21 + 22);
    CHECK(str_is(f.kv[0].key, "general.architecture"));
    CHECK(str_is(f.kv[8].key, "k.replaced"));
    char *s = gguf_get_str(&f, "k.replaced");
    CHECK_EQ_STR(s, "second");
    free(s);
    s = gguf_get_str(&f, "k.empty");
    CHECK_EQ_STR(s, "");
    free(s);
    s = gguf_get_str(&f, "k.strval");
    CHECK_EQ_STR(s, "ab");
    free(s);
    CHECK(gguf_get_str(&f, "k.u32") == NULL);
    CHECK(gguf_get_str(&f, "missing") == NULL);
    uint64_t u;
    int64_t i;
    double d;
    bool b;
    CHECK(gguf_get_u64(&f, "k.u32", &u) == 0 && u == 4000000000u);
    CHECK(gguf_get_i64(&f, "k.u32", &i) == 0 && i == 4000000000ll);
    CHECK(gguf_get_i64(&f, "k.i32", &i) == 0 && i == -7);
    CHECK(gguf_get_u64(&f, "k.i32", &u) == -1);                  /* negative: no u64 */
    CHECK(gguf_get_u64(&f, "k.u64", &u) == 0 && u == UINT64_MAX);
    CHECK(gguf_get_i64(&f, "k.u64", &i) == -1);                  /* too large for i64 */
    CHECK(gguf_get_f64(&f, "k.f32", &d) == 0 && d == 0.125);
    CHECK(gguf_get_f64(&f, "k.i32", &d) == 0 && d == -7.0);
    CHECK(gguf_get_u64(&f, "k.f32", &u) == -1);                  /* float: not an integer */
    CHECK(gguf_get_bool(&f, "k.bool", &b) == 0 && b);
    CHECK(gguf_get_bool(&f, "k.false", &b) == 0 && !b);
    CHECK(gguf_get_bool(&f, "k.u8", &b) == -1);
    CHECK(gguf_get_u64(&f, "k.bool", &u) == -1);
    CHECK(gguf_get_u64(&f, "k.u8", &u) == 0 && u == 255);
    CHECK(gguf_get_i64(&f, "k.i8", &i) == 0 && i == -128);
    CHECK(gguf_get_u64(&f, "k.u16", &u) == 0 && u == 65535);
    CHECK(gguf_get_i64(&f, "k.i16", &i) == 0 && i == -32768);
    CHECK(gguf_get_i64(&f, "k.i64", &i) == 0 && i == INT64_MIN);
    CHECK(gguf_get_f64(&f, "k.f64", &d) == 0 && d == 1.0 / 3.0);
    CHECK(gguf_get_u64(&f, "missing", &u) == -1);
    CHECK(gguf_get_u64(&f, "k.str", &u) == -1);

    const gguf_kv *kv = gguf_find(&f, "k.arr_str");
    CHECK(kv && kv->v.type == GGUF_ARRAY && kv->v.arr.elem == GGUF_STRING && kv->v.arr.n == 4);
    if (kv && kv->v.arr.n == 4) {
        for (int j = 0; j < 4; j++) CHECK(str_is(kv->v.arr.strs[j], strs[j]));
        CHECK(gguf_arr_i64(&kv->v, 0, &i) == -1);
    }
    kv = gguf_find(&f, "k.arr_str_empty");
    CHECK(kv && kv->v.type == GGUF_ARRAY && kv->v.arr.elem == GGUF_STRING && kv->v.arr.n == 0);
    kv = gguf_find(&f, "k.arr_i32");
    CHECK(kv && kv->v.arr.elem == GGUF_I32 && kv->v.arr.n == 4);
    for (int j = 0; kv && j < 4; j++) CHECK(gguf_arr_i64(&kv->v, (uint64_t)j, &i) == 0 && i == ints[j]);
    if (kv) CHECK(gguf_arr_i64(&kv->v, 4, &i) == -1);
    kv = gguf_find(&f, "k.arr_i32_empty");
    CHECK(kv && kv->v.arr.n == 0 && gguf_arr_i64(&kv->v, 0, &i) == -1);
    kv = gguf_find(&f, "k.arr_f32");
    CHECK(kv && kv->v.arr.elem == GGUF_F32 && kv->v.arr.n == 3);
    for (int j = 0; kv && j < 3; j++) CHECK(gguf_arr_f64(&kv->v, (uint64_t)j, &d) == 0 && d == fl[j]);
    for (int e = 0; e < 11; e++) {
        char key[64];
        snprintf(key, sizeof key, "arr.%s", gguf_type_name(elems[e]));
        kv = gguf_find(&f, key);
        CHECK_MSG(kv && kv->v.type == GGUF_ARRAY && kv->v.arr.elem == elems[e] && kv->v.arr.n == 3, "%s", key);
        if (!kv) continue;
        CHECK(memcmp(kv->v.arr.data, raw[e], 3 * (size_t)esize[e]) == 0);
        for (int j = 0; j < 3; j++) {
            if (elems[e] == GGUF_BOOL) { CHECK(gguf_arr_f64(&kv->v, (uint64_t)j, &d) == -1); continue; }
            CHECK(gguf_arr_f64(&kv->v, (uint64_t)j, &d) == 0);
            if (elems[e] == GGUF_F32) CHECK(d == (j + 1) / 2.0);
            else if (elems[e] == GGUF_F64) CHECK(d == (j + 1) / 4.0);
            else if (elems[e] == GGUF_I8 || elems[e] == GGUF_I16 || elems[e] == GGUF_I64) CHECK(d == -(j + 1));
            else CHECK(d == j + 1);
        }
        snprintf(key, sizeof key, "arr.%s.empty", gguf_type_name(elems[e]));
        kv = gguf_find(&f, key);
        CHECK(kv && kv->v.arr.elem == elems[e] && kv->v.arr.n == 0);
    }
    const gguf_tensor *t = gguf_find_tensor(&f, "t");
    CHECK(t && t->nbytes == 32 && memcmp(t->data, data, 32) == 0);
    gguf_close(&f);
    gguf_close(&f);   /* closing twice is harmless */
}

typedef struct pattern { uint64_t at; int fail_after; int calls; } pattern;

/* A fill callback producing byte k of the tensor as (k * 7 + k / 251) & 255. */
static int fill_pattern(void *ctx, void *dst, size_t n) {
    pattern *p = ctx;
    if (p->fail_after >= 0 && p->calls >= p->fail_after) return -1;
    p->calls++;
    unsigned char *o = dst;
    for (size_t i = 0; i < n; i++, p->at++) o[i] = (unsigned char)((p->at * 7 + p->at / 251) & 255);
    return 0;
}

static bool pattern_ok(const unsigned char *d, size_t n) {
    for (size_t k = 0; k < n; k++)
        if (d[k] != (unsigned char)((k * 7 + k / 251) & 255)) return false;
    return true;
}

static void roundtrip_tensors(uint32_t align) {
    gguf_writer *w = gguf_writer_new();
    if (align) gguf_set_u32(w, "general.alignment", align);
    struct { const char *name; sg_dtype t; uint32_t nd; uint64_t ne[4]; } spec[] = {
        {"a.f32", SG_F32, 2, {3, 5}}, {"b.f16", SG_F16, 1, {7}}, {"c.q8_0", SG_Q8_0, 2, {64, 3}},
        {"d.q4_k", SG_Q4_K, 3, {256, 2, 3}}, {"e.bf16", SG_BF16, 4, {5, 1, 1, 2}},
        {"f.i32", SG_I32, 1, {1}}, {"g.q6_k", SG_Q6_K, 2, {512, 1}}, {"h.q4_0", SG_Q4_0, 2, {32, 7}},
        {"i.scalar", SG_F32, 0, {0}},
    };
    enum { NT = sizeof spec / sizeof spec[0] };
    unsigned char *bufs[NT];
    size_t sizes[NT];
    for (int i = 0; i < NT; i++) {
        uint64_t n = 1;
        for (uint32_t d = 1; d < spec[i].nd; d++) n *= spec[i].ne[d];
        sizes[i] = dtype_row_bytes(spec[i].t, spec[i].nd ? spec[i].ne[0] : 1) * n;
        bufs[i] = malloc(sizes[i]);
        for (size_t k = 0; k < sizes[i]; k++) bufs[i][k] = (unsigned char)(k * 13 + i);
        gguf_add_tensor(w, spec[i].name, spec[i].t, spec[i].nd, spec[i].ne, bufs[i], NULL, NULL);
    }
    /* A tensor larger than the writer's 4 MiB chunk, produced by a callback. */
    uint64_t big_ne[2] = {1 << 19, 3};
    pattern pat = {0, -1, 0};
    gguf_add_tensor(w, "z.big", SG_F32, 2, big_ne, NULL, fill_pattern, &pat);
    const char *path = tu_path("%s/tensors-%u.gguf", tu_tmpdir(), align);
    sg_error err = {{0}};
    CHECK_MSG(gguf_writer_write(w, path, &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(pat.calls, 2);   /* 6 MiB in 4 MiB chunks */
    gguf_writer_free(w);

    gguf_file f;
    CHECK_MSG(gguf_open(&f, path, &err) == 0, "%s", err.msg);
    uint64_t a = align ? align : 32;
    CHECK_EQ_INT(f.alignment, a);
    CHECK_EQ_INT(f.n_tensors, NT + 1);
    CHECK_EQ_INT(f.data_offset % a, 0);
    for (int i = 0; i < NT; i++) {
        const gguf_tensor *t = gguf_find_tensor(&f, spec[i].name);
        CHECK_MSG(t != NULL, "%s", spec[i].name);
        if (!t) continue;
        CHECK(t == &f.tensors[i]);
        CHECK_EQ_INT(t->type, spec[i].t);
        CHECK_EQ_INT(t->n_dims, spec[i].nd);
        for (uint32_t d = 0; d < 4; d++) CHECK_EQ_INT(t->ne[d], d < spec[i].nd ? spec[i].ne[d] : 1);
        CHECK_EQ_INT(t->nbytes, sizes[i]);
        CHECK_EQ_INT(t->offset % a, 0);
        CHECK(memcmp(t->data, bufs[i], sizes[i]) == 0);
        free(bufs[i]);
    }
    const gguf_tensor *big = gguf_find_tensor(&f, "z.big");
    CHECK(big && big->nbytes == (size_t)3 << 21 && pattern_ok(big->data, big->nbytes));
    CHECK(gguf_find_tensor(&f, "a.f3") == NULL);
    CHECK(gguf_find_tensor(&f, "a.f32x") == NULL);
    CHECK(gguf_find_tensor(&f, "") == NULL);
    /* llama.cpp pads after every tensor, the last one included. */
    CHECK_EQ_INT(f.map.size % a, 0);
    gguf_close(&f);
    remove(path);   /* 6 MiB */
}

static void test_roundtrip_tensors(void) {
    roundtrip_tensors(0);
    roundtrip_tensors(64);
    roundtrip_tensors(1);
}

static void test_writer_errors(void) {
    const char *dir = tu_path("%s/werr", tu_tmpdir());
    mkdir(dir, 0755);
    const char *path = tu_path("%s/out.gguf", dir);
    sg_error err = {{0}};
    uint64_t ne[1] = {1 << 21};   /* 8 MiB of F32: the callback fails on its second chunk */
    pattern pat = {0, 1, 0};
    gguf_writer *w = gguf_writer_new();
    gguf_add_tensor(w, "x", SG_F32, 1, ne, NULL, fill_pattern, &pat);
    CHECK(gguf_writer_write(w, path, &err) == -1);
    CHECK_MSG(strstr(err.msg, "tensor 'x'") != NULL, "%s", err.msg);
    CHECK(!file_exists(path));
    CHECK_EQ_INT(count_prefixed(dir, "out.gguf"), 0);   /* no temp file left either */
    gguf_writer_free(w);

    w = gguf_writer_new();
    gguf_set_u32(w, "general.alignment", 24);
    CHECK(gguf_writer_write(w, path, &err) == -1 && strstr(err.msg, "power of two"));
    gguf_writer_free(w);
    w = gguf_writer_new();
    gguf_set_u64(w, "general.alignment", 32);
    CHECK(gguf_writer_write(w, path, &err) == -1 && strstr(err.msg, "u32"));
    gguf_writer_free(w);
    uint64_t ne2[2] = {4, 4};
    float z[16] = {0};
    w = gguf_writer_new();
    gguf_add_tensor(w, "dup", SG_F32, 2, ne2, z, NULL, NULL);
    gguf_add_tensor(w, "dup", SG_F32, 2, ne2, z, NULL, NULL);
    CHECK(gguf_writer_write(w, path, &err) == -1 && strstr(err.msg, "duplicate tensor name 'dup'"));
    gguf_writer_free(w);
    w = gguf_writer_new();
    gguf_add_tensor(w, "0123456789012345678901234567890123456789012345678901234567890123", SG_F32, 2, ne2, z, NULL, NULL);
    CHECK(gguf_writer_write(w, path, &err) == -1 && strstr(err.msg, "name must be"));
    gguf_writer_free(w);
    w = gguf_writer_new();
    gguf_add_tensor(w, "q", SG_Q4_K, 2, ne2, z, NULL, NULL);
    CHECK(gguf_writer_write(w, path, &err) == -1 && strstr(err.msg, "block size"));
    gguf_writer_free(w);
    w = gguf_writer_new();
    gguf_add_tensor(w, "q", (sg_dtype)4, 2, ne2, z, NULL, NULL);
    CHECK(gguf_writer_write(w, path, &err) == -1 && strstr(err.msg, "unknown tensor type 4"));
    gguf_writer_free(w);
    w = gguf_writer_new();
    gguf_add_tensor(w, "nodata", SG_F32, 2, ne2, NULL, NULL, NULL);
    CHECK(gguf_writer_write(w, path, &err) == -1 && strstr(err.msg, "neither data nor"));
    gguf_writer_free(w);
    w = gguf_writer_new();
    gguf_value v = {.type = GGUF_ARRAY, .arr = {.elem = GGUF_ARRAY}};
    gguf_set_value(w, "nested", &v);
    CHECK(gguf_writer_write(w, path, &err) == -1 && strstr(err.msg, "nested"));
    gguf_writer_free(w);
    w = gguf_writer_new();
    CHECK(gguf_writer_write(w, tu_path("%s/no/such/dir/x.gguf", dir), &err) == -1);
    gguf_writer_free(w);
    CHECK_EQ_INT(count_prefixed(dir, ""), 2);   /* "." and ".." */
}

/* ---- llama.cpp's files ---- */

static const char *ref_gguf(const char *type) {
    return tu_path("%s/reference/llama-tiny/gguf/llama-tiny-%s.gguf", tu_shared(), type);
}

static void test_reference_q4_k_m(void) {
    gguf_file f;
    sg_error err = {{0}};
    CHECK_MSG(gguf_open(&f, ref_gguf("Q4_K_M"), &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(f.version, 3);
    CHECK_EQ_INT(f.alignment, 32);
    CHECK_EQ_INT(f.n_tensors, 29);   /* 3 layers x 9 + token_embd + output_norm (tied) */
    CHECK_EQ_INT(f.data_offset % 32, 0);
    char *arch = gguf_get_str(&f, "general.architecture");
    CHECK_EQ_STR(arch, "llama");
    free(arch);
    uint64_t u;
    double d;
    CHECK(gguf_get_u64(&f, "llama.block_count", &u) == 0 && u == 3);
    CHECK(gguf_get_u64(&f, "llama.embedding_length", &u) == 0 && u == 256);
    CHECK(gguf_get_u64(&f, "llama.attention.head_count_kv", &u) == 0 && u == 2);
    CHECK(gguf_get_f64(&f, "llama.rope.freq_base", &d) == 0 && d == 10000.0);
    CHECK(gguf_get_f64(&f, "llama.attention.layer_norm_rms_epsilon", &d) == 0 && fabs(d - 1e-5) < 1e-12);
    CHECK(gguf_get_u64(&f, "general.file_type", &u) == 0 && u == 15);   /* MOSTLY_Q4_K_M */
    const gguf_kv *tok = gguf_find(&f, "tokenizer.ggml.tokens");
    CHECK(tok && tok->v.type == GGUF_ARRAY && tok->v.arr.elem == GGUF_STRING && tok->v.arr.n == 1024);
    if (tok && tok->v.arr.n == 1024) CHECK(str_is(tok->v.arr.strs[5], "<t5>") && str_is(tok->v.arr.strs[1023], "<t1023>"));
    const gguf_kv *merges = gguf_find(&f, "tokenizer.ggml.merges");
    CHECK(merges && merges->v.arr.n == 1 && str_is(merges->v.arr.strs[0], "<t3> <t4>"));
    const gguf_kv *tt = gguf_find(&f, "tokenizer.ggml.token_type");
    int64_t i64;
    CHECK(tt && tt->v.arr.elem == GGUF_I32 && tt->v.arr.n == 1024 && gguf_arr_i64(&tt->v, 1023, &i64) == 0);

    const gguf_tensor *t = gguf_find_tensor(&f, "token_embd.weight");
    CHECK(t && t->type == SG_Q6_K && t->ne[0] == 256 && t->ne[1] == 1024 && t->n_dims == 2);
    t = gguf_find_tensor(&f, "blk.0.attn_q.weight");
    CHECK(t && t->type == SG_Q4_K && t->ne[0] == 256 && t->ne[1] == 256 && t->nbytes == 256 * 144);
    t = gguf_find_tensor(&f, "blk.2.ffn_down.weight");
    CHECK(t && (t->type == SG_Q4_K || t->type == SG_Q6_K) && t->ne[0] == 512 && t->ne[1] == 256);
    t = gguf_find_tensor(&f, "output_norm.weight");
    CHECK(t && t->type == SG_F32 && t->n_dims == 1 && t->ne[0] == 256 && t->nbytes == 1024);
    CHECK(gguf_find_tensor(&f, "output.weight") == NULL);
    CHECK(gguf_find_tensor(&f, "blk.3.attn_q.weight") == NULL);
    int q6 = 0;
    for (uint64_t i = 0; i < f.n_tensors; i++) {
        const gguf_tensor *x = &f.tensors[i];
        CHECK(x->offset % 32 == 0);
        CHECK((const unsigned char *)x->data >= f.map.data + f.data_offset);
        CHECK((const unsigned char *)x->data + x->nbytes <= f.map.data + f.map.size);
        q6 += x->type == SG_Q6_K;
    }
    CHECK(q6 >= 2);   /* Q4_K_M mixes in Q6_K (embeddings, some attn_v / ffn_down) */
    gguf_close(&f);
}

/* Reads each reference file, copies metadata and tensors into a writer, and checks the
 * rewrite is byte-identical: our layout is llama.cpp's. */
static void test_reference_rewrite(void) {
    const char *types[] = {"F32", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        gguf_file f;
        sg_error err = {{0}};
        const char *src = ref_gguf(types[k]);
        if (gguf_open(&f, src, &err)) { CHECK_MSG(0, "%s", err.msg); continue; }
        gguf_writer *w = gguf_writer_new();
        for (uint64_t i = 0; i < f.n_kv; i++) {
            char *key = sg_xstrndup(f.kv[i].key.p, (size_t)f.kv[i].key.n);
            gguf_set_value(w, key, &f.kv[i].v);
            free(key);
        }
        for (uint64_t i = 0; i < f.n_tensors; i++) {
            const gguf_tensor *t = &f.tensors[i];
            char *name = sg_xstrndup(t->name.p, (size_t)t->name.n);
            gguf_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data, NULL, NULL);
            free(name);
        }
        const char *out = tu_path("%s/rewrite-%s.gguf", tu_tmpdir(), types[k]);
        CHECK_MSG(gguf_writer_write(w, out, &err) == 0, "%s", err.msg);
        gguf_writer_free(w);
        size_t n1, n2;
        unsigned char *a = tu_read(src, &n1), *b = tu_read(out, &n2);
        CHECK_MSG(a && b && n1 == n2 && memcmp(a, b, n1) == 0, "%s rewrite differs", types[k]);
        remove(out);
        free(a);
        free(b);
        gguf_close(&f);
    }
}

/* ---- hostile files ---- */

/* A byte builder for hand-made GGUF images. */
static void b_u32(sg_buf *b, uint32_t v) { unsigned char p[4]; put_le(p, v, 4); sg_buf_append(b, p, 4); }
static void b_u64(sg_buf *b, uint64_t v) { unsigned char p[8]; put_le(p, v, 8); sg_buf_append(b, p, 8); }
static void b_str(sg_buf *b, const char *s) { b_u64(b, strlen(s)); sg_buf_puts(b, s); }
static void b_header(sg_buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    sg_buf_reset(b);
    sg_buf_append(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, n_tensors);
    b_u64(b, n_kv);
}
static void b_tensor(sg_buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off) {
    b_str(b, name);
    b_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) b_u64(b, ne[i]);
    b_u32(b, type);
    b_u64(b, off);
}
static void b_pad(sg_buf *b, size_t align, size_t extra) {
    while (b->len % align) sg_buf_putc(b, 0);
    for (size_t i = 0; i < extra; i++) sg_buf_putc(b, (char)i);
}

/* Parses b and expects an error containing want. */
#define EXPECT_ERR(b, want) do { \
        gguf_file f_; sg_error e_ = {{0}}; \
        int rc_ = gguf_parse(&f_, (const unsigned char *)(b)->data, (b)->len, &e_); \
        CHECK_MSG(rc_ == -1 && strstr(e_.msg, want) != NULL, "got %d \"%s\", want \"%s\"", rc_, e_.msg, want); \
        if (rc_ == 0) gguf_close(&f_); \
        CHECK(f_.kv == NULL && f_.tensors == NULL); \
    } while (0)
#define EXPECT_OK(b) do { \
        gguf_file f_; sg_error e_ = {{0}}; \
        int rc_ = gguf_parse(&f_, (const unsigned char *)(b)->data, (b)->len, &e_); \
        CHECK_MSG(rc_ == 0, "%s", e_.msg); \
        gguf_close(&f_); \
    } while (0)

static void test_bad_headers(void) {
    sg_buf b;
    sg_buf_init(&b);
    EXPECT_ERR(&b, "too small");
    b_header(&b, 3, 0, 0);
    EXPECT_OK(&b);
    b_header(&b, 2, 0, 0);
    EXPECT_OK(&b);
    b_header(&b, 1, 0, 0);
    EXPECT_ERR(&b, "version 1 is not supported");
    b_header(&b, 4, 0, 0);
    EXPECT_ERR(&b, "unsupported GGUF version 4");
    b_header(&b, 0x03000000, 0, 0);
    EXPECT_ERR(&b, "big-endian");
    b_header(&b, 3, 0, 0);
    b.data[0] = 'g';
    EXPECT_ERR(&b, "not a GGUF file");
    b_header(&b, 3, UINT64_MAX, 0);
    EXPECT_ERR(&b, "18446744073709551615 tensors");
    b_header(&b, 3, 0, UINT64_MAX);
    EXPECT_ERR(&b, "18446744073709551615 metadata entries");
    b_header(&b, 3, 1000, 1000);
    EXPECT_ERR(&b, "more than a 24-byte file can hold");
    sg_buf_free(&b);
}

static void test_bad_metadata(void) {
    sg_buf b;
    sg_buf_init(&b);
    b_header(&b, 3, 0, 1);
    b_u64(&b, 1000);   /* key length past the end */
    sg_buf_puts(&b, "abcdefgh");
    EXPECT_ERR(&b, "metadata entry 0: key of 1000 bytes exceeds the file size");

    b_header(&b, 3, 0, 1);
    b_str(&b, "tokenizer.ggml.tokens");
    b_u32(&b, GGUF_ARRAY);
    b_u32(&b, GGUF_STRING);
    b_u64(&b, 4294967295u);
    EXPECT_ERR(&b, "tokenizer.ggml.tokens: array of 4294967295 strings exceeds the file size");

    b_header(&b, 3, 0, 1);
    b_str(&b, "tokenizer.ggml.tokens");
    b_u32(&b, GGUF_ARRAY);
    b_u32(&b, GGUF_STRING);
    b_u64(&b, 2);
    b_str(&b, "ok");
    b_u64(&b, 99);
    sg_buf_puts(&b, "short");
    EXPECT_ERR(&b, "tokenizer.ggml.tokens: string 1 of 2 (99 bytes) exceeds the file size");

    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, GGUF_ARRAY);
    b_u32(&b, GGUF_F64);
    b_u64(&b, 1ull << 61);
    EXPECT_ERR(&b, "k: array of 2305843009213693952 f64 values exceeds the file size");

    b_header(&b, 3, 0, 1);
    b_str(&b, "general.name");
    b_u32(&b, GGUF_STRING);
    b_u64(&b, UINT64_MAX);
    EXPECT_ERR(&b, "general.name: string of 18446744073709551615 bytes exceeds the file size");

    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, 13);
    b_u64(&b, 0);
    EXPECT_ERR(&b, "k: unknown value type 13");

    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, GGUF_ARRAY);
    b_u32(&b, GGUF_ARRAY);
    b_u64(&b, 0);
    EXPECT_ERR(&b, "k: nested arrays are not supported");

    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, GGUF_ARRAY);
    b_u32(&b, 77);
    b_u64(&b, 0);
    EXPECT_ERR(&b, "k: array of unknown element type 77");

    b_header(&b, 3, 0, 2);
    b_str(&b, "same");
    b_u32(&b, GGUF_U8);
    sg_buf_putc(&b, 1);
    b_str(&b, "same");
    b_u32(&b, GGUF_U8);
    sg_buf_putc(&b, 2);
    EXPECT_ERR(&b, "duplicate metadata key same");

    b_header(&b, 3, 0, 1);
    b_str(&b, "");
    b_u32(&b, GGUF_U8);
    sg_buf_putc(&b, 1);
    EXPECT_ERR(&b, "empty key");

    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, GGUF_U64);
    b_u32(&b, 0);   /* 4 of 8 bytes */
    b_u32(&b, 0);
    b.len -= 1;
    EXPECT_ERR(&b, "k: u64 value cut off");

    /* Unprintable key bytes are shown as '?' in messages. */
    b_header(&b, 3, 0, 1);
    b_str(&b, "a\nb\x01");
    b_u32(&b, 99);
    b_u64(&b, 0);
    EXPECT_ERR(&b, "a?b?: unknown value type 99");

    /* general.alignment must be a u32 power of two. */
    const uint32_t aligns[] = {0, 3, 48};
    for (int i = 0; i < 3; i++) {
        b_header(&b, 3, 0, 1);
        b_str(&b, "general.alignment");
        b_u32(&b, GGUF_U32);
        b_u32(&b, aligns[i]);
        EXPECT_ERR(&b, "is not a power of two");
    }
    b_header(&b, 3, 0, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, GGUF_U64);
    b_u64(&b, 32);
    EXPECT_ERR(&b, "general.alignment must be a u32");
    sg_buf_free(&b);
}

static void test_bad_tensors(void) {
    sg_buf b;
    sg_buf_init(&b);
    uint64_t ne[5] = {8, 2, 1, 1, 1};

    /* A valid baseline: one F32 tensor of 64 bytes. */
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 2, ne, SG_F32, 0);
    b_pad(&b, 32, 64);
    EXPECT_OK(&b);
    b.len -= 1;
    EXPECT_ERR(&b, "tensor 'w': data at offset 0 (64 bytes) runs past the end of the file");

    b_header(&b, 3, 1, 0);
    b_tensor(&b, "blk.0.attn_q.weight", 2, ne, 23, 0);
    b_pad(&b, 32, 64);
    EXPECT_ERR(&b, "tensor 'blk.0.attn_q.weight': unknown tensor type 23");

    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 2, ne, SG_F32, 4096);
    b_pad(&b, 32, 64);
    EXPECT_ERR(&b, "tensor 'w': data at offset 4096");

    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 2, ne, SG_F32, UINT64_MAX - 31);
    b_pad(&b, 32, 64);
    EXPECT_ERR(&b, "runs past the end of the file");

    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 2, ne, SG_F32, 16);
    b_pad(&b, 32, 128);
    EXPECT_ERR(&b, "tensor 'w': offset 16 is not a multiple of the alignment 32");

    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 5, ne, SG_F32, 0);
    b_pad(&b, 32, 64);
    EXPECT_ERR(&b, "tensor 'w': 5 dimensions (at most 4)");

    uint64_t zero[2] = {8, 0};
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 2, zero, SG_F32, 0);
    b_pad(&b, 32, 64);
    EXPECT_ERR(&b, "tensor 'w': dimension 1 is 0");

    uint64_t huge[4] = {1ull << 32, 1ull << 32, 1, 1};
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 2, huge, SG_F32, 0);
    b_pad(&b, 32, 64);
    EXPECT_ERR(&b, "tensor 'w': element count overflows");

    uint64_t big[4] = {1ull << 61, 2, 1, 1};   /* 2^62 elements fit int64_t; 2^64 bytes do not */
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 2, big, SG_F32, 0);
    b_pad(&b, 32, 64);
    EXPECT_ERR(&b, "tensor 'w': byte size overflows");

    uint64_t odd[2] = {100, 2};
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 2, odd, SG_Q4_K, 0);
    b_pad(&b, 32, 64);
    EXPECT_ERR(&b, "tensor 'w': ne[0] = 100 is not a multiple of the Q4_K block size 256");

    b_header(&b, 3, 2, 0);
    b_tensor(&b, "w", 2, ne, SG_F32, 0);
    b_tensor(&b, "w", 2, ne, SG_F32, 64);
    b_pad(&b, 32, 128);
    EXPECT_ERR(&b, "duplicate tensor name 'w'");

    b_header(&b, 3, 2, 0);
    b_tensor(&b, "a", 2, ne, SG_F32, 32);
    b_tensor(&b, "b", 2, ne, SG_F32, 0);
    b_pad(&b, 32, 128);
    EXPECT_ERR(&b, "tensors 'b' and 'a' overlap");

    b_header(&b, 3, 1, 0);
    b_tensor(&b, "", 2, ne, SG_F32, 0);
    b_pad(&b, 32, 64);
    EXPECT_ERR(&b, "tensor 0 has an empty name");

    b_header(&b, 3, 2, 0);
    b_tensor(&b, "a", 2, ne, SG_F32, 0);
    b_u64(&b, 1ull << 40);
    EXPECT_ERR(&b, "tensor 1: name of 1099511627776 bytes exceeds the file size");

    /* Data must start at the aligned offset even when the infos end just short of it. */
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 2, ne, SG_F32, 0);
    EXPECT_ERR(&b, "past the end");

    /* Tensors in a different order from their data, and with an alignment of 64. */
    b_header(&b, 3, 2, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, GGUF_U32);
    b_u32(&b, 64);
    b_tensor(&b, "second", 2, ne, SG_F32, 64);
    b_tensor(&b, "first", 2, ne, SG_F32, 0);
    b_pad(&b, 64, 128);
    EXPECT_OK(&b);
    sg_buf_free(&b);
}

/* Writes a small valid file whose last byte is tensor data (no trailing padding), so
 * that every shorter prefix is invalid. */
static unsigned char *small_valid_file(size_t *n) {
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.architecture", "llama");
    gguf_set_u32(w, "llama.block_count", 3);
    const char *toks[] = {"<s>", "</s>", "a", "", "bc"};
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, 5);
    int32_t types[] = {3, 3, 1, 1, 1};
    gguf_set_arr_i32(w, "tokenizer.ggml.token_type", types, 5);
    gguf_set_f32(w, "llama.rope.freq_base", 10000.0f);
    gguf_set_bool(w, "b", true);
    gguf_set_arr_i32(w, "empty", NULL, 0);
    uint64_t ne1[2] = {3, 2}, ne2[2] = {32, 2}, ne3[1] = {16};
    float a[6] = {1, 2, 3, 4, 5, 6};
    unsigned char q[68];
    for (int i = 0; i < 68; i++) q[i] = (unsigned char)i;
    uint16_t h[16];
    for (int i = 0; i < 16; i++) h[i] = sg_f32_to_f16((float)i);
    gguf_add_tensor(w, "a", SG_F32, 2, ne1, a, NULL, NULL);
    gguf_add_tensor(w, "q", SG_Q8_0, 2, ne2, q, NULL, NULL);
    gguf_add_tensor(w, "h", SG_F16, 1, ne3, h, NULL, NULL);   /* 32 bytes: ends aligned */
    const char *path = tu_path("%s/small.gguf", tu_tmpdir());
    sg_error err = {{0}};
    CHECK_MSG(gguf_writer_write(w, path, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    return tu_read(path, n);
}

static void test_truncated_prefixes(void) {
    size_t n;
    unsigned char *full = small_valid_file(&n);
    if (!full) { CHECK(0); return; }
    gguf_file f;
    sg_error err = {{0}};
    CHECK_MSG(gguf_parse(&f, full, n, &err) == 0, "%s", err.msg);
    gguf_close(&f);
    int accepted = 0;
    for (size_t len = 0; len < n; len++) {
        /* A heap copy of exactly len bytes, so ASan sees any read past the end. */
        unsigned char *p = malloc(len ? len : 1);
        memcpy(p, full, len);
        if (gguf_parse(&f, p, len, &err) == 0) { accepted++; gguf_close(&f); }
        else CHECK(err.msg[0] != 0);
        free(p);
    }
    CHECK_EQ_INT(accepted, 0);
    free(full);
}

/* Every single-byte corruption of the small file: parse must never crash or leak; when
 * it succeeds, every tensor must lie in the image. */
static void test_corrupted_bytes(void) {
    size_t n;
    unsigned char *full = small_valid_file(&n);
    if (!full) { CHECK(0); return; }
    static const unsigned char vals[] = {0x00, 0xff, 0x80, 0x01, 0x7f, 0x20};
    int crashes = 0, ok = 0;
    unsigned char *p = malloc(n);
    for (size_t i = 0; i < n; i++) {
        for (size_t v = 0; v < sizeof vals; v++) {
            memcpy(p, full, n);
            p[i] ^= vals[v] ? vals[v] : 0x55;
            gguf_file f;
            sg_error err;
            if (gguf_parse(&f, p, n, &err) != 0) continue;
            ok++;
            for (uint64_t t = 0; t < f.n_tensors; t++) {
                const unsigned char *d = f.tensors[t].data;
                crashes += d < p || d + f.tensors[t].nbytes > p + n;
            }
            gguf_close(&f);
        }
    }
    CHECK_EQ_INT(crashes, 0);
    CHECK(ok > 0);   /* flipping a data byte leaves a valid file */
    free(p);
    free(full);
}

static void test_open_errors(void) {
    gguf_file f;
    sg_error err = {{0}};
    CHECK(gguf_open(&f, "/nonexistent/x.gguf", &err) == -1 && strstr(err.msg, "/nonexistent/x.gguf"));
    CHECK(f.kv == NULL && f.map.data == NULL);
    gguf_close(&f);
    const char *p = tu_path("%s/empty.gguf", tu_tmpdir());
    tu_write(p, "", 0);
    CHECK(gguf_open(&f, p, &err) == -1 && strstr(err.msg, "too small") && strstr(err.msg, "empty.gguf"));
    CHECK(gguf_open(&f, tu_tmpdir(), &err) == -1);
    CHECK(gguf_open(&f, tu_path("%s/reference/llama-tiny/f32/model.safetensors", tu_shared()), &err) == -1 &&
          strstr(err.msg, "not a GGUF file"));
}

/* 1000 tensors and a 128k-entry string array: lookups stay fast (hash for tensors). */
static void test_many(void) {
    gguf_writer *w = gguf_writer_new();
    enum { NV = 131072, NT = 1000 };
    char **toks = malloc(NV * sizeof *toks);
    for (int i = 0; i < NV; i++) { toks[i] = malloc(16); snprintf(toks[i], 16, "tok%d", i); }
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, NV);
    for (int i = 0; i < 30; i++) gguf_set_u32(w, tu_path("key.%d", i), (uint32_t)i);
    float z[4] = {0};
    uint64_t ne[1] = {4};
    for (int i = 0; i < NT; i++) gguf_add_tensor(w, tu_path("blk.%d.weight", i), SG_F32, 1, ne, z, NULL, NULL);
    const char *path = tu_path("%s/many.gguf", tu_tmpdir());
    sg_error err = {{0}};
    CHECK_MSG(gguf_writer_write(w, path, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    gguf_file f;
    CHECK_MSG(gguf_open(&f, path, &err) == 0, "%s", err.msg);
    const gguf_kv *kv = gguf_find(&f, "tokenizer.ggml.tokens");
    CHECK(kv && kv->v.arr.n == NV && str_is(kv->v.arr.strs[NV - 1], toks[NV - 1]));
    int found = 0;
    for (int r = 0; r < 100; r++)
        for (int i = 0; i < NT; i++) {
            const gguf_tensor *t = gguf_find_tensor(&f, tu_path("blk.%d.weight", i));
            found += t == &f.tensors[i];
        }
    CHECK_EQ_INT(found, 100 * NT);
    uint64_t u;
    CHECK(gguf_get_u64(&f, "key.29", &u) == 0 && u == 29);
    gguf_close(&f);
    remove(path);
    for (int i = 0; i < NV; i++) free(toks[i]);
    free(toks);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_dtype_table);
    RUN(test_dtype_row_bytes);
    RUN(test_f16);
    RUN(test_bf16);
    RUN(test_roundtrip_metadata);
    RUN(test_roundtrip_tensors);
    RUN(test_writer_errors);
    RUN(test_reference_q4_k_m);
    RUN(test_reference_rewrite);
    RUN(test_bad_headers);
    RUN(test_bad_metadata);
    RUN(test_bad_tensors);
    RUN(test_truncated_prefixes);
    RUN(test_corrupted_bytes);
    RUN(test_open_errors);
    RUN(test_many);
    return tu_finish(argv[0]);
}
