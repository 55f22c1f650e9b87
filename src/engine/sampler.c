/* sampler.c: next-token choice (penalties, temperature, top-k, top-p, min-p, seeded
 * draw), raw log-probabilities, and stop strings over streamed text. See sampler.h.
 *
 * This runs once per generated token over a 128,256-entry vocabulary, so nothing sorts
 * the vocabulary. The whole-vocabulary work is a few vectorizable passes over blocks
 * of 64 logits (block maxima, then exponentials with block sums); everything after
 * touches only candidates:
 *   greedy       argmax from the block maxima;
 *   temperature  a draw through the block sums;
 *   top-k        blocks whose maximum is below the k-th largest block maximum cannot
 *                hold a top-k token, the rest are gathered and quickselected;
 *   top-p        tokens too light to be in the nucleus (bound below) are never gathered;
 *                the rest are sliced by probability, and only the slice where the
 *                nucleus ends is quickselected;
 *   min-p        a bar on the candidates.
 * The draw walks the survivors in whatever order selection left them, which gives the
 * same distribution as a sorted walk. */
#include "engine/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

void sampler_params_default(sg_sampler_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 0;
    p->top_k = 0;
    p->top_p = 1;
    p->min_p = 0;
    p->repetition_penalty = 1;
    p->penalty_last_n = 0;
}

/* ---- generator: xoshiro256** seeded through splitmix64 (Blackman & Vigna) ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t st[4]) {
    uint64_t result = rotl64(st[1] * 5, 7) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl64(st[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t st[4]) { return (double)(rng_next(st) >> 11) * 0x1.0p-53; }

/* ---- kernels over the whole vocabulary ----
 *
 * Written as fixed-size inner loops over blocks of SG_BLK floats, with restrict
 * pointers and no branches, so that compilers vectorize them at -O2 without any
 * target flags; they are plain C and exact enough either way. */

#define SG_BLK 64

/* exp(z) to about 2e-7 relative, for z <= 0, and exactly 0 below z_floor (so masked
 * tokens, logit -inf, can never be drawn) or for NaN. 2^(z log2 e) is split into an
 * integer power, built directly in the exponent bits, and a degree-6 Taylor polynomial
 * for 2^f on |f| <= 1/2; it is exact at z = 0, so the most likely token weighs exactly
 * 1. z_floor must be >= -86 (the result stays a normal float) and comes from the caller
 * rather than a literal because GCC turns a clamp to a constant into a branch, which
 * stops vectorization. The rounding trick needs strict float semantics (no
 * -ffast-math). */
static inline float fast_exp(float z, float z_floor) {
    int32_t keep = -(int32_t)(z >= z_floor);     /* all ones or zero: a mask, not a branch */
    z = z > z_floor ? z : z_floor;
    float t = z * 1.44269504f;
    float n = (t + 12582912.0f) - 12582912.0f;   /* round(t): 1.5 * 2^23 */
    float f = t - n;
    float q = 1.540353e-4f;                      /* ln2^k / k!, k = 6..0 */
    q = q * f + 1.333356e-3f;
    q = q * f + 9.618129e-3f;
    q = q * f + 5.550411e-2f;
    q = q * f + 2.402265e-1f;
    q = q * f + 6.931472e-1f;
    q = q * f + 1.0f;
    int32_t bits;
    memcpy(&bits, &q, sizeof bits);
    bits = (bits + (int32_t)n * (1 << 23)) & keep;
    memcpy(&q, &bits, sizeof q);
    return q;
}

static size_t n_blocks(size_t n) { return (n + SG_BLK - 1) / SG_BLK; }

/* Maximum of each block of x (n) into bmax (n_blocks(n)), and of each of its eight
 * interleaved groups (elements j, j + 8, j + 16, ...) into gmax (8 * n_blocks(n));
 * returns the overall maximum, -inf when there is none. NaNs are never a maximum. */
static float kern_block_max(const float *restrict x, size_t n, float *restrict bmax,
                            float *restrict gmax) {
    float m = -INFINITY;
    for (size_t b = 0, i = 0; i < n; i += SG_BLK, b++) {
        float lane[8];
        for (int k = 0; k < 8; k++) lane[k] = -INFINITY;
        if (i + SG_BLK <= n) {
            for (int j = 0; j < SG_BLK; j += 8)
                for (int k = 0; k < 8; k++) lane[k] = x[i + j + k] > lane[k] ? x[i + j + k] : lane[k];
        } else {   /* the last, partial block */
            for (size_t j = 0; i + j < n; j++) lane[j % 8] = x[i + j] > lane[j % 8] ? x[i + j] : lane[j % 8];
        }
        float bm = lane[0];
        for (int k = 0; k < 8; k++) {
            gmax[8 * b + (size_t)k] = lane[k];
            bm = lane[k] > bm ? lane[k] : bm;
        }
        bmax[b] = bm;
        m = bm > m ? bm : m;
    }
    return m;
}

/* out[i] = exp((x[i] - m) * inv_t) for x (n), block sums into bsum; returns the sum. */
static double kern_exp(const float *restrict x, size_t n, float m, float inv_t, float z_floor,
                       float *restrict out, float *restrict bsum) {
    double total = 0;
    size_t b = 0, i = 0;
    for (; i + SG_BLK <= n; i += SG_BLK, b++) {
        float lane[8] = {0};
        for (int j = 0; j < SG_BLK; j += 8)
            for (int k = 0; k < 8; k++) {
                float e = fast_exp((x[i + j + k] - m) * inv_t, z_floor);
                out[i + j + k] = e;
                lane[k] += e;
            }
        bsum[b] = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
        total += bsum[b];
    }
    if (i < n) {
        float sum = 0;
        for (; i < n; i++) sum += out[i] = fast_exp((x[i] - m) * inv_t, z_floor);
        bsum[b] = sum;
        total += sum;
    }
    return total;
}

static int float_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x > y ? -1 : x < y ? 1 : 0;
}

/* k-th largest of x (n, no NaNs), 1 <= k <= n; reorders x. Quickselect with a
 * three-way partition (block maxima tie often), and a sort when the pivots keep
 * missing, to bound the worst case. */
static float kth_largest(float *x, size_t n, size_t k) {
    size_t lo = 0, hi = n, want = k - 1;
    for (int rounds = 64; hi - lo > 1; rounds--) {
        if (rounds == 0) {
            qsort(x + lo, hi - lo, sizeof *x, float_desc);
            return x[want];
        }
        float pivot = x[lo + (hi - lo) / 2];
        size_t a = lo, b = hi;   /* three-way: [lo, a) > pivot, [a, b) == pivot, [b, hi) < pivot */
        for (size_t i = lo; i < b;) {
            if (x[i] > pivot) { float t = x[i]; x[i++] = x[a]; x[a++] = t; }
            else if (x[i] < pivot) { float t = x[i]; x[i] = x[--b]; x[b] = t; }
            else i++;
        }
        if (want < a) hi = a;
        else if (want >= b) lo = b;
        else return pivot;
    }
    return x[lo];
}

/* ---- the sampler ---- */

/* One token still in the running. Candidates are ordered by z, then by id. */
typedef struct cand {
    float z;        /* (logit - max_logit) / temperature, <= 0 */
    float p;        /* exp(z): unnormalised probability, 1 for the most likely token */
    int32_t id;
} cand;

struct sg_sampler {
    sg_sampler_params p;
    size_t n_vocab;
    uint64_t rng[4];
    float p_cut;       /* tokens below this p together weigh < 1e-9 of the total: never candidates */
    float z_floor;     /* fast_exp's clamp, a variable on purpose (see fast_exp) */
    cand *cand;        /* (n_vocab) candidate scratch */
    float *prob;       /* (n_vocab) exp(z) of every token */
    float *bmax;       /* (n_blocks) maximum logit of each block of SG_BLK tokens */
    float *gmax;       /* (8 * n_blocks) maximum logit of each group of 8 (see kern_block_max) */
    float *bsum;       /* (n_blocks) sum of prob over each block */
    float *btmp;       /* (8 * n_blocks) scratch for top-k's threshold */
    cand *edge;        /* (edge_cap) top-p's boundary slice, grown on demand */
    size_t edge_cap;
    bool penalties;    /* any penalty on; the three arrays below exist only then */
    int32_t *count;    /* (n_vocab) occurrences in the penalty window; all zero between calls */
    float *orig;       /* (n_vocab) raw logit of each penalised id, valid where count > 0 */
    int32_t *seen;     /* (n_vocab) distinct ids of the penalty window, first-seen order */
};

sg_sampler *sampler_new(const sg_sampler_params *p, size_t n_vocab) {
    if (!p || n_vocab == 0 || n_vocab > (size_t)INT32_MAX) return NULL;
    sg_sampler *s = sg_xcalloc(1, sizeof *s);
    s->p = *p;
    if (s->p.n_logprobs < 0) s->p.n_logprobs = 0;
    if (s->p.n_logprobs > SG_MAX_LOGPROBS) s->p.n_logprobs = SG_MAX_LOGPROBS;
    s->n_vocab = n_vocab;
    /* The total is >= 1 (the top token alone), so n_vocab tokens each below
     * 1e-9 / n_vocab weigh less than float resolution of it together. */
    s->p_cut = (float)(1e-9 / (double)n_vocab);
    s->z_floor = -86.0f;
    size_t nb = n_blocks(n_vocab);
    s->cand = sg_xmalloc(n_vocab * sizeof *s->cand);
    s->prob = sg_xmalloc(n_vocab * sizeof *s->prob);
    s->bmax = sg_xmalloc(nb * sizeof *s->bmax);
    s->bsum = sg_xmalloc(nb * sizeof *s->bsum);
    s->gmax = sg_xmalloc(8 * nb * sizeof *s->gmax);
    s->btmp = sg_xmalloc(8 * nb * sizeof *s->btmp);
    s->penalties = (p->repetition_penalty > 0 && p->repetition_penalty != 1) ||
                   p->presence_penalty != 0 || p->frequency_penalty != 0;
    if (s->penalties) {   /* 1.5 MB for this vocabulary: only when asked for */
        s->count = sg_xcalloc(n_vocab, sizeof *s->count);
        s->orig = sg_xmalloc(n_vocab * sizeof *s->orig);
        s->seen = sg_xmalloc(n_vocab * sizeof *s->seen);
    }
    sampler_seed(s, p->seed);
    return s;
}

void sampler_free(sg_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->prob);
    free(s->bmax);
    free(s->bsum);
    free(s->gmax);
    free(s->btmp);
    free(s->edge);
    free(s->count);
    free(s->orig);
    free(s->seen);
    free(s);
}

void sampler_seed(sg_sampler *s, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
}

/* Counts the window's ids and rewrites their logits; returns how many distinct ids it
 * touched. Counts stay set (so the caller can find the raw logits in orig) until
 * penalties_clear. */
static size_t penalties_apply(sg_sampler *s, float *logits, const int32_t *history,
                              size_t n_history) {
    const sg_sampler_params *p = &s->p;
    if (!s->penalties || !history || n_history == 0) return 0;
    bool rep = p->repetition_penalty > 0 && p->repetition_penalty != 1;
    size_t start = 0;
    if (p->penalty_last_n > 0 && n_history > (size_t)p->penalty_last_n)
        start = n_history - (size_t)p->penalty_last_n;
    size_t n_seen = 0;
    for (size_t i = start; i < n_history; i++) {
        int32_t id = history[i];
        if (id < 0 || (size_t)id >= s->n_vocab) continue;
        if (s->count[id]++ == 0) s->seen[n_seen++] = id;
    }
    for (size_t j = 0; j < n_seen; j++) {
        int32_t id = s->seen[j];
        float l = logits[id];
        s->orig[id] = l;
        if (rep) l = l > 0 ? l / p->repetition_penalty : l * p->repetition_penalty;
        l -= p->presence_penalty + p->frequency_penalty * (float)s->count[id];
        logits[id] = l;
    }
    return n_seen;
}

static void penalties_clear(sg_sampler *s, size_t n_seen) {
    for (size_t j = 0; j < n_seen; j++) s->count[s->seen[j]] = 0;
}

void sampler_penalize(sg_sampler *s, float *logits, const int32_t *history, size_t n_history) {
    penalties_clear(s, penalties_apply(s, logits, history, n_history));
}

/* Lowest id holding the maximum m found by kern_block_max (0 when m is -inf). */
static int32_t argmax_in_blocks(const float *logits, size_t n, const float *bmax, float m) {
    if (!(m > -INFINITY)) return 0;
    size_t b = 0;
    while (bmax[b] != m) b++;
    size_t i = b * SG_BLK;
    while (i < n && logits[i] != m) i++;
    return (int32_t)i;
}

/* Raw log-softmax: the top alternatives into info, and max + log-sum-exp so that any
 * token's logprob is logit - (*shift). */
static void logprobs_raw(sg_sampler *s, const float *logits, sg_sample_info *info, double *shift) {
    size_t n = s->n_vocab;
    float m = kern_block_max(logits, n, s->bmax, s->gmax);
    if (m > -INFINITY && m < INFINITY)
        *shift = (double)m + log(kern_exp(logits, n, m, 1.0f, s->z_floor, s->prob, s->bsum));
    else
        *shift = INFINITY;   /* everything masked: every logprob is -inf */

    /* Insertion into a best-first list, skipping whole blocks that cannot enter it. A
     * later id with an equal logit never displaces an earlier one: ties go to the
     * lowest id. */
    int n_top = s->p.n_logprobs, k = 0;
    if ((size_t)n_top > n) n_top = (int)n;
    for (size_t b = 0; b < n_blocks(n) && n_top > 0; b++) {
        if (k == n_top && !(s->bmax[b] > info->top[k - 1].logprob)) continue;
        size_t end = (b + 1) * SG_BLK < n ? (b + 1) * SG_BLK : n;
        for (size_t i = b * SG_BLK; i < end; i++) {
            float l = logits[i];
            if (l != l || (k == n_top && !(l > info->top[k - 1].logprob))) continue;
            int j = k < n_top ? k++ : k - 1;
            while (j > 0 && l > info->top[j - 1].logprob) {
                info->top[j] = info->top[j - 1];
                j--;
            }
            info->top[j].id = (int32_t)i;
            info->top[j].logprob = l;   /* raw logit for now; shifted below */
        }
    }
    for (int j = 0; j < k; j++) info->top[j].logprob = (float)(info->top[j].logprob - *shift);
    info->n_top = k;
}

/* Total order for candidates: larger z first, then lower id. */
static inline bool cand_before(const cand *a, const cand *b) {
    return a->z > b->z || (a->z == b->z && a->id < b->id);
}

static int cand_cmp(const void *a, const void *b) {
    return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

static inline void cand_swap(cand *a, cand *b) { cand t = *a; *a = *b; *b = t; }

/* Partitions c[lo, hi) (at least two elements) around a median-of-three pivot; returns
 * the pivot's final index m: c[lo, m) come before it, c(m, hi) after. */
static size_t cand_partition(cand *c, size_t lo, size_t hi) {
    size_t mid = lo + (hi - lo) / 2, last = hi - 1;
    if (cand_before(&c[mid], &c[lo])) cand_swap(&c[mid], &c[lo]);
    if (cand_before(&c[last], &c[lo])) cand_swap(&c[last], &c[lo]);
    if (cand_before(&c[mid], &c[last])) cand_swap(&c[mid], &c[last]);   /* median to last */
    cand pivot = c[last];
    size_t store = lo;
    for (size_t i = lo; i < last; i++)
        if (cand_before(&c[i], &pivot)) cand_swap(&c[i], &c[store++]);
    cand_swap(&c[store], &c[last]);
    return store;
}

/* Past this many partition rounds the input is adversarial for median-of-three; a sort
 * of what is left bounds the worst case. */
static int select_round_limit(size_t n) {
    int lg = 0;
    while (n >>= 1) lg++;
    return 2 * lg + 8;
}

/* Moves the k best of c[0, n) into c[0, k), in no particular order. */
static void select_top_k(cand *c, size_t n, size_t k) {
    size_t lo = 0, hi = n;
    int rounds = select_round_limit(n);
    while (lo < k && k < hi) {
        if (rounds-- == 0) {
            qsort(c + lo, hi - lo, sizeof *c, cand_cmp);
            return;
        }
        size_t m = cand_partition(c, lo, hi);
        if (m == k || m + 1 == k) return;
        if (k < m) hi = m;
        else lo = m + 1;
    }
}

/* The nucleus by quickselect: moves into c[0, r) the shortest best-first run of
 * c[0, n) whose mass reaches need, and returns r (n if need is never reached). */
static size_t select_top_p_qs(cand *c, size_t n, double need) {
    if (n == 0) return 0;
    if (need <= 0) {
        select_top_k(c, n, 1);
        return 1;
    }
    size_t lo = 0, hi = n;   /* c[0, lo) is in, c[hi, n) is out, need is what c[lo, hi) still owes */
    int rounds = select_round_limit(n);
    while (hi - lo > 1) {
        if (rounds-- == 0) {
            qsort(c + lo, hi - lo, sizeof *c, cand_cmp);
            for (size_t i = lo; i < hi; i++) {
                need -= c[i].p;
                if (need <= 0) return i + 1;
            }
            return hi;
        }
        size_t m = cand_partition(c, lo, hi);
        double upper = 0;
        for (size_t i = lo; i < m; i++) upper += c[i].p;
        if (upper >= need) {
            hi = m;
        } else if (upper + c[m].p >= need) {
            return m + 1;
        } else {
            need -= upper + c[m].p;
            lo = m + 1;
        }
    }
    return hi;
}

/* The nucleus, as select_top_p_qs but at least 1. Many candidates are first sliced by
 * z into SG_SLICES equal ranges of [z_lo, 0] (anything below z_lo counts as the last
 * slice): whole slices from the top are in while their mass falls short of need, and
 * only the slice where need runs out, copied aside into s->edge, is quickselected.
 * That is two light passes instead of a quickselect's several heavy ones. */
#define SG_SLICES 256
static size_t slice_of(float z, float scale) {
    float f = -z * scale;
    return f < SG_SLICES - 1 ? (size_t)f : SG_SLICES - 1;
}
static size_t select_top_p(sg_sampler *s, cand *c, size_t n, double need, float z_lo) {
    if (n < 4 * SG_SLICES || !(z_lo < 0)) {
        size_t r = select_top_p_qs(c, n, need);
        return r ? r : 1;
    }
    float scale = (float)SG_SLICES / -z_lo;
    double mass[SG_SLICES] = {0};
    for (size_t i = 0; i < n; i++) mass[slice_of(c[i].z, scale)] += c[i].p;
    size_t edge = 0;
    double above = 0;
    while (edge < SG_SLICES - 1 && above + mass[edge] < need) above += mass[edge++];

    /* One pass: slices above the edge compacted to the front, the edge slice aside. */
    size_t in = 0, n_edge = 0;
    for (size_t i = 0; i < n; i++) {
        size_t sl = slice_of(c[i].z, scale);
        if (sl == edge) {
            if (n_edge == s->edge_cap) {
                s->edge_cap = s->edge_cap ? 2 * s->edge_cap : 1024;
                s->edge = sg_xrealloc(s->edge, s->edge_cap * sizeof *s->edge);
            }
            s->edge[n_edge++] = c[i];
        }
        c[in] = c[i];   /* unconditional copy, conditional advance: no branch */
        in += sl < edge;
    }
    size_t r = select_top_p_qs(s->edge, n_edge, need - above);
    memcpy(c + in, s->edge, r * sizeof *c);
    return in + r ? in + r : 1;
}

/* top-k: the k best tokens by logit into c, with z and p filled in; returns how many
 * (fewer than k only when the rest are below p_cut). A value that k groups of tokens
 * have a member at or above is a bar at least k tokens reach: the k-th largest block
 * maximum is one, and the k-th largest of the group maxima above it (see
 * kern_block_max) a tighter one. Only blocks reaching the bar are scanned. */
static size_t gather_top_k(sg_sampler *s, const float *logits, float m, float inv_t, size_t k) {
    size_t n = s->n_vocab, nb = n_blocks(n), nc = 0;
    cand *c = s->cand;
    float t = -INFINITY;
    if (k <= nb) {
        memcpy(s->btmp, s->bmax, nb * sizeof *s->btmp);
        t = kth_largest(s->btmp, nb, k);
    }
    if (k <= 8 * nb) {   /* empty groups of a partial last block are -inf: never above a bar */
        size_t g = 0;
        for (size_t i = 0; i < 8 * nb; i++)
            if (s->gmax[i] >= t) s->btmp[g++] = s->gmax[i];
        if (g >= k) t = kth_largest(s->btmp, g, k);
    }
    float z_cut = logf(s->p_cut);
    for (size_t b = 0; b < nb; b++) {
        if (!(s->bmax[b] >= t)) continue;
        size_t end = (b + 1) * SG_BLK < n ? (b + 1) * SG_BLK : n;
        for (size_t i = b * SG_BLK; i < end; i++) {
            float l = logits[i];
            if (l >= t && (l - m) * inv_t >= z_cut) {
                c[nc].z = l;   /* ordered by the raw logit while selecting */
                c[nc].id = (int32_t)i;
                nc++;
            }
        }
    }
    if (nc > k) {
        select_top_k(c, nc, k);
        nc = k;
    }
    for (size_t j = 0; j < nc; j++) {
        c[j].z = (c[j].z - m) * inv_t;
        c[j].p = fast_exp(c[j].z, s->z_floor);
    }
    return nc;
}

/* Every token with p >= p_min into c, from s->prob; skips blocks whose best token is
 * below the bar. */
static size_t gather_above(sg_sampler *s, const float *logits, float m, float inv_t, float p_min) {
    size_t n = s->n_vocab, nc = 0;
    cand *c = s->cand;
    const float *prob = s->prob;
    for (size_t b = 0; b < n_blocks(n); b++) {
        if (!(fast_exp((s->bmax[b] - m) * inv_t, s->z_floor) >= p_min)) continue;
        size_t end = (b + 1) * SG_BLK < n ? (b + 1) * SG_BLK : n;
        for (size_t i = b * SG_BLK; i < end; i++) {
            c[nc].id = (int32_t)i;   /* unconditional store, conditional advance: no branch */
            nc += prob[i] >= p_min;
        }
    }
    for (size_t j = 0; j < nc; j++) {
        c[j].z = (logits[c[j].id] - m) * inv_t;
        c[j].p = prob[c[j].id];
    }
    return nc;
}

/* Draws from c[0, nc): any order of the candidates gives the right distribution. */
static int32_t draw(const cand *c, size_t nc, double u) {
    double total = 0;
    for (size_t i = 0; i < nc; i++) total += c[i].p;
    double r = u * total, acc = 0;
    for (size_t i = 0; i < nc; i++) {
        acc += c[i].p;
        if (r < acc) return c[i].id;
    }
    return c[nc - 1].id;   /* r landed on rounding error past the end */
}

/* Draws from the whole of s->prob (temperature alone), finding the block from the
 * block sums first. Never returns a token of probability 0. */
static int32_t draw_all(const sg_sampler *s, double total, double u, int32_t fallback) {
    size_t n = s->n_vocab, nb = n_blocks(n), b = 0;
    double r = u * total, acc = 0;
    while (b + 1 < nb && r >= acc + s->bsum[b]) acc += s->bsum[b++];
    size_t end = (b + 1) * SG_BLK < n ? (b + 1) * SG_BLK : n;
    int32_t last = -1;
    for (size_t i = b * SG_BLK; i < end; i++) {
        if (s->prob[i] > 0) last = (int32_t)i;
        acc += s->prob[i];
        if (r < acc && s->prob[i] > 0) return (int32_t)i;
    }
    return last >= 0 ? last : fallback;   /* r landed on rounding error past the block */
}

/* Everything after the penalties: temperature, top-k, top-p, min-p, draw. */
static int32_t sample_filtered(sg_sampler *s, const float *logits) {
    const sg_sampler_params *p = &s->p;
    size_t n = s->n_vocab;
    float m = kern_block_max(logits, n, s->bmax, s->gmax);
    int32_t best = argmax_in_blocks(logits, n, s->bmax, m);
    if (!(p->temperature > 0)) return best;
    double u = rng_uniform(s->rng);   /* drawn first so that every call advances by one */
    float inv_t = 1.0f / p->temperature;
    if (!(m > -INFINITY && m < INFINITY && inv_t < INFINITY)) return best;
    float min_p = p->min_p < 1 ? p->min_p : 1;   /* the best token (p = 1) always stays */
    cand *c = s->cand;
    size_t nc;

    if (p->top_k > 0 && (size_t)p->top_k < n) {
        /* top-k, then top-p over the k renormalised (as Hugging Face does), then min-p,
         * which keeps a best-first run and so can filter before top-p: the shorter of
         * the two runs is their intersection. */
        nc = gather_top_k(s, logits, m, inv_t, (size_t)p->top_k);
        double total = 0;
        for (size_t j = 0; j < nc; j++) total += c[j].p;
        if (min_p > 0) {
            size_t kept = 0;
            for (size_t j = 0; j < nc; j++)
                if (c[j].p >= min_p) c[kept++] = c[j];
            nc = kept;
        }
        if (p->top_p < 1 && nc > 1) {
            float z_lo = 0;
            for (size_t j = 0; j < nc; j++) z_lo = c[j].z < z_lo ? c[j].z : z_lo;
            nc = select_top_p(s, c, nc, (double)p->top_p * total, z_lo);
        }
        return draw(c, nc, u);
    }

    double total = kern_exp(logits, n, m, inv_t, s->z_floor, s->prob, s->bsum);
    if (!(p->top_p < 1) && !(min_p > 0)) return draw_all(s, total, u, best);

    /* A token with p below (1 - top_p) * total / n_vocab cannot be in the nucleus:
     * it and everything ranked below it weigh less than the 1 - top_p left out. So
     * only tokens above that (and above min-p's bar) become candidates. */
    float bar = s->p_cut;
    if (min_p > bar) bar = min_p;
    if (p->top_p < 1) {
        float nucleus_bar = (float)((1.0 - (double)p->top_p) * total / (double)n);
        if (nucleus_bar > bar) bar = nucleus_bar;
    }
    if (bar > 1) bar = 1;   /* top_p <= 0 */
    nc = gather_above(s, logits, m, inv_t, bar);
    if (p->top_p < 1 && nc > 1) nc = select_top_p(s, c, nc, (double)p->top_p * total, logf(bar));
    return draw(c, nc, u);
}

int32_t sampler_sample(sg_sampler *s, float *logits, const int32_t *history, size_t n_history,
                       sg_sample_info *info) {
    double shift = 0;
    if (info) logprobs_raw(s, logits, info, &shift);
    size_t n_seen = penalties_apply(s, logits, history, n_history);
    int32_t id = sample_filtered(s, logits);
    if (info) {
        float raw = n_seen > 0 && s->count[id] > 0 ? s->orig[id] : logits[id];
        info->logprob = (float)(raw - shift);
    }
    penalties_clear(s, n_seen);
    return id;
}

/* ---- stop strings ---- */

struct sg_stop {
    char **str;        /* the non-empty stop strings */
    size_t *len;
    int *index;        /* position of each in the caller's array */
    size_t n;
    size_t max_len;
    sg_buf held;       /* text that might still be the start of a stop string */
    int which;         /* index of the matched stop, -1 before a match */
};

sg_stop *stop_new(const char *const *stops, size_t n) {
    sg_stop *s = sg_xcalloc(1, sizeof *s);
    s->str = sg_xcalloc(n, sizeof *s->str);
    s->len = sg_xcalloc(n, sizeof *s->len);
    s->index = sg_xcalloc(n, sizeof *s->index);
    for (size_t i = 0; i < n; i++) {
        if (!stops || !stops[i] || !stops[i][0]) continue;   /* "" would match everywhere */
        size_t l = strlen(stops[i]);
        s->str[s->n] = sg_xstrndup(stops[i], l);
        s->len[s->n] = l;
        s->index[s->n] = (int)i;
        if (l > s->max_len) s->max_len = l;
        s->n++;
    }
    sg_buf_init(&s->held);
    s->which = -1;
    return s;
}

void stop_free(sg_stop *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) free(s->str[i]);
    free(s->str);
    free(s->len);
    free(s->index);
    sg_buf_free(&s->held);
    free(s);
}

/* Releases held[0, n) to out and keeps the rest. */
static void stop_release(sg_stop *s, size_t n, sg_buf *out) {
    if (out) sg_buf_append(out, s->held.data, n);
    memmove(s->held.data, s->held.data + n, s->held.len - n);
    s->held.len -= n;
    s->held.data[s->held.len] = 0;
}

int stop_feed(sg_stop *s, const char *text, size_t len, void *out) {
    if (s->which >= 0) return 1;
    sg_buf_append(&s->held, text, len);
    const char *h = s->held.data;
    size_t hl = s->held.len;

    /* A complete stop string: the earliest start wins. Held text is never longer than
     * max_len - 1 plus this piece, so a plain search is cheap. */
    size_t at = SIZE_MAX;
    for (size_t k = 0; k < s->n; k++) {
        const char *f = memmem(h, hl, s->str[k], s->len[k]);
        if (f && (size_t)(f - h) < at) {
            at = (size_t)(f - h);
            s->which = s->index[k];
        }
    }
    if (at != SIZE_MAX) {
        stop_release(s, at, out);
        sg_buf_reset(&s->held);
        return 1;
    }

    /* Otherwise hold back the longest suffix that is a proper prefix of some stop:
     * anything before it cannot begin a stop string. */
    size_t keep = hl;
    size_t from = s->max_len == 0 ? hl : hl > s->max_len - 1 ? hl - (s->max_len - 1) : 0;
    for (size_t j = from; j < hl && keep == hl; j++) {
        size_t tail = hl - j;
        for (size_t k = 0; k < s->n; k++) {
            if (s->len[k] > tail && memcmp(h + j, s->str[k], tail) == 0) {
                keep = j;
                break;
            }
        }
    }
    stop_release(s, keep, out);
    return 0;
}

void stop_flush(sg_stop *s, void *out) {
    if (s->held.len) stop_release(s, s->held.len, out);
}

int stop_which(const sg_stop *s) { return s->which; }
