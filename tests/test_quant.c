/* test_quant.c: the GGUF block formats (quant.c) and the quantizer (quantize.c):
 * hand-built blocks decoded as the GGUF format defines them; quantize / dequantize round
 * trips; every SIMD dot against the scalar one on real blocks from llama.cpp's files;
 * the forward pass on llama.cpp's quantized reference files against their exact logits
 * (scalar path to float rounding, the int8 path at least as close as llama.cpp); the
 * quantizer's files against llama-quantize's, byte for byte; and the type recipes. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/infer.h"
#include "engine/kernels.h"
#include "engine/model.h"
#include "engine/quant.h"
#include "engine/quantize.h"
#include "testutil.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) {   /* uniform in [-1, 1) */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static float grand(void) { return (frand() + frand() + frand()) * 0.6f; }   /* roughly normal */

static const char *ref_dir(void) { return tu_path("%s/reference/llama-tiny", tu_shared()); }

/* ---- blocks built by hand from the format's definition ---- */

static void test_q4_0_block(void) {
    quant_q4_0 b = {.d = sg_f32_to_f16(0.5f)};
    for (int j = 0; j < 16; j++) b.qs[j] = (uint8_t)(j | (15 - j) << 4);
    float y[32];
    quant_dequantize_row(SG_Q4_0, &b, y, 32);
    int bad = 0;
    for (int j = 0; j < 16; j++) bad += y[j] != (j - 8) * 0.5f || y[j + 16] != (7 - j) * 0.5f;
    CHECK_EQ_INT(bad, 0);
}

/* Q4_K / Q5_K scales as SMOLLM3.md states them, computed here from the raw bytes. */
static void spec_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) { *sc = s[j] & 63; *m = s[j + 4] & 63; }
    else { *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4); *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4); }
}

static void test_q4_K_q5_K_blocks(void) {
    static const uint8_t scales[12] = {0x41, 0x82, 0xC3, 0x04, 0x45, 0x86, 0xC7, 0x08, 0x21, 0x43, 0x65, 0x87};
    quant_q4_K b4 = {.d = sg_f32_to_f16(0.25f), .dmin = sg_f32_to_f16(0.125f)};
    quant_q5_K b5 = {.d = b4.d, .dmin = b4.dmin};
    memcpy(b4.scales, scales, 12);
    memcpy(b5.scales, scales, 12);
    for (int i = 0; i < 128; i++) b4.qs[i] = b5.qs[i] = (uint8_t)((i * 7) & 0xff);
    for (int i = 0; i < 32; i++) b5.qh[i] = (uint8_t)(i * 37 + 11);
    float y4[256], y5[256];
    quant_dequantize_row(SG_Q4_K, &b4, y4, 256);
    quant_dequantize_row(SG_Q5_K, &b5, y5, 256);
    int bad = 0;
    for (int i = 0; i < 256; i++) {
        /* weight i: sub-block j = i / 32; chunk c = i / 64 holds sub-blocks 2c (low nibbles
         * of qs[32c ..]) and 2c + 1 (high nibbles); Q5_K's 5th bit is bit j of qh[i % 32] */
        int j = i / 32, c = i / 64, l = i % 32, sc, m;
        uint8_t byte = b4.qs[32 * c + l];
        int q = j % 2 ? byte >> 4 : byte & 15;
        spec_scale_min(scales, j, &sc, &m);
        float want4 = 0.25f * sc * q - 0.125f * m;
        float want5 = 0.25f * sc * (q + ((b5.qh[l] >> j) & 1) * 16) - 0.125f * m;
        bad += fabsf(y4[i] - want4) > 1e-6f || fabsf(y5[i] - want5) > 1e-6f;
    }
    CHECK_EQ_INT(bad, 0);
    uint8_t sc, m;
    quant_scale_min_k4(5, scales, &sc, &m);   /* (0x43 & 15) | (0x82 >> 6) << 4, (0x43 >> 4) | (0x86 >> 6) << 4 */
    CHECK_EQ_INT(sc, 3 | 2 << 4);
    CHECK_EQ_INT(m, 4 | 2 << 4);
}

static void test_q6_K_block(void) {
    /* weight i gets the 6-bit value (i * 5) % 64, written by the layout's definition */
    quant_q6_K b;
    memset(&b, 0, sizeof b);
    b.d = sg_f32_to_f16(0.01f);
    for (int k = 0; k < 16; k++) b.scales[k] = (int8_t)(k * 17 - 128);
    for (int i = 0; i < 256; i++) {
        int q = (i * 5) % 64, half = i / 128, k = (i % 128) / 32, l = i % 32;
        uint8_t *ql = &b.ql[64 * half + l + 32 * (k & 1)];
        *ql |= (uint8_t)(k < 2 ? (q & 15) : (q & 15) << 4);
        b.qh[32 * half + l] |= (uint8_t)((q >> 4) << (2 * k));
    }
    float y[256];
    quant_dequantize_row(SG_Q6_K, &b, y, 256);
    float d = sg_f16_to_f32(b.d);
    int bad = 0;
    for (int i = 0; i < 256; i++) bad += fabsf(y[i] - d * b.scales[i / 16] * ((i * 5) % 64 - 32)) > 1e-6f;
    CHECK_EQ_INT(bad, 0);
}

static void test_q5_0_block(void) {
    quant_q5_0 b = {.d = sg_f32_to_f16(1.0f), .qh = {0x01, 0x00, 0x01, 0x80}};   /* bits 0, 16, 31 */
    for (int j = 0; j < 16; j++) b.qs[j] = 0x21;
    float y[32];
    quant_dequantize_row(SG_Q5_0, &b, y, 32);
    CHECK(y[0] == 1 + 16 - 16 && y[1] == 1 - 16 && y[16] == 2 + 16 - 16 && y[17] == 2 - 16 && y[31] == 2 + 16 - 16);
}

/* ---- round trips ---- */

static void test_round_trips(void) {
    static const struct { sg_dtype t; double max_rel_rmse; } types[] = {
        {SG_Q8_0, 0.008}, {SG_Q6_K, 0.025}, {SG_Q5_K, 0.045}, {SG_Q5_1, 0.06}, {SG_Q5_0, 0.065},
        {SG_Q4_K, 0.09}, {SG_Q4_1, 0.11}, {SG_Q4_0, 0.13},
    };
    int n = 4096;
    float *x = malloc((size_t)n * sizeof(float)), *y = malloc((size_t)n * sizeof(float));
    for (int i = 0; i < n; i++) x[i] = grand() * (i % 97 == 0 ? 5.0f : 1.0f);   /* a few outliers */
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        sg_dtype t = types[k].t;
        size_t bytes = dtype_row_bytes(t, (uint64_t)n);
        unsigned char *q = malloc(bytes), *q2 = malloc(bytes);
        CHECK(quant_quantize_row(t, x, q, n) == 0);
        CHECK(quant_quantize_row(t, x, q2, n) == 0 && memcmp(q, q2, bytes) == 0);   /* deterministic */
        quant_dequantize_row(t, q, y, n);
        double se = 0, sx = 0;
        for (int i = 0; i < n; i++) { se += (x[i] - y[i]) * (double)(x[i] - y[i]); sx += (double)x[i] * x[i]; }
        double rel = sqrt(se / sx);
        printf("  %-5s relative RMS error %.4f\n", dtype_info(t)->name, rel);
        CHECK_MSG(rel < types[k].max_rel_rmse, "%s: relative RMS error %.4f", dtype_info(t)->name, rel);
        /* zeros stay zeros; rows must be whole blocks */
        float z[256] = {0}, back[256];
        CHECK(quant_quantize_row(t, z, q, 256) == 0);
        quant_dequantize_row(t, q, back, 256);
        int nz = 0;
        for (int i = 0; i < 256; i++) nz += back[i] != 0;
        CHECK_MSG(nz == 0, "%s: zeros decode to %d non-zeros", dtype_info(t)->name, nz);
        CHECK(quant_quantize_row(t, x, q, 16) == -1);
        free(q);
        free(q2);
    }
    CHECK(quant_quantize_row(SG_F16, x, y, 32) == -1);
    free(x);
    free(y);
}

/* ---- SIMD against scalar on llama.cpp's own blocks ---- */

static void check_tables_on(const gguf_tensor *t, const char *what) {
    int64_t cols = (int64_t)t->ne[0], rows = (int64_t)t->ne[1];
    size_t rb = dtype_row_bytes(t->type, (uint64_t)cols);
    float *x = malloc((size_t)cols * sizeof(float));
    for (int64_t i = 0; i < cols; i++) x[i] = grand();
    quant_q8_act *xa = malloc((size_t)quant_act_groups(cols) * sizeof(quant_q8_act));
    quant_act_quantize(x, xa, cols);
    const kern_table *tables[] = {&kern_avx2, &kern_avx512};
    __builtin_cpu_init();
    bool ok_cpu[] = {__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"),
                     __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")};
    bool vnni = __builtin_cpu_supports("avx512vnni");
    static bool told;   /* once per run: the SIMD tables this CPU cannot run */
    if (!told) {
        told = true;
        if (!ok_cpu[0]) tu_skip("avx2 dot products: not on this CPU");
        if (!ok_cpu[1]) tu_skip("avx512 dot products: not on this CPU");
        else if (!vnni) tu_skip("avx512 integer dot products need VNNI: not on this CPU");
    }
    int bad = 0, checked = 0;
    for (int64_t r = 0; r < rows; r++) {
        const void *row = (const unsigned char *)t->data + (size_t)r * rb;
        float ref = kern_scalar.dot[t->type](row, x, cols);
        float *deq = malloc((size_t)cols * sizeof(float));
        kern_to_f32(t->type, row, deq, cols);
        double mag = 0, qmag = 0;
        for (int64_t i = 0; i < cols; i++) {
            mag += fabs((double)deq[i] * x[i]);
            qmag += fabs((double)deq[i] * xa[i / 256].d[(i % 256) / 8] * xa[i / 256].qs[i % 256]);
        }
        free(deq);
        for (int k = 0; k < 2; k++) {
            const kern_table *kt = tables[k];
            if (!kt->name || !ok_cpu[k]) continue;
            if (kt->dot[t->type]) { bad += fabs(kt->dot[t->type](row, x, cols) - ref) > 1e-5 * mag + 1e-6; checked++; }
            kern_qdot_fn q = kt->qdot[t->type];
            if (q && (k == 0 || vnni)) {
                float want = 0;
                switch (t->type) {
                case SG_Q4_0: want = quant_qdot_q4_0(row, xa, cols); break;
                case SG_Q8_0: want = quant_qdot_q8_0(row, xa, cols); break;
                case SG_Q4_K: want = quant_qdot_q4_K(row, xa, cols); break;
                case SG_Q5_K: want = quant_qdot_q5_K(row, xa, cols); break;
                case SG_Q6_K: want = quant_qdot_q6_K(row, xa, cols); break;
                default: break;
                }
                bad += fabs(q(row, xa, cols) - want) > 1e-5 * qmag + 1e-6;
                checked++;
            }
        }
    }
    CHECK_MSG(bad == 0, "%s: %d of %d SIMD dots disagree with the scalar reference", what, bad, checked);
    free(x);
    free(xa);
}

static void test_simd_on_llamacpp_blocks(void) {
    static const char *files[] = {"Q4_0", "Q8_0", "Q4_K_M", "Q5_K_M", "Q6_K"};
    static const char *tensors[] = {"blk.1.ffn_down.weight", "blk.0.attn_q.weight", "blk.2.attn_v.weight", "token_embd.weight"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        gguf_file g;
        sg_error err = {{0}};
        if (gguf_open(&g, tu_path("%s/gguf/llama-tiny-%s.gguf", ref_dir(), files[f]), &err)) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        for (size_t k = 0; k < sizeof tensors / sizeof tensors[0]; k++) {
            const gguf_tensor *t = gguf_find_tensor(&g, tensors[k]);
            CHECK(t != NULL);
            char what[96];
            snprintf(what, sizeof what, "%s %s (%s)", files[f], tensors[k], t ? dtype_info(t->type)->name : "?");
            if (t) check_tables_on(t, what);
        }
        gguf_close(&g);
    }
}

/* ---- logits on llama.cpp's quantized reference files ---- */

static int32_t g_ids[256];
static int g_n_ids;

static int load_ids(void) {
    if (g_n_ids) return 0;
    json_t *j = json_load_file(tu_path("%s/reference.json", ref_dir()), 0, NULL);
    if (!j) return -1;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(j, "input_ids"), i, v) g_ids[g_n_ids++] = (int32_t)json_integer_value(v);
    json_decref(j);
    return 0;
}

static float *logits_of(const sg_model *m) {
    sg_infer_params p;
    infer_params_default(&p);
    p.kv_type = SG_F32;
    p.n_threads = 2;
    sg_error err = {{0}};
    sg_infer *s = infer_new(m, &p, &err);
    CHECK_MSG(s != NULL, "%s", err.msg);
    if (!s) return NULL;
    float *lg = malloc((size_t)g_n_ids * m->cfg.n_vocab * sizeof(float));
    CHECK_MSG(infer_eval(s, g_ids, g_n_ids, lg, true, &err) == 0, "%s", err.msg);
    infer_free(s);
    return lg;
}

/* max |a - b| / max |ref|, as the reference README measures deviations */
static double deviation(const float *a, const float *b, const float *ref, size_t n) {
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        md = d > md || isnan(d) ? (isnan(d) ? INFINITY : d) : md;
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    return md / mr;
}

static void test_reference_logits(void) {
    CHECK(load_ids() == 0);
    static const char *types[] = {"Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K"};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        sg_error err = {{0}};
        sg_model *m = model_load(tu_path("%s/gguf/llama-tiny-%s.gguf", ref_dir(), types[k]), &err);
        float *exact = tu_read(tu_path("%s/gguf/logits-exact-%s.bin", ref_dir(), types[k]), NULL);
        float *lcpp = tu_read(tu_path("%s/gguf/logits-llamacpp-%s.bin", ref_dir(), types[k]), NULL);
        CHECK_MSG(m && exact && lcpp, "%s: %s", types[k], err.msg);
        if (!m || !exact || !lcpp) { model_free(m); free(exact); free(lcpp); continue; }
        size_t n = (size_t)g_n_ids * m->cfg.n_vocab;
        double bar = deviation(lcpp, exact, exact, n);
        /* the reference, the SIMD float dots, the default (a prompt goes through the
         * matrix-matrix kernel: AMX's bf16 tiles or VNNI's int8), the int8 row path that
         * decode uses (SMOLGATE_GEMM=0) and the VNNI kernel forced (what a CPU without
         * AMX runs; the row path again where there is no VNNI) */
        const char *modes[] = {"scalar", "simd-float", "default", "int8-rows", "vnni"};
        double dev[5] = {0};
        for (int mode = 0; mode < 5; mode++) {
            if (mode == 1) setenv("SMOLGATE_INT8", "0", 1);
            else unsetenv("SMOLGATE_INT8");
            if (mode == 3) setenv("SMOLGATE_GEMM", "0", 1);
            else if (mode == 4) setenv("SMOLGATE_GEMM", "vnni", 1);
            else unsetenv("SMOLGATE_GEMM");
            kern_select(mode == 0 ? "scalar" : NULL);
            float *lg = logits_of(m);
            dev[mode] = lg ? deviation(lg, exact, exact, n) : INFINITY;
            free(lg);
        }
        unsetenv("SMOLGATE_INT8");
        unsetenv("SMOLGATE_GEMM");
        kern_select(NULL);
        printf("  %-7s deviation from exact: scalar %.2g, %s float %.2g, default (%s) %.3f, int8 rows %.3f, "
               "vnni %.3f (llama.cpp %.3f)\n", types[k], dev[0], kern_active()->name, dev[1],
               kern_active()->gemm_name ? kern_active()->gemm_name : "rows", dev[2], dev[3], dev[4], bar);
        CHECK_MSG(dev[0] < 1e-5, "%s %s: %.3g", types[k], modes[0], dev[0]);
        CHECK_MSG(dev[1] < 1e-5, "%s %s: %.3g", types[k], modes[1], dev[1]);
        for (int mode = 2; mode < 5; mode++)
            CHECK_MSG(dev[mode] <= bar, "%s %s: %.3g, llama.cpp %.3g", types[k], modes[mode], dev[mode], bar);
        model_free(m);
        free(exact);
        free(lcpp);
    }
}

/* ---- the quantizer against llama-quantize's files ---- */

static char *kv_str(const gguf_file *g, const char *key) { return gguf_get_str(g, key); }

/* Compares every tensor of ours with theirs: same names, shapes and types, and the bytes
 * identical but for a few (float rounding in the scale search may differ in the last
 * bit between compilers). */
static void compare_files(const char *ours, const char *theirs, const char *what, uint64_t want_ftype) {
    gguf_file a, b;
    sg_error err = {{0}};
    if (gguf_open(&a, ours, &err)) { CHECK_MSG(0, "%s: %s", what, err.msg); return; }
    if (gguf_open(&b, theirs, &err)) { CHECK_MSG(0, "%s: %s", what, err.msg); gguf_close(&a); return; }
    CHECK_EQ_INT(a.n_tensors, b.n_tensors);
    uint64_t ft = 0, qv = 0;
    CHECK(gguf_get_u64(&a, "general.file_type", &ft) == 0 && ft == want_ftype);
    CHECK(gguf_get_u64(&a, "general.quantization_version", &qv) == 0 && qv == 2);
    char *arch = kv_str(&a, "general.architecture");
    CHECK_EQ_STR(arch, "llama");
    free(arch);
    size_t total = 0, differ = 0;
    int type_mismatch = 0;
    for (uint64_t i = 0; i < a.n_tensors; i++) {
        const gguf_tensor *t = &a.tensors[i];
        char name[80];
        snprintf(name, sizeof name, "%.*s", (int)t->name.n, t->name.p);
        const gguf_tensor *u = gguf_find_tensor(&b, name);
        CHECK_MSG(u != NULL, "%s: %s missing in llama.cpp's file", what, name);
        if (!u) continue;
        CHECK(t->n_dims == u->n_dims && t->ne[0] == u->ne[0] && t->ne[1] == u->ne[1]);
        if (t->type != u->type) {
            type_mismatch++;
            printf("    %s %s: %s, llama.cpp %s\n", what, name, dtype_info(t->type)->name, dtype_info(u->type)->name);
            continue;
        }
        total += t->nbytes;
        for (size_t k = 0; k < t->nbytes; k++)
            differ += ((const unsigned char *)t->data)[k] != ((const unsigned char *)u->data)[k];
    }
    CHECK_EQ_INT(type_mismatch, 0);
    CHECK_MSG(differ * 10000 <= total, "%s: %zu of %zu tensor bytes differ from llama-quantize's", what, differ, total);
    gguf_close(&a);
    gguf_close(&b);
}

static void test_quantizer_matches_llamacpp(void) {
    static const struct { const char *name; quantize_ftype ft; } types[] = {
        {"Q8_0", QUANTIZE_Q8_0}, {"Q4_0", QUANTIZE_Q4_0}, {"Q4_K_M", QUANTIZE_Q4_K_M},
        {"Q5_K_M", QUANTIZE_Q5_K_M}, {"Q6_K", QUANTIZE_Q6_K},
    };
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        char out[512], theirs[512];
        snprintf(out, sizeof out, "%s/tiny-%s.gguf", tu_tmpdir(), types[k].name);
        snprintf(theirs, sizeof theirs, "%s/gguf/llama-tiny-%s.gguf", ref_dir(), types[k].name);
        quantize_params p = {.ftype = types[k].ft, .n_threads = 2};
        sg_error err = {{0}};
        CHECK_MSG(quantize_model(tu_path("%s/gguf/llama-tiny-F32.gguf", ref_dir()), out, &p, &err) == 0, "%s", err.msg);
        compare_files(out, theirs, types[k].name, (uint64_t)types[k].ft);
    }
    /* from the Hugging Face folder: the same tensors (q/k permuted by the exporter) */
    char out[512], theirs[512];
    snprintf(out, sizeof out, "%s/tiny-hf-Q4_K_M.gguf", tu_tmpdir());
    snprintf(theirs, sizeof theirs, "%s/gguf/llama-tiny-Q4_K_M.gguf", ref_dir());
    quantize_params p = {.ftype = QUANTIZE_Q4_K_M, .n_threads = 1};
    sg_error err = {{0}};
    CHECK_MSG(quantize_model(tu_path("%s/f32", ref_dir()), out, &p, &err) == 0, "%s", err.msg);
    compare_files(out, theirs, "HF folder Q4_K_M", QUANTIZE_Q4_K_M);
    /* and our Q4_K_M file runs with llama.cpp's accuracy, like llama.cpp's file */
    CHECK(load_ids() == 0);
    sg_model *m = model_load(out, &err);
    float *exact = tu_read(tu_path("%s/gguf/logits-exact-Q4_K_M.bin", ref_dir()), NULL);
    float *lcpp = tu_read(tu_path("%s/gguf/logits-llamacpp-Q4_K_M.bin", ref_dir()), NULL);
    CHECK_MSG(m && exact && lcpp, "%s", err.msg);
    if (m && exact && lcpp) {
        size_t n = (size_t)g_n_ids * m->cfg.n_vocab;
        float *lg = logits_of(m);
        double d = lg ? deviation(lg, exact, exact, n) : INFINITY, bar = deviation(lcpp, exact, exact, n);
        CHECK_MSG(d <= bar, "smolgate's Q4_K_M: deviation %.3g, llama.cpp %.3g", d, bar);
        free(lg);
    }
    model_free(m);
    free(exact);
    free(lcpp);
    /* errors: unknown input, and a type the file cannot take */
    CHECK(quantize_model("/nonexistent.gguf", out, &p, &err) == -1 && strstr(err.msg, "nonexistent"));
    CHECK_EQ_INT(quantize_ftype_from_name("q4_k_m"), QUANTIZE_Q4_K_M);
    CHECK_EQ_INT(quantize_ftype_from_name("Q3_K_S"), -1);
}

/* ---- the recipes ---- */

static void test_recipes(void) {
    quantize_model_info mi = {36, true};   /* SmolLM3-3B: 36 layers, tied embeddings */
    /* use_more_bits for 36 layers: 0..3, every third from 6 to 30, 31..35 */
    static const int more[] = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 31, 32, 33, 34, 35};
    int n_more = 0;
    for (int l = 0; l < 36; l++) {
        char v[64], d[64], q[64];
        snprintf(v, sizeof v, "blk.%d.attn_v.weight", l);
        snprintf(d, sizeof d, "blk.%d.ffn_down.weight", l);
        snprintf(q, sizeof q, "blk.%d.attn_q.weight", l);
        bool want = false;
        for (size_t k = 0; k < sizeof more / sizeof more[0]; k++) want |= more[k] == l;
        sg_dtype tv = quantize_tensor_type(QUANTIZE_Q4_K_M, &mi, v, 2, 2048, SG_BF16);
        sg_dtype td = quantize_tensor_type(QUANTIZE_Q4_K_M, &mi, d, 2, 11008, SG_BF16);
        sg_dtype t5 = quantize_tensor_type(QUANTIZE_Q5_K_M, &mi, d, 2, 11008, SG_BF16);
        CHECK_MSG(tv == (want ? SG_Q6_K : SG_Q4_K) && td == tv && t5 == (want ? SG_Q6_K : SG_Q5_K), "layer %d", l);
        CHECK(quantize_tensor_type(QUANTIZE_Q4_K_M, &mi, q, 2, 2048, SG_BF16) == SG_Q4_K);
        CHECK(quantize_tensor_type(QUANTIZE_Q4_0, &mi, d, 2, 11008, SG_BF16) == SG_Q4_0);
        n_more += want;
    }
    CHECK_EQ_INT(n_more, 18);
    /* output / tied embedding: Q6_K, or Q8_0 in Q8_0 files; untied embeddings keep the base type */
    CHECK(quantize_tensor_type(QUANTIZE_Q4_K_M, &mi, "token_embd.weight", 2, 2048, SG_BF16) == SG_Q6_K);
    CHECK(quantize_tensor_type(QUANTIZE_Q4_0, &mi, "token_embd.weight", 2, 2048, SG_BF16) == SG_Q6_K);
    CHECK(quantize_tensor_type(QUANTIZE_Q8_0, &mi, "token_embd.weight", 2, 2048, SG_BF16) == SG_Q8_0);
    quantize_model_info untied = {36, false};
    CHECK(quantize_tensor_type(QUANTIZE_Q4_K_M, &untied, "token_embd.weight", 2, 2048, SG_BF16) == SG_Q4_K);
    CHECK(quantize_tensor_type(QUANTIZE_Q4_K_M, &untied, "output.weight", 2, 2048, SG_BF16) == SG_Q6_K);
    /* norms and 1-D tensors keep their type */
    CHECK(quantize_tensor_type(QUANTIZE_Q4_K_M, &mi, "blk.0.attn_norm.weight", 1, 2048, SG_F32) == SG_F32);
    CHECK(quantize_tensor_type(QUANTIZE_Q4_K_M, &mi, "output_norm.weight", 1, 2048, SG_BF16) == SG_BF16);
    CHECK(quantize_tensor_type(QUANTIZE_Q4_K_M, &mi, "rope_freqs.weight", 1, 64, SG_F32) == SG_F32);
    /* rows that are not whole 256-blocks (SmolLM2-135M: hidden 576) fall back */
    quantize_model_info s2 = {30, true};
    CHECK(quantize_tensor_type(QUANTIZE_Q4_K_M, &s2, "blk.5.attn_q.weight", 2, 576, SG_BF16) == SG_Q5_0);
    CHECK(quantize_tensor_type(QUANTIZE_Q5_K_M, &s2, "blk.5.attn_q.weight", 2, 576, SG_BF16) == SG_Q5_1);
    CHECK(quantize_tensor_type(QUANTIZE_Q6_K, &s2, "blk.5.attn_q.weight", 2, 576, SG_BF16) == SG_Q8_0);
    CHECK(quantize_tensor_type(QUANTIZE_Q4_K_M, &s2, "blk.0.attn_v.weight", 2, 576, SG_BF16) == SG_Q8_0);
    CHECK(quantize_tensor_type(QUANTIZE_Q4_K_M, &s2, "token_embd.weight", 2, 576, SG_BF16) == SG_Q8_0);
    CHECK(quantize_tensor_type(QUANTIZE_Q4_K_M, &s2, "blk.4.ffn_down.weight", 2, 1536, SG_BF16) == SG_Q4_K);
    CHECK(quantize_tensor_type(QUANTIZE_Q4_K_M, &s2, "blk.5.ffn_down.weight", 2, 1536, SG_BF16) == SG_Q6_K);
    CHECK(quantize_tensor_type(QUANTIZE_Q4_0, &s2, "blk.5.attn_q.weight", 2, 40, SG_BF16) == SG_F16);
}

int main(int argc, char **argv) {
    (void)argc;
    kern_select(NULL);
    RUN(test_q4_0_block);
    RUN(test_q4_K_q5_K_blocks);
    RUN(test_q6_K_block);
    RUN(test_q5_0_block);
    RUN(test_round_trips);
    RUN(test_recipes);
    RUN(test_simd_on_llamacpp_blocks);
    RUN(test_reference_logits);
    RUN(test_quantizer_matches_llamacpp);
    return tu_finish(argv[0]);
}
