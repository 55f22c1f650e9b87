/* infer.c: the forward pass (see infer.h). Shapes in comments use n = tokens in the
 * micro-batch, d = hidden size, hd = head dim, nh / nkv = query / KV heads. */
#include "engine/infer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "engine/kernels.h"
#include "engine/ops.h"
#include "engine/threadpool.h"

struct sg_infer {
    const sg_model *m;
    const kern_table *k;
    sg_threadpool *tp;
    int n_ctx, n_batch, n_seq;
    int *n_past;               /* (n_seq) positions filled in each sequence's slot */
    sg_dtype kv_type;
    size_t kv_elem;            /* bytes per cache element */
    void *k_cache, *v_cache;   /* (n_seq, n_layers, n_ctx, nkv * hd) */
    int *tok_seq, *tok_pos;    /* (n) each token's sequence and position in this micro-batch */
    bool *tok_out;             /* (n) whether the token's logits are wanted */
    float *x;                  /* (n, d) residual stream */
    float *xb;                 /* (n, d) normed input */
    float *q;                  /* (n, nh * hd) */
    float *kv_k, *kv_v;        /* (n, nkv * hd) this batch's keys / values */
    float *att_out;            /* (n, nh * hd) */
    float *gate, *up;          /* (n, ffn) */
    float *att;                /* (n_threads, n_ctx) attention scores */
    float *inv_freq;           /* (hd / 2) */
    float *rope_cs;            /* (n, hd) this batch's cos / sin (rope_angles) */
    float rope_scale;          /* YaRN attention factor applied to cos / sin */
    bool bf16;                 /* round activations to bf16 where transformers does in bf16 */
};

/* transformers running a bf16 model keeps every activation in bf16: each op rounds its
 * result. Emulating those roundings is what makes a bf16 snapshot's logits match. */
static inline float bf16r(float x) { return sg_bf16_to_f32(sg_f32_to_bf16(x)); }
static void round_bf16(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = bf16r(x[i]);
}

void infer_params_default(sg_infer_params *p) {
    memset(p, 0, sizeof *p);
    p->kv_type = SG_F16;
    p->bf16_activations = -1;
}

/* ---- RoPE frequencies, as transformers' ROPE_INIT_FUNCTIONS compute them ---- */

static double yarn_correction_dim(double rot, int dim, double base, int max_pos) {
    return (dim * log(max_pos / (rot * 2 * M_PI))) / (2 * log(base));
}

static void rope_init(sg_infer *s) {
    const sg_model_config *c = &s->m->cfg;
    int hd = c->head_dim, half = hd / 2;
    s->inv_freq = sg_xmalloc((size_t)half * sizeof(float));
    s->rope_scale = 1.0f;
    for (int i = 0; i < half; i++)   /* float32 arithmetic, as torch does it */
        s->inv_freq[i] = 1.0f / powf((float)c->rope_theta, (float)(2 * i) / (float)hd);
    switch (c->rope_scaling) {
    case ROPE_SCALING_NONE: break;
    case ROPE_SCALING_LINEAR:
        for (int i = 0; i < half; i++) s->inv_freq[i] /= (float)c->rope_factor;
        break;
    case ROPE_SCALING_YARN: {
        double factor = c->rope_factor;
        double low = floor(yarn_correction_dim(c->yarn_beta_fast, hd, c->rope_theta, c->rope_orig_ctx));
        double high = ceil(yarn_correction_dim(c->yarn_beta_slow, hd, c->rope_theta, c->rope_orig_ctx));
        if (low < 0) low = 0;
        if (high > hd - 1) high = hd - 1;
        if (low == high) high += 0.001;
        for (int i = 0; i < half; i++) {
            float extrap = s->inv_freq[i], interp = extrap / (float)factor;
            float ramp = (float)((i - low) / (high - low));
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            float extrap_factor = 1.0f - ramp;
            s->inv_freq[i] = interp * (1 - extrap_factor) + extrap * extrap_factor;
        }
        s->rope_scale = c->yarn_attn_factor > 0 ? (float)c->yarn_attn_factor
                        : factor <= 1 ? 1.0f : (float)(0.1 * log(factor) + 1.0);
        break;
    }
    case ROPE_SCALING_LLAMA3: {
        double factor = c->rope_factor, lf = c->llama3_low_freq, hf = c->llama3_high_freq;
        double old = c->rope_orig_ctx, low_wl = old / lf, high_wl = old / hf;
        for (int i = 0; i < half; i++) {
            double f = s->inv_freq[i], wl = 2 * M_PI / f;
            if (wl > low_wl) f /= factor;
            else if (wl >= high_wl) {
                double smooth = (old / wl - lf) / (hf - lf);
                f = (1 - smooth) * f / factor + smooth * f;
            }
            s->inv_freq[i] = (float)f;
        }
        break;
    }
    }
}

/* The cos and sin of one position's rotation angles (hd / 2 each, rope_scale applied, in
 * bf16 mode rounded as transformers' bf16 cos / sin): computed once per token, used by
 * every head of every layer. */
static void rope_angles(const sg_infer *s, int pos, float *cs) {
    int half = s->m->cfg.head_dim / 2;
    for (int i = 0; i < half; i++) {
        float ang = (float)pos * s->inv_freq[i];
        float c = cosf(ang) * s->rope_scale, sn = sinf(ang) * s->rope_scale;
        cs[i] = s->bf16 ? bf16r(c) : c;
        cs[half + i] = s->bf16 ? bf16r(sn) : sn;
    }
}

/* Rotates one head vector v (hd) by the angles cs of rope_angles. */
static void rope_apply(const sg_infer *s, float *v, const float *cs) {
    int hd = s->m->cfg.head_dim, half = hd / 2;
    bool inter = s->m->cfg.rope_interleaved;
    for (int i = 0; i < half; i++) {
        float c = cs[i], sn = cs[half + i];
        int a = inter ? 2 * i : i, b = inter ? 2 * i + 1 : i + half;
        float x0 = v[a], x1 = v[b];
        if (s->bf16) {   /* (q * cos) + (rotate_half(q) * sin), each product rounded */
            v[a] = bf16r(bf16r(x0 * c) + bf16r(-x1 * sn));
            v[b] = bf16r(bf16r(x1 * c) + bf16r(x0 * sn));
            continue;
        }
        v[a] = x0 * c - x1 * sn;
        v[b] = x1 * c + x0 * sn;
    }
}

/* ---- state ---- */

sg_infer *infer_new(const sg_model *m, const sg_infer_params *p, sg_error *err) {
    const sg_model_config *c = &m->cfg;
    sg_infer *s = sg_xcalloc(1, sizeof *s);
    s->m = m;
    s->k = kern_active();
    s->n_ctx = p->n_ctx > 0 ? p->n_ctx : (c->max_ctx < INFER_DEFAULT_CTX ? c->max_ctx : INFER_DEFAULT_CTX);
    if (s->n_ctx > c->max_ctx && c->max_ctx > 0) s->n_ctx = c->max_ctx;
    s->n_batch = p->n_batch > 0 ? p->n_batch : INFER_DEFAULT_BATCH;
    s->n_seq = p->n_seq > 0 ? p->n_seq : 1;
    s->n_past = sg_xcalloc((size_t)s->n_seq, sizeof(int));
    s->kv_type = p->kv_type == SG_F32 ? SG_F32 : SG_F16;
    s->kv_elem = s->kv_type == SG_F32 ? 4 : 2;
    int threads = p->n_threads > 0 ? p->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    size_t kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    size_t cache_bytes = (size_t)s->n_seq * (size_t)c->n_layers * (size_t)s->n_ctx * kv_dim * s->kv_elem;
    s->k_cache = calloc(1, cache_bytes);
    s->v_cache = calloc(1, cache_bytes);
    if (!s->k_cache || !s->v_cache) {
        sg_fail(err, "cannot allocate a KV cache of 2 x %zu MiB for %d x %d positions", cache_bytes >> 20, s->n_seq,
                s->n_ctx);
        infer_free(s);
        return NULL;
    }
    size_t nb = (size_t)s->n_batch, qd = (size_t)c->n_heads * c->head_dim;
    s->x = sg_xmalloc(nb * (size_t)c->dim * sizeof(float));
    s->xb = sg_xmalloc(nb * (size_t)c->dim * sizeof(float));
    s->q = sg_xmalloc(nb * qd * sizeof(float));
    s->kv_k = sg_xmalloc(nb * kv_dim * sizeof(float));
    s->kv_v = sg_xmalloc(nb * kv_dim * sizeof(float));
    s->att_out = sg_xmalloc(nb * qd * sizeof(float));
    s->gate = sg_xmalloc(nb * (size_t)c->ffn_dim * sizeof(float));
    s->up = sg_xmalloc(nb * (size_t)c->ffn_dim * sizeof(float));
    s->rope_cs = sg_xmalloc(nb * (size_t)c->head_dim * sizeof(float));
    s->tok_seq = sg_xmalloc(nb * sizeof(int));
    s->tok_pos = sg_xmalloc(nb * sizeof(int));
    s->tok_out = sg_xmalloc(nb * sizeof(bool));
    s->bf16 = p->bf16_activations > 0 ||
              (p->bf16_activations < 0 && m->src == MODEL_SRC_HF && m->layers[0].wq.type == SG_BF16);
    s->tp = tp_new(threads);
    s->att = sg_xmalloc((size_t)threads * (size_t)s->n_ctx * sizeof(float));
    rope_init(s);
    /* transformers casts a bf16 model's inv_freq buffer to bf16 as well. */
    if (s->bf16) round_bf16(s->inv_freq, (size_t)c->head_dim / 2);
    return s;
}

void infer_free(sg_infer *s) {
    if (!s) return;
    if (s->tp) tp_free(s->tp);
    free(s->k_cache); free(s->v_cache);
    free(s->x); free(s->xb); free(s->q); free(s->kv_k); free(s->kv_v);
    free(s->att_out); free(s->gate); free(s->up); free(s->rope_cs); free(s->att); free(s->inv_freq);
    free(s->n_past); free(s->tok_seq); free(s->tok_pos); free(s->tok_out);
    free(s);
}

int infer_n_past(const sg_infer *s) { return s->n_past[0]; }
int infer_n_ctx(const sg_infer *s) { return s->n_ctx; }
int infer_n_seq(const sg_infer *s) { return s->n_seq; }
const sg_model *infer_model(const sg_infer *s) { return s->m; }
const float *infer_rope_freqs(const sg_infer *s, float *scale) {
    if (scale) *scale = s->rope_scale;
    return s->inv_freq;
}
void infer_truncate(sg_infer *s, int n_past) { infer_seq_truncate(s, 0, n_past); }

int infer_seq_n_past(const sg_infer *s, int seq) { return seq >= 0 && seq < s->n_seq ? s->n_past[seq] : 0; }

void infer_seq_truncate(sg_infer *s, int seq, int n_past) {
    if (seq >= 0 && seq < s->n_seq && n_past >= 0 && n_past < s->n_past[seq]) s->n_past[seq] = n_past;
}

/* Bytes of one sequence's slot in one layer's cache, and where (seq, layer, pos) starts. */
static size_t kv_layer_bytes(const sg_infer *s) {
    return (size_t)s->n_ctx * (size_t)s->m->cfg.n_kv_heads * (size_t)s->m->cfg.head_dim * s->kv_elem;
}
static size_t kv_offset(const sg_infer *s, int seq, int layer, int pos) {
    size_t kv_row = (size_t)s->m->cfg.n_kv_heads * (size_t)s->m->cfg.head_dim * s->kv_elem;
    return ((size_t)seq * (size_t)s->m->cfg.n_layers + (size_t)layer) * kv_layer_bytes(s) + (size_t)pos * kv_row;
}

int infer_seq_copy(sg_infer *s, int src, int dst, int n, sg_error *err) {
    if (src < 0 || src >= s->n_seq || dst < 0 || dst >= s->n_seq)
        return sg_fail(err, "sequence %d or %d is out of range (%d sequences)", src, dst, s->n_seq);
    if (n < 0 || n > s->n_past[src])
        return sg_fail(err, "cannot copy %d positions of sequence %d, which has %d", n, src, s->n_past[src]);
    if (src != dst) {
        size_t bytes = kv_offset(s, 0, 0, n);   /* n positions of one layer */
        unsigned char *kc = s->k_cache, *vc = s->v_cache;
        for (int l = 0; l < s->m->cfg.n_layers; l++) {
            memcpy(kc + kv_offset(s, dst, l, 0), kc + kv_offset(s, src, l, 0), bytes);
            memcpy(vc + kv_offset(s, dst, l, 0), vc + kv_offset(s, src, l, 0), bytes);
        }
    }
    s->n_past[dst] = n;
    return 0;
}

/* ---- parallel matmul: y (n, rows) = x (n, cols) . W^T ---- */

/* One fork/join computes up to three products of the same x (q/k/v, gate/up). Their rows
 * are handed out in chunks (tp_run_chunks), so a thread that falls behind (another
 * process on its core, a slower memory path) takes fewer chunks instead of holding the
 * others at the join. Decode's chunks (a step of fewer than KERN_GEMM_MIN_TOKENS tokens:
 * one sequence, a few batched ones, a speculation round) shrink as the rows run out,
 * each 1/(2 nth) of what is left (at least MATMUL_MIN_ROWS, a cache line of y): few large
 * ones while there is plenty, small ones at the end so that the threads finish together.
 * A prompt's are one per thread in whole KERN_GEMM_ROWS tiles, the long runs of rows the
 * matrix-matrix kernels want. Decode quantizes x to int8 once, before the fork, rather
 * than once per thread and matrix. */
enum { MATMUL_MAX_OUT = 3, MATMUL_MAX_CHUNKS = 256, MATMUL_MIN_ROWS = 16 };

typedef struct matmul_out {
    const sg_tensor *w;
    float *y;
    int64_t y_stride;
} matmul_out;

typedef struct matmul_job {
    const kern_table *k;
    const float *x;
    const quant_q8_act *xq;    /* x as int8 rows (decode, when some w takes them), or NULL */
    int n;
    int n_out;
    bool swiglu;               /* out[0] = gate, out[1] = up: a chunk's rows of both, then
                                * gate = silu(gate) * up on them, in the threads */
    bool bf16;                 /* sg_infer's bf16: round each output as transformers does */
    matmul_out out[MATMUL_MAX_OUT];
    int n_chunks;
    int64_t r0[MATMUL_MAX_CHUNKS], r1[MATMUL_MAX_CHUNKS];   /* chunk c: rows r0 .. r1 - 1 */
    uint8_t of[MATMUL_MAX_CHUNKS];                         /* ... of out[of[c]] */
} matmul_job;

static void matmul_rows(const matmul_job *j, const matmul_out *o, int64_t r0, int64_t r1) {
    const sg_tensor *w = o->w;
    uint64_t row_bytes = dtype_row_bytes(w->type, (uint64_t)w->cols);
    if (j->xq && kern_uses_int8(j->k, w->type, w->cols))
        kern_matmul_rows_q8(j->k, w->type, w->data, row_bytes, w->cols, j->xq, j->n, o->y, o->y_stride, r0, r1);
    else
        kern_matmul_rows(j->k, w->type, w->data, row_bytes, w->cols, j->x, w->cols, j->n, o->y, o->y_stride, r0, r1);
}

static void matmul_chunk(void *p, int c) {
    const matmul_job *j = p;
    int64_t r0 = j->r0[c], r1 = j->r1[c];
    matmul_rows(j, &j->out[j->of[c]], r0, r1);
    if (!j->swiglu) return;
    matmul_rows(j, &j->out[1], r0, r1);
    for (int t = 0; t < j->n; t++) {
        float *gate = j->out[0].y + t * j->out[0].y_stride, *up = j->out[1].y + t * j->out[1].y_stride;
        if (!j->bf16) {
            ops_swiglu(gate + r0, up + r0, (size_t)(r1 - r0));
            continue;
        }
        for (int64_t r = r0; r < r1; r++) {
            float g = bf16r(gate[r]);
            gate[r] = bf16r(bf16r(g / (1.0f + expf(-g))) * bf16r(up[r]));
        }
    }
}

/* y_i = x . W_i^T for the n_out outputs (all W_i of x's width). swiglu: two outputs,
 * gate and up, of the same rows; out[0].y becomes silu(gate) * up, out[1].y is spent. */
static void matmul_n(sg_infer *s, const float *x, int n, const matmul_out *out, int n_out, bool swiglu) {
    matmul_job j = {.k = s->k, .x = x, .n = n, .n_out = swiglu ? 1 : n_out, .swiglu = swiglu, .bf16 = s->bf16};
    int nth = tp_size(s->tp);
    int64_t work = 0;
    bool int8 = false;
    for (int i = 0; i < n_out; i++) {
        const sg_tensor *w = out[i].w;
        j.out[i] = out[i];
        work += (int64_t)n * w->rows * w->cols;
        int8 |= kern_uses_int8(s->k, w->type, w->cols);
        if (i >= j.n_out) continue;   /* swiglu's up: chunked with gate */
        int64_t fixed = ((w->rows + nth - 1) / nth + KERN_GEMM_ROWS - 1) & ~(int64_t)(KERN_GEMM_ROWS - 1);
        for (int64_t r = 0; r < w->rows; j.n_chunks++) {
            int64_t size = fixed;
            if (n < KERN_GEMM_MIN_TOKENS) {   /* decode steps, a few sequences or a draft */
                size = ((w->rows - r) / (2 * nth) + MATMUL_MIN_ROWS - 1) & ~(int64_t)(MATMUL_MIN_ROWS - 1);
                if (size < MATMUL_MIN_ROWS) size = MATMUL_MIN_ROWS;
            }
            if (j.n_chunks == MATMUL_MAX_CHUNKS - MATMUL_MAX_OUT + i) size = w->rows - r;   /* room for the others */
            j.r0[j.n_chunks] = r;
            j.r1[j.n_chunks] = r = r + size < w->rows ? r + size : w->rows;
            j.of[j.n_chunks] = (uint8_t)i;
        }
    }
    if (n < KERN_GEMM_MIN_TOKENS && int8 && (j.xq = kern_act_buffer(out[0].w->cols, n)))
        kern_act_quantize(s->k, x, out[0].w->cols, n, out[0].w->cols, (quant_q8_act *)j.xq);
    /* Below ~256k multiply-adds a fork/join costs more than it saves. */
    if (work < (1 << 18))
        for (int c = 0; c < j.n_chunks; c++) matmul_chunk(&j, c);
    else
        tp_run_chunks(s->tp, matmul_chunk, &j, j.n_chunks);
    if (s->bf16 && !swiglu)
        for (int i = 0; i < n_out; i++) round_bf16(out[i].y, (size_t)n * (size_t)out[i].y_stride);
}

static void matmul(sg_infer *s, const sg_tensor *w, const float *x, int n, float *y, int64_t y_stride) {
    matmul_out o = {w, y, y_stride};
    matmul_n(s, x, n, &o, 1, false);
}

/* RMSNorm of n rows of d; in bf16 mode as transformers: weight * normed.to(bf16). */
static void rmsnorm_rows(sg_infer *s, float *o, const float *x, const float *w, int n, int d, float eps) {
    for (int t = 0; t < n; t++) {
        float *ot = o + (size_t)t * d;
        if (!s->bf16) { kern_rmsnorm(ot, x + (size_t)t * d, w, d, eps); continue; }
        kern_rmsnorm(ot, x + (size_t)t * d, NULL, d, eps);
        for (int i = 0; i < d; i++) ot[i] = bf16r(w[i] * bf16r(ot[i]));
    }
}

/* x += y, rounded to bf16 in bf16 mode */
static void residual_add(sg_infer *s, float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
    if (s->bf16) round_bf16(x, n);
}

/* ---- attention ---- */

typedef struct attn_job {
    sg_infer *s;
    int layer, n;     /* token t: sequence s->tok_seq[t], position s->tok_pos[t] */
} attn_job;

static void cache_axpy(sg_dtype t, float *out, float p, const void *v, int n) {
    if (t == SG_F32) { const float *a = v; for (int i = 0; i < n; i++) out[i] += p * a[i]; return; }
    const uint16_t *a = v;
    for (int i = 0; i < n; i++) out[i] += p * sg_f16_to_f32(a[i]);
}

static void attn_worker(void *p, int ith, int nth) {
    const attn_job *j = p;
    sg_infer *s = j->s;
    const sg_model_config *c = &s->m->cfg;
    int hd = c->head_dim, nh = c->n_heads, group = c->n_heads / c->n_kv_heads;
    size_t kv_dim = (size_t)c->n_kv_heads * hd;
    const kern_table *k = s->k;
    kern_dot_fn dot = k->dot[s->kv_type] ? k->dot[s->kv_type] : kern_scalar.dot[s->kv_type];   /* F16 / F32 */
    float *att = s->att + (size_t)ith * s->n_ctx;
    float scale = 1.0f / sqrtf((float)hd);
    for (int task = ith; task < j->n * nh; task += nth) {
        int t = task / nh, h = task % nh, kvh = h / group, pos = s->tok_pos[t];
        /* this token's own sequence: its slot of the layer's cache */
        size_t base = kv_offset(s, s->tok_seq[t], j->layer, 0);
        const unsigned char *kc = (const unsigned char *)s->k_cache + base;
        const unsigned char *vc = (const unsigned char *)s->v_cache + base;
        const float *q = s->q + (size_t)t * nh * hd + (size_t)h * hd;
        if (!s->bf16) {
            ops_attend(s->kv_type, q, kc + (size_t)kvh * hd * s->kv_elem, vc + (size_t)kvh * hd * s->kv_elem,
                       kv_dim, pos + 1, hd, scale, att, s->att_out + (size_t)t * nh * hd + (size_t)h * hd);
            continue;
        }
        for (int i = 0; i <= pos; i++) {
            const void *kr = kc + ((size_t)i * kv_dim + (size_t)kvh * hd) * s->kv_elem;
            att[i] = dot(kr, q, hd) * scale;
        }
        /* bf16 as PyTorch's CPU flash attention does it: scores and the softmax sum in
         * float, the exponentials rounded to bf16 for the product with V, the division
         * by the sum last. */
        float max = att[0], sum = 0;
        for (int i = 1; i <= pos; i++) max = att[i] > max ? att[i] : max;
        for (int i = 0; i <= pos; i++) { float e = expf(att[i] - max); sum += e; att[i] = bf16r(e); }
        float norm = 1.0f / sum;
        float *out = s->att_out + (size_t)t * nh * hd + (size_t)h * hd;
        memset(out, 0, (size_t)hd * sizeof(float));
        for (int i = 0; i <= pos; i++)
            cache_axpy(s->kv_type, out, att[i], vc + ((size_t)i * kv_dim + (size_t)kvh * hd) * s->kv_elem, hd);
        for (int i = 0; i < hd; i++) out[i] = bf16r(out[i] * norm);
    }
}

/* ---- one micro-batch ---- */

/* Runs ids[n], token t at sequence s->tok_seq[t], position s->tok_pos[t] (set by the
 * caller; the positions of one sequence consecutive from its n_past). logits: one row
 * per token t with s->tok_out[t], in order. */
static void forward_batch(sg_infer *s, const int32_t *ids, int n, float *logits) {
    const sg_model *m = s->m;
    const sg_model_config *c = &m->cfg;
    int d = c->dim, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
    const int *pos = s->tok_pos;
    size_t kv_dim = (size_t)nkv * hd, qd = (size_t)nh * hd;
    uint64_t emb_row = dtype_row_bytes(m->tok_embd.type, (uint64_t)d);

    /* token embedding */
    for (int t = 0; t < n; t++)
        kern_to_f32(m->tok_embd.type, (const unsigned char *)m->tok_embd.data + (uint64_t)ids[t] * emb_row,
                    s->x + (size_t)t * d, d);
    for (int t = 0; t < n; t++) rope_angles(s, pos[t], s->rope_cs + (size_t)t * hd);

    for (int l = 0; l < c->n_layers; l++) {
        const sg_layer *L = &m->layers[l];
        /* attention rmsnorm */
        rmsnorm_rows(s, s->xb, s->x, L->attn_norm, n, d, c->norm_eps);
        /* qkv matmuls */
        matmul_n(s, s->xb, n, (matmul_out[]){{&L->wq, s->q, (int64_t)qd}, {&L->wk, s->kv_k, (int64_t)kv_dim},
                                             {&L->wv, s->kv_v, (int64_t)kv_dim}}, 3, false);
        /* RoPE, on the layers that use it (SmolLM3 leaves every 4th layer without) */
        if (c->rope_layer[l]) {
            for (int t = 0; t < n; t++) {
                const float *cs = s->rope_cs + (size_t)t * hd;
                for (int h = 0; h < nh; h++) rope_apply(s, s->q + (size_t)t * qd + (size_t)h * hd, cs);
                for (int h = 0; h < nkv; h++) rope_apply(s, s->kv_k + (size_t)t * kv_dim + (size_t)h * hd, cs);
            }
        }
        /* append this batch's keys and values to their sequences' caches */
        int64_t attn_work = 0;
        for (int t = 0; t < n; t++) {
            size_t off = kv_offset(s, s->tok_seq[t], l, pos[t]);
            attn_work += pos[t] + 1;
            kern_from_f32(s->kv_type, s->kv_k + (size_t)t * kv_dim, (unsigned char *)s->k_cache + off, (int64_t)kv_dim);
            kern_from_f32(s->kv_type, s->kv_v + (size_t)t * kv_dim, (unsigned char *)s->v_cache + off, (int64_t)kv_dim);
        }
        /* causal grouped-query attention */
        attn_job aj = {s, l, n};
        if (attn_work * nh * hd < (1 << 16)) attn_worker(&aj, 0, 1);
        else tp_run(s->tp, attn_worker, &aj);
        /* output projection and residual */
        matmul(s, &L->wo, s->att_out, n, s->xb, d);
        residual_add(s, s->x, s->xb, (size_t)n * d);
        /* MLP rmsnorm, SwiGLU, down projection and residual */
        rmsnorm_rows(s, s->xb, s->x, L->ffn_norm, n, d, c->norm_eps);
        matmul_n(s, s->xb, n, (matmul_out[]){{&L->w_gate, s->gate, c->ffn_dim}, {&L->w_up, s->up, c->ffn_dim}}, 2, true);
        matmul(s, &L->w_down, s->gate, n, s->xb, d);
        residual_add(s, s->x, s->xb, (size_t)n * d);
    }
    for (int t = 0; t < n; t++) s->n_past[s->tok_seq[t]]++;

    if (!logits) return;
    /* final rmsnorm and LM head, over the wanted tokens only (a prompt wants its last) */
    int n_out = 0;
    for (int t = 0; t < n; t++)
        if (s->tok_out[t]) rmsnorm_rows(s, s->xb + (size_t)n_out++ * d, s->x + (size_t)t * d, m->output_norm, 1, d, c->norm_eps);
    if (n_out) matmul(s, &m->output, s->xb, n_out, logits, c->n_vocab);
}

static int check_ids(const sg_infer *s, const int32_t *ids, int n, sg_error *err) {
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->m->cfg.n_vocab)
            return sg_fail(err, "token id %d is out of range (vocabulary of %d)", ids[i], s->m->cfg.n_vocab);
    return 0;
}

int infer_eval_seq(sg_infer *s, int seq, const int32_t *ids, int n, float *logits, bool all_logits, sg_error *err) {
    const sg_model_config *c = &s->m->cfg;
    if (n <= 0) return sg_fail(err, "nothing to evaluate");
    if (seq < 0 || seq >= s->n_seq) return sg_fail(err, "sequence %d is out of range (%d sequences)", seq, s->n_seq);
    if (n > s->n_ctx - s->n_past[seq])
        return sg_fail(err, "context is full: %d positions used, %d more needed, the KV cache holds %d",
                       s->n_past[seq], n, s->n_ctx);
    if (check_ids(s, ids, n, err)) return -1;
    for (int done = 0; done < n;) {
        int b = n - done < s->n_batch ? n - done : s->n_batch;
        bool last = done + b == n;
        float *out = NULL;
        if (logits && all_logits) out = logits + (size_t)done * c->n_vocab;
        else if (logits && last) out = logits;
        for (int t = 0; t < b; t++) {
            s->tok_seq[t] = seq;
            s->tok_pos[t] = s->n_past[seq] + t;
            s->tok_out[t] = all_logits || t == b - 1;
        }
        forward_batch(s, ids + done, b, out);
        done += b;
    }
    return 0;
}

int infer_eval(sg_infer *s, const int32_t *ids, int n, float *logits, bool all_logits, sg_error *err) {
    return infer_eval_seq(s, 0, ids, n, logits, all_logits, err);
}

int infer_decode_batch(sg_infer *s, const int *seq, const int32_t *tok, int n, float *logits, sg_error *err) {
    return infer_step(s, seq, tok, NULL, n, logits, err);
}

int infer_step(sg_infer *s, const int *seq, const int32_t *tok, const bool *want, int n, float *logits, sg_error *err) {
    if (n <= 0) return sg_fail(err, "nothing to evaluate");
    if (check_ids(s, tok, n, err)) return -1;
    int *need = sg_xcalloc((size_t)s->n_seq, sizeof(int));   /* positions each sequence asks for */
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (seq[i] < 0 || seq[i] >= s->n_seq) rc = sg_fail(err, "sequence %d is out of range (%d sequences)", seq[i], s->n_seq);
        else if (++need[seq[i]] > s->n_ctx - s->n_past[seq[i]])
            rc = sg_fail(err, "context of sequence %d is full: %d positions used, the KV cache holds %d", seq[i],
                         s->n_past[seq[i]], s->n_ctx);
    }
    free(need);
    if (rc) return rc;
    float *out = logits;
    for (int done = 0; done < n;) {
        int b = n - done < s->n_batch ? n - done : s->n_batch, n_out = 0;
        /* positions: each sequence's next ones, in the order its tokens come */
        for (int t = 0; t < b; t++) {
            int q = seq[done + t], p = s->n_past[q];
            for (int u = 0; u < t; u++) p += s->tok_seq[u] == q;
            s->tok_seq[t] = q;
            s->tok_pos[t] = p;
            s->tok_out[t] = !want || want[done + t];
            n_out += s->tok_out[t];
        }
        forward_batch(s, tok + done, b, out);
        if (out) out += (size_t)n_out * s->m->cfg.n_vocab;
        done += b;
    }
    return 0;
}
