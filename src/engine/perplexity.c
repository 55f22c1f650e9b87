/* perplexity.c: perplexity and KL divergence over windows of tokens (see perplexity.h). */
#include "engine/perplexity.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/buf.h"

/* ---- one position's distribution ---- */

double ppl_log_softmax(const float *logits, int n, float *lp) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;   /* float exponentials (1 ulp), double sum: the vocabulary is large */
    for (int i = 0; i < n; i++) sum += expf(logits[i] - mx);
    double lse = mx + log(sum);
    if (lp)
        for (int i = 0; i < n; i++) lp[i] = (float)((double)logits[i] - lse);
    return lse;
}

double ppl_nll(const float *logits, int n, int32_t target) {
    return ppl_log_softmax(logits, n, NULL) - logits[target];
}

int32_t ppl_argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

double ppl_kl(const float *lp, const float *lq, int n) {
    double kl = 0;
    for (int i = 0; i < n; i++) {
        float p = expf(lp[i]);
        if (p > 0) kl += p * ((double)lp[i] - lq[i]);
    }
    return kl;
}

double ppl_kl_topk(const int32_t *ids, const float *lp_top, int k, const float *lq) {
    double kl = 0, sp = 0, sq = 0;
    for (int i = 0; i < k; i++) {
        double p = exp((double)lp_top[i]), lqi = lq[ids[i]];
        sp += p;
        sq += exp(lqi);
        if (p > 0) kl += p * ((double)lp_top[i] - lqi);
    }
    /* the "all other tokens" bin; masses below the rounding noise of k float
     * log-probabilities are not measurable and count as empty */
    double pr = 1 - sp, qr = 1 - sq, eps = k * 0x1p-23;
    if (pr > eps) kl += pr * (log(pr) - log(qr > eps ? qr : eps));
    return kl;
}

void ppl_u16_encode(const float *lp, int n, float lo, uint16_t *q) {
    double scale = 65535.0 / -(double)lo;
    for (int i = 0; i < n; i++) {
        double v = ((double)lp[i] - lo) * scale;
        q[i] = v <= 0 ? 0 : v >= 65535 ? 65535 : (uint16_t)lrint(v);
    }
}

void ppl_u16_decode(const uint16_t *q, int n, float lo, float *lp) {
    double step = -(double)lo / 65535.0;
    for (int i = 0; i < n; i++) lp[i] = (float)(lo + q[i] * step);
    ppl_log_softmax(lp, n, lp);
}

/* ---- statistics ---- */

/* Welford's update: no cancellation when the spread is tiny next to the mean. */
void ppl_stat_add(ppl_stat *s, double x) {
    s->n++;
    double d = x - s->mean;
    s->mean += d / (double)s->n;
    s->m2 += d * (x - s->mean);
}

double ppl_stat_mean(const ppl_stat *s) { return s->mean; }

double ppl_stat_sem(const ppl_stat *s) {
    if (s->n < 2) return 0;
    double var = s->m2 / (double)s->n;
    return var > 0 ? sqrt(var / (double)(s->n - 1)) : 0;
}

double ppl_from_nll(const ppl_stat *nll, double *err) {
    double ppl = exp(ppl_stat_mean(nll));
    if (err) *err = ppl * ppl_stat_sem(nll);
    return ppl;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double ppl_quantile(double *v, size_t n, double q) {
    if (!n) return 0;
    qsort(v, n, sizeof *v, cmp_double);
    double pos = q * (double)(n - 1);
    size_t i = (size_t)pos;
    if (i + 1 >= n) return v[n - 1];
    return v[i] + (pos - (double)i) * (v[i + 1] - v[i]);
}

/* ---- windows ---- */

int ppl_plan_windows(size_t n_tokens, int ctx, int stride, ppl_plan *plan, sg_error *err) {
    memset(plan, 0, sizeof *plan);
    if (ctx < 4) return sg_fail(err, "the window (ctx %d) must hold at least 4 tokens", ctx);
    if (stride < 0 || stride > ctx - 2) return sg_fail(err, "the stride (%d) must be between 1 and ctx - 2 (%d)", stride, ctx - 2);
    if (n_tokens < (size_t)ctx)
        return sg_fail(err, "%zu tokens do not fill one window of %d (use a longer text or a smaller --ctx)", n_tokens, ctx);
    size_t nw = stride ? (n_tokens - (size_t)ctx) / (size_t)stride + 1 : n_tokens / (size_t)ctx;
    if (nw > INT32_MAX) return sg_fail(err, "too many windows");
    plan->ctx = ctx;
    plan->stride = stride;
    plan->n_windows = (int)nw;
    plan->first = stride ? ctx - stride - 1 : ctx / 2;
    plan->n_scored = ctx - 1 - plan->first;
    return 0;
}

size_t ppl_window_start(const ppl_plan *plan, int i) {
    return (size_t)i * (size_t)(plan->stride ? plan->stride : plan->ctx);
}

/* ---- base files ---- */

enum { HEADER_BYTES = 64, RECORD_HEAD = 12 };
static const char MAGIC[8] = {'S', 'G', 'P', 'P', 'L', 'K', 'L', '1'};

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Bytes of one position's record after the 12-byte head (target, top, nll). */
static uint64_t record_body(ppl_encoding enc, int n_vocab, int top_k) {
    switch (enc) {
    case PPL_ENC_F32: return 4ull * (uint64_t)n_vocab;
    case PPL_ENC_U16: return 4 + 2ull * (uint64_t)n_vocab;
    case PPL_ENC_TOPK: return 8ull * (uint64_t)top_k;
    }
    return 0;
}

/* The file format is little-endian; so is every machine this engine runs on, which lets
 * arrays of i32 / f32 / u16 go through fread / fwrite as they are. */
_Static_assert(sizeof(float) == 4, "IEEE-754 binary32 floats");

int ppl_base_read_info(const char *path, ppl_base_info *info, sg_error *err) {
    memset(info, 0, sizeof *info);
    FILE *f = fopen(path, "rb");
    if (!f) return sg_fail(err, "cannot open %s: %s", path, strerror(errno));
    unsigned char h[HEADER_BYTES];
    struct stat st;
    int rc = -1;
    if (fread(h, 1, sizeof h, f) != sizeof h || memcmp(h, MAGIC, 8)) {
        sg_fail(err, "%s is not a smolgate perplexity base file (saved with --save-logits)", path);
        goto out;
    }
    uint32_t version = get_u32(h + 8), enc = get_u32(h + 12);
    info->n_vocab = (int)get_u32(h + 16);
    info->top_k = (int)get_u32(h + 20);
    info->ctx = (int)get_u32(h + 24);
    info->stride = (int)get_u32(h + 28);
    info->bos = (int32_t)get_u32(h + 32);
    info->n_windows = (int)get_u32(h + 36);
    info->n_scored = (int)get_u32(h + 40);
    uint64_t n_tokens = get_u64(h + 48);
    ppl_plan plan;
    if (version != 1 || enc > PPL_ENC_TOPK || info->n_vocab <= 0 || info->n_vocab > (1 << 24) ||
        (enc == PPL_ENC_TOPK && (info->top_k <= 0 || info->top_k > info->n_vocab)) || n_tokens > ((uint64_t)1 << 31) ||
        ppl_plan_windows((size_t)n_tokens, info->ctx, info->stride, &plan, NULL) ||
        plan.n_windows != info->n_windows || plan.n_scored != info->n_scored) {
        sg_fail(err, "%s: inconsistent header (version %u, encoding %u, vocabulary %d, ctx %d, stride %d, %llu tokens)",
                path, version, enc, info->n_vocab, info->ctx, info->stride, (unsigned long long)n_tokens);
        goto out;
    }
    info->enc = (ppl_encoding)enc;
    uint64_t expect = HEADER_BYTES + 4 * n_tokens +
                      (uint64_t)info->n_windows * (uint64_t)info->n_scored *
                          (RECORD_HEAD + record_body(info->enc, info->n_vocab, info->top_k));
    if (fstat(fileno(f), &st) || (uint64_t)st.st_size != expect) {
        sg_fail(err, "%s: %lld bytes, expected %llu (truncated or not from this version)", path,
                (long long)st.st_size, (unsigned long long)expect);
        goto out;
    }
    info->n_tokens = (size_t)n_tokens;
    info->tokens = sg_xmalloc((info->n_tokens ? info->n_tokens : 1) * sizeof(int32_t));
    if (fread(info->tokens, sizeof(int32_t), info->n_tokens, f) != info->n_tokens) {
        sg_fail(err, "%s: truncated", path);
        free(info->tokens);
        info->tokens = NULL;
        goto out;
    }
    rc = 0;
out:
    fclose(f);
    return rc;
}

/* ---- a run ---- */

void ppl_params_default(ppl_params *p) {
    memset(p, 0, sizeof *p);
    p->ctx = 512;
    p->bos = -1;
    p->save_enc = PPL_ENC_U16;
    p->save_top_k = 64;
    infer_params_default(&p->infer);
}

/* Indices of the k largest lp (k <= n), largest first: a min-heap of size k. */
static void top_k(const float *lp, int n, int k, int32_t *ids) {
    int h = 0;
    for (int i = 0; i < n; i++) {
        if (h == k && lp[i] <= lp[ids[0]]) continue;
        int j;
        if (h < k) {          /* sift up */
            j = h++;
            while (j > 0 && lp[ids[(j - 1) / 2]] > lp[i]) { ids[j] = ids[(j - 1) / 2]; j = (j - 1) / 2; }
        } else {              /* replace the root, sift down */
            j = 0;
            for (;;) {
                int c = 2 * j + 1;
                if (c >= k) break;
                if (c + 1 < k && lp[ids[c + 1]] < lp[ids[c]]) c++;
                if (lp[ids[c]] >= lp[i]) break;
                ids[j] = ids[c];
                j = c;
            }
        }
        ids[j] = i;
    }
    /* heap sort the survivors, largest first */
    for (int end = k - 1; end > 0; end--) {
        int32_t t = ids[0];
        ids[0] = ids[end];
        ids[end] = t;
        int j = 0;
        for (;;) {
            int c = 2 * j + 1;
            if (c >= end) break;
            if (c + 1 < end && lp[ids[c + 1]] < lp[ids[c]]) c++;
            if (lp[ids[c]] >= lp[ids[j]]) break;
            int32_t u = ids[j];
            ids[j] = ids[c];
            ids[c] = u;
            j = c;
        }
    }
}

typedef struct run_state {
    const ppl_params *p;
    int n_vocab;
    FILE *save, *base;
    ppl_base_info bi;
    float *lp, *lq;         /* (n_vocab) this model's / the base's log-probabilities */
    uint16_t *q16;          /* (n_vocab) */
    int32_t *ids;           /* (top_k) */
    float *vals;            /* (top_k) */
    /* accumulators */
    ppl_stat nll, base_nll, diff, kl;
    double dp2;             /* sum (p - p_base)^2 of the target */
    int64_t same_top;
    double *kls;            /* every position's KL, for quantiles */
    size_t n_kls, cap_kls;
} run_state;

static int write_record(run_state *rs, int32_t target, int32_t top, float nll, sg_error *err) {
    const ppl_params *p = rs->p;
    int V = rs->n_vocab;
    unsigned char head[RECORD_HEAD];
    put_u32(head, (uint32_t)target);
    put_u32(head + 4, (uint32_t)top);
    memcpy(head + 8, &nll, 4);
    bool ok = fwrite(head, 1, sizeof head, rs->save) == sizeof head;
    if (p->save_enc == PPL_ENC_F32) {
        ok = ok && fwrite(rs->lp, sizeof(float), (size_t)V, rs->save) == (size_t)V;
    } else if (p->save_enc == PPL_ENC_U16) {
        float lo = 0;
        for (int i = 0; i < V; i++)
            if (rs->lp[i] < lo) lo = rs->lp[i];
        if (lo < -100) lo = -100;   /* e^-100: nothing below matters to KL */
        if (lo > -1e-6f) lo = -1e-6f;
        ppl_u16_encode(rs->lp, V, lo, rs->q16);
        ok = ok && fwrite(&lo, 4, 1, rs->save) == 1 && fwrite(rs->q16, 2, (size_t)V, rs->save) == (size_t)V;
    } else {
        int k = p->save_top_k;
        top_k(rs->lp, V, k, rs->ids);
        for (int i = 0; i < k && ok; i++) {
            unsigned char e[8];
            put_u32(e, (uint32_t)rs->ids[i]);
            memcpy(e + 4, &rs->lp[rs->ids[i]], 4);
            ok = fwrite(e, 1, sizeof e, rs->save) == sizeof e;
        }
    }
    return ok ? 0 : sg_fail(err, "cannot write %s: %s", p->save_path, strerror(errno));
}

/* Reads the base's record for this position and adds the comparison to the totals. */
static int compare_record(run_state *rs, int32_t target, int32_t top, float nll, sg_error *err) {
    int V = rs->n_vocab;
    unsigned char head[RECORD_HEAD];
    if (fread(head, 1, sizeof head, rs->base) != sizeof head) return sg_fail(err, "%s: truncated", rs->p->kl_base_path);
    int32_t b_target = (int32_t)get_u32(head), b_top = (int32_t)get_u32(head + 4);
    float b_nll;
    memcpy(&b_nll, head + 8, 4);
    if (b_target != target) return sg_fail(err, "%s: record for token %d where the run has %d", rs->p->kl_base_path, b_target, target);
    double kl;
    if (rs->bi.enc == PPL_ENC_F32) {
        if (fread(rs->lq, sizeof(float), (size_t)V, rs->base) != (size_t)V) return sg_fail(err, "%s: truncated", rs->p->kl_base_path);
        kl = ppl_kl(rs->lq, rs->lp, V);
    } else if (rs->bi.enc == PPL_ENC_U16) {
        float lo;
        if (fread(&lo, 4, 1, rs->base) != 1 || fread(rs->q16, 2, (size_t)V, rs->base) != (size_t)V)
            return sg_fail(err, "%s: truncated", rs->p->kl_base_path);
        if (!(lo < 0)) return sg_fail(err, "%s: bad record (lo %g)", rs->p->kl_base_path, lo);
        ppl_u16_decode(rs->q16, V, lo, rs->lq);
        /* this model's distribution through the same grid, so that equal models give 0 */
        ppl_u16_encode(rs->lp, V, lo, rs->q16);
        ppl_u16_decode(rs->q16, V, lo, rs->lp);
        kl = ppl_kl(rs->lq, rs->lp, V);
    } else {
        int k = rs->bi.top_k;
        for (int i = 0; i < k; i++) {
            unsigned char e[8];
            if (fread(e, 1, sizeof e, rs->base) != sizeof e) return sg_fail(err, "%s: truncated", rs->p->kl_base_path);
            rs->ids[i] = (int32_t)get_u32(e);
            memcpy(&rs->vals[i], e + 4, 4);
            if (rs->ids[i] < 0 || rs->ids[i] >= V) return sg_fail(err, "%s: bad token id %d", rs->p->kl_base_path, rs->ids[i]);
        }
        kl = ppl_kl_topk(rs->ids, rs->vals, k, rs->lp);
    }
    ppl_stat_add(&rs->base_nll, b_nll);
    ppl_stat_add(&rs->diff, (double)nll - b_nll);
    ppl_stat_add(&rs->kl, kl);
    double dp = exp(-(double)nll) - exp(-(double)b_nll);
    rs->dp2 += dp * dp;
    rs->same_top += b_top == top;
    if (rs->n_kls == rs->cap_kls) {
        rs->cap_kls = rs->cap_kls ? 2 * rs->cap_kls : 1024;
        rs->kls = sg_xrealloc(rs->kls, rs->cap_kls * sizeof(double));
    }
    rs->kls[rs->n_kls++] = kl;
    return 0;
}

static int check_base(const run_state *rs, const ppl_plan *plan, const int32_t *tokens, size_t n_tokens, sg_error *err) {
    const ppl_base_info *b = &rs->bi;
    const char *path = rs->p->kl_base_path;
    if (b->n_vocab != rs->n_vocab)
        return sg_fail(err, "%s was saved from a model with %d tokens in its vocabulary, this one has %d", path, b->n_vocab, rs->n_vocab);
    if (b->ctx != plan->ctx || b->stride != plan->stride || b->bos != rs->p->bos)
        return sg_fail(err, "%s was saved with ctx %d, stride %d, BOS %d; this run has ctx %d, stride %d, BOS %d", path,
                       b->ctx, b->stride, b->bos, plan->ctx, plan->stride, rs->p->bos);
    if (b->n_tokens != n_tokens || memcmp(b->tokens, tokens, n_tokens * sizeof *tokens))
        return sg_fail(err, "%s was saved over other tokens (%zu there, %zu here)", path, b->n_tokens, n_tokens);
    return 0;
}

static void finish(run_state *rs, ppl_result *r) {
    r->ppl = ppl_from_nll(&rs->nll, &r->ppl_err);
    r->n_scored = rs->nll.n;
    if (!rs->base) return;
    int64_t n = rs->base_nll.n;
    r->has_kl = true;
    r->base_ppl = ppl_from_nll(&rs->base_nll, &r->base_ppl_err);
    r->ln_ratio = ppl_stat_mean(&rs->diff);
    r->ln_ratio_err = ppl_stat_sem(&rs->diff);
    /* ΔPPL = e^a - e^b (a, b the mean nlls); its variance by the delta method, with the
     * covariance of the two means from var(a - b) = var a + var b - 2 cov */
    double a = ppl_stat_mean(&rs->nll), b = ppl_stat_mean(&rs->base_nll);
    double va = pow(ppl_stat_sem(&rs->nll), 2), vb = pow(ppl_stat_sem(&rs->base_nll), 2);
    double cov = (va + vb - pow(ppl_stat_sem(&rs->diff), 2)) / 2;
    double v = exp(2 * a) * va + exp(2 * b) * vb - 2 * exp(a + b) * cov;
    r->dppl = r->ppl - r->base_ppl;
    r->dppl_err = v > 0 ? sqrt(v) : 0;
    r->kl_mean = ppl_stat_mean(&rs->kl);
    r->kl_err = ppl_stat_sem(&rs->kl);
    r->kl_min = ppl_quantile(rs->kls, rs->n_kls, 0);   /* sorts */
    r->kl_max = rs->n_kls ? rs->kls[rs->n_kls - 1] : 0;
    r->kl_median = ppl_quantile(rs->kls, rs->n_kls, 0.5);
    r->kl_p90 = ppl_quantile(rs->kls, rs->n_kls, 0.9);
    r->kl_p99 = ppl_quantile(rs->kls, rs->n_kls, 0.99);
    r->kl_p999 = ppl_quantile(rs->kls, rs->n_kls, 0.999);
    double f = n ? (double)rs->same_top / (double)n : 0;
    r->same_top = f;
    r->same_top_err = n > 1 ? sqrt(f * (1 - f) / (double)(n - 1)) : 0;
    r->rms_dp = n ? sqrt(rs->dp2 / (double)n) : 0;
}

int ppl_run(const sg_model *m, const int32_t *tokens, size_t n_tokens, const ppl_params *p,
            ppl_result *r, sg_error *err) {
    memset(r, 0, sizeof *r);
    ppl_plan plan;
    if (ppl_plan_windows(n_tokens, p->ctx, p->stride, &plan, err)) return -1;
    int V = m->cfg.n_vocab;
    if (m->cfg.max_ctx > 0 && p->ctx > m->cfg.max_ctx)
        return sg_fail(err, "ctx %d is more than the model's %d positions", p->ctx, m->cfg.max_ctx);
    for (size_t i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= V) return sg_fail(err, "token %zu (id %d) is outside the vocabulary (%d)", i, tokens[i], V);
    if (p->bos >= V) return sg_fail(err, "BOS id %d is outside the vocabulary (%d)", p->bos, V);
    if (p->save_path && p->save_enc == PPL_ENC_TOPK && (p->save_top_k <= 0 || p->save_top_k > V))
        return sg_fail(err, "top-k (%d) must be between 1 and the vocabulary size (%d)", p->save_top_k, V);

    if (p->save_path && p->kl_base_path && !strcmp(p->save_path, p->kl_base_path))
        return sg_fail(err, "%s cannot be both the base read and the file written", p->save_path);

    run_state rs = {.p = p, .n_vocab = V};
    sg_infer *s = NULL;
    float *logits = NULL;
    int32_t *win = NULL;
    int rc = -1;
    if (p->kl_base_path) {
        if (ppl_base_read_info(p->kl_base_path, &rs.bi, err)) return -1;
        if (check_base(&rs, &plan, tokens, n_tokens, err)) goto out;
        if (!(rs.base = fopen(p->kl_base_path, "rb")) ||
            fseek(rs.base, HEADER_BYTES + 4 * (long)n_tokens, SEEK_SET)) {
            sg_fail(err, "cannot read %s: %s", p->kl_base_path, strerror(errno));
            goto out;
        }
    }
    if (p->save_path) {
        if (!(rs.save = fopen(p->save_path, "wb"))) {
            sg_fail(err, "cannot create %s: %s", p->save_path, strerror(errno));
            goto out;
        }
        unsigned char h[HEADER_BYTES] = {0};
        memcpy(h, MAGIC, 8);
        put_u32(h + 8, 1);
        put_u32(h + 12, (uint32_t)p->save_enc);
        put_u32(h + 16, (uint32_t)V);
        put_u32(h + 20, p->save_enc == PPL_ENC_TOPK ? (uint32_t)p->save_top_k : 0);
        put_u32(h + 24, (uint32_t)plan.ctx);
        put_u32(h + 28, (uint32_t)plan.stride);
        put_u32(h + 32, (uint32_t)p->bos);
        put_u32(h + 36, (uint32_t)plan.n_windows);
        put_u32(h + 40, (uint32_t)plan.n_scored);
        put_u64(h + 48, n_tokens);
        if (fwrite(h, 1, sizeof h, rs.save) != sizeof h || fwrite(tokens, sizeof *tokens, n_tokens, rs.save) != n_tokens) {
            sg_fail(err, "cannot write %s: %s", p->save_path, strerror(errno));
            goto out;
        }
    }

    sg_infer_params ip = p->infer;
    ip.n_ctx = plan.ctx;
    if (!(s = infer_new(m, &ip, err))) goto out;
    int chunk = ip.n_batch > 0 ? ip.n_batch : INFER_DEFAULT_BATCH;
    if (chunk > plan.n_scored) chunk = plan.n_scored;
    logits = sg_xmalloc((size_t)chunk * (size_t)V * sizeof(float));
    rs.lp = sg_xmalloc((size_t)V * sizeof(float));
    rs.lq = sg_xmalloc((size_t)V * sizeof(float));
    rs.q16 = sg_xmalloc((size_t)V * sizeof(uint16_t));
    int k = p->save_top_k > rs.bi.top_k ? p->save_top_k : rs.bi.top_k;
    rs.ids = sg_xmalloc((size_t)(k > 0 ? k : 1) * sizeof(int32_t));
    rs.vals = sg_xmalloc((size_t)(k > 0 ? k : 1) * sizeof(float));
    win = sg_xmalloc((size_t)plan.ctx * sizeof(int32_t));

    for (int w = 0; w < plan.n_windows; w++) {
        memcpy(win, tokens + ppl_window_start(&plan, w), (size_t)plan.ctx * sizeof *win);
        if (p->bos >= 0) win[0] = p->bos;
        infer_truncate(s, 0);
        /* the unscored context, then the scored positions a chunk at a time (the last
         * position's logits would predict past the window: it is not evaluated) */
        if (infer_eval(s, win, plan.first, NULL, false, err)) goto out;
        for (int off = plan.first; off < plan.ctx - 1; off += chunk) {
            int b = plan.ctx - 1 - off < chunk ? plan.ctx - 1 - off : chunk;
            if (infer_eval(s, win + off, b, logits, true, err)) goto out;
            for (int t = 0; t < b; t++) {
                const float *lg = logits + (size_t)t * V;
                int32_t target = win[off + t + 1];
                double lse = ppl_log_softmax(lg, V, rs.lp);
                float nll = (float)(lse - lg[target]);
                int32_t top = ppl_argmax(lg, V);
                ppl_stat_add(&rs.nll, nll);
                if (rs.save && write_record(&rs, target, top, nll, err)) goto out;
                if (rs.base && compare_record(&rs, target, top, nll, err)) goto out;
            }
        }
        if (p->progress)
            p->progress(p->progress_ctx, w, plan.n_windows, exp(ppl_stat_mean(&rs.nll)), ppl_stat_mean(&rs.kl));
    }
    if (rs.save) {
        FILE *f = rs.save;
        rs.save = NULL;
        if (fclose(f)) {
            sg_fail(err, "cannot write %s: %s", p->save_path, strerror(errno));
            goto out;
        }
    }
    r->n_windows = plan.n_windows;
    finish(&rs, r);
    rc = 0;
out:
    if (rs.save) fclose(rs.save);
    if (rs.base) fclose(rs.base);
    free(rs.bi.tokens);
    free(rs.lp);
    free(rs.lq);
    free(rs.q16);
    free(rs.ids);
    free(rs.vals);
    free(rs.kls);
    free(logits);
    free(win);
    infer_free(s);
    return rc;
}
