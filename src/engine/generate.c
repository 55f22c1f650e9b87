/* generate.c: see generate.h. */
#include "engine/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "engine/tokenizer.h"

double gen_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void gen_params_default(sg_gen_params *p) {
    memset(p, 0, sizeof *p);
    sampler_params_default(&p->sampling);
    p->max_tokens = 256;
    p->draft = SPEC_DEFAULT_DRAFT;
}

static bool is_stop_id(const sg_gen_params *p, const sg_model *m, int32_t id) {
    if (p->ignore_eos) return false;
    if (id == m->cfg.eos_id) return true;
    for (size_t i = 0; i < p->n_stop_ids; i++)
        if (p->stop_ids[i] == id) return true;
    return false;
}

struct sg_gen_seq {
    const sg_model *m;
    sg_gen_params p;
    int limit;                  /* tokens to sample at most */
    sg_sampler *smp;
    sg_stop *stop;
    tok_stream ts;
    sg_ids hist;                /* prompt and generated ids (penalties) */
    sg_buf piece, text;
    sg_gen_result res;
    bool ended;
    sg_grammar_state *gst;      /* constrained decoding, or NULL */
    uint32_t *allow;            /* (n_vocab / 32) the grammar's mask this step */
    float *end_saved;           /* (n_stop_ids) their logits while the mask is applied */
    size_t n_gvocab;            /* ids the grammar's vocabulary covers */
    sg_spec spec;               /* drafting state (speculate.h) */
};

sg_gen_seq *gen_seq_new(const sg_model *m, const int32_t *prompt, int n_prompt, int room, const sg_gen_params *p) {
    const sg_grammar_vocab *gv = NULL;
    if (p->grammar && (!m->tok || !(gv = grammar_vocab_get(m->tok)))) return NULL;
    sg_gen_seq *g = sg_xcalloc(1, sizeof *g);
    if (gv) {
        g->gst = p->lazy.trigger ? grammar_state_new_lazy(p->grammar, gv, &p->lazy) : grammar_state_new(p->grammar, gv);
        if (!g->gst) { free(g); return NULL; }
        g->n_gvocab = grammar_vocab_n(gv);
        g->allow = sg_xcalloc((g->n_gvocab + 31) / 32, sizeof *g->allow);
        g->end_saved = sg_xcalloc(p->n_stop_ids + 1, sizeof *g->end_saved);
    }
    g->m = m;
    g->p = *p;
    g->limit = p->max_tokens > 0 && p->max_tokens < room + 1 ? p->max_tokens : room + 1;
    for (int i = 0; i < n_prompt; i++) sg_ids_push(&g->hist, prompt[i]);
    g->smp = sampler_new(&p->sampling, (size_t)m->cfg.n_vocab);
    g->stop = p->n_stops ? stop_new(p->stops, p->n_stops) : NULL;
    tok_stream_init(&g->ts);
    sg_buf_init(&g->piece);
    sg_buf_init(&g->text);
    g->res.n_prompt = n_prompt;
    g->res.finish_reason = "length";
    spec_init(&g->spec, p->draft);
    if (p->draft_source) {
        g->spec.source = p->draft_source;
        g->spec.source_ctx = p->draft_ctx;
    }
    return g;
}

void gen_seq_free(sg_gen_seq *g) {
    if (!g) return;
    sg_ids_free(&g->hist);
    sampler_free(g->smp);
    if (g->stop) stop_free(g->stop);
    sg_buf_free(&g->piece);
    sg_buf_free(&g->text);
    grammar_state_free(g->gst);
    free(g->allow);
    free(g->end_saved);
    free(g);
}

const sg_gen_result *gen_seq_result(const sg_gen_seq *g) { return &g->res; }

/* Generation has ended: release what the stream decoder and the stop matcher still
 * hold, unless a stop string cut the text or the caller went away. */
static int seq_end(sg_gen_seq *g, bool hit_stop_string, sg_gen_token_fn on_token, void *ctx) {
    g->ended = true;
    if (g->m->tok && !hit_stop_string && strcmp(g->res.finish_reason, "cancelled") != 0) {
        sg_buf_reset(&g->piece);
        sg_buf_reset(&g->text);
        tok_stream_flush(&g->ts, &g->piece);
        const char *pc = g->piece.data ? g->piece.data : "";
        if (g->stop) { stop_feed(g->stop, pc, g->piece.len, &g->text); stop_flush(g->stop, &g->text); }
        else sg_buf_append(&g->text, pc, g->piece.len);
        if (g->text.len && on_token) on_token(ctx, -1, g->text.data, g->text.len, NULL);
    }
    return 1;
}

/* Masks the logits the grammar forbids; the end tokens (special, so never in the
 * grammar's mask) keep theirs where the grammar may end. Returns false when nothing at
 * all is allowed. */
static bool grammar_mask(sg_gen_seq *g, float *logits) {
    const sg_model *m = g->m;
    const sg_gen_params *p = &g->p;
    size_t n_allowed = grammar_state_mask(g->gst, g->allow);
    bool may_end = grammar_state_is_accepting(g->gst) && !p->ignore_eos;
    size_t nv = (size_t)m->cfg.n_vocab;
    float eos = m->cfg.eos_id >= 0 && (size_t)m->cfg.eos_id < nv ? logits[m->cfg.eos_id] : 0;
    for (size_t i = 0; i < p->n_stop_ids; i++)
        g->end_saved[i] = p->stop_ids[i] >= 0 && (size_t)p->stop_ids[i] < nv ? logits[p->stop_ids[i]] : 0;
    for (size_t w = 0; w * 32 < nv; w++) {
        uint32_t bits = w * 32 < g->n_gvocab ? g->allow[w] : 0;
        if (bits == 0xffffffffu && (w + 1) * 32 <= g->n_gvocab) continue;
        for (size_t i = w * 32; i < (w + 1) * 32 && i < nv; i++)
            if (!(i < g->n_gvocab && ((bits >> (i & 31)) & 1))) logits[i] = -INFINITY;
    }
    if (may_end) {
        if (m->cfg.eos_id >= 0 && (size_t)m->cfg.eos_id < nv) logits[m->cfg.eos_id] = eos;
        for (size_t i = 0; i < p->n_stop_ids; i++)
            if (p->stop_ids[i] >= 0 && (size_t)p->stop_ids[i] < nv) logits[p->stop_ids[i]] = g->end_saved[i];
    }
    return n_allowed > 0 || may_end;
}

int gen_seq_step(sg_gen_seq *g, float *logits, sg_gen_token_fn on_token, void *ctx, int32_t *next) {
    if (g->ended) return 1;
    const sg_model *m = g->m;
    const sg_gen_params *p = &g->p;
    sg_sample_info info = {0};
    if (g->gst) {
        double t0 = gen_now_ms();
        bool alive = grammar_mask(g, logits);
        g->res.grammar_ms += gen_now_ms() - t0;
        if (!alive) {   /* a dead end: no grammar in this file makes one */
            g->res.finish_reason = "stop";
            g->res.incomplete = true;
            return seq_end(g, false, on_token, ctx);
        }
    }
    /* log-probabilities cost a pass over the vocabulary: only when asked for */
    int32_t id = sampler_sample(g->smp, logits, g->hist.ids, g->hist.n, p->sampling.n_logprobs > 0 ? &info : NULL);
    sg_ids_push(&g->hist, id);
    if (is_stop_id(p, m, id)) { g->res.finish_reason = "stop"; return seq_end(g, false, on_token, ctx); }
    if (g->gst) grammar_state_advance(g->gst, id);   /* allowed by the mask: cannot fail */
    g->res.n_generated++;
    int stopped = 0;
    sg_buf_reset(&g->text);
    if (m->tok) {
        sg_buf_reset(&g->piece);
        /* special tokens are left out of the text, but those a grammar reads as text */
        tok_stream_push(m->tok, &g->ts, id, !(g->gst && grammar_token_is_text(g->gst, id)), &g->piece);
        const char *pc = g->piece.data ? g->piece.data : "";
        if (g->stop) stopped = stop_feed(g->stop, pc, g->piece.len, &g->text);
        else sg_buf_append(&g->text, pc, g->piece.len);
    }
    if (on_token && on_token(ctx, id, m->tok ? (g->text.data ? g->text.data : "") : NULL, g->text.len,
                             p->sampling.n_logprobs > 0 ? &info : NULL)) {
        g->res.finish_reason = "cancelled";
        return seq_end(g, false, on_token, ctx);
    }
    if (stopped) {
        g->res.finish_reason = "stop";
        if (g->gst && !grammar_state_is_accepting(g->gst)) g->res.incomplete = true;
        return seq_end(g, true, on_token, ctx);
    }
    if (g->gst && grammar_state_is_complete(g->gst)) { g->res.finish_reason = "stop"; return seq_end(g, false, on_token, ctx); }
    if (g->res.n_generated == g->limit) {
        if (g->gst && !grammar_state_is_accepting(g->gst)) g->res.incomplete = true;
        return seq_end(g, false, on_token, ctx);
    }
    *next = id;
    return 0;
}

int gen_seq_draft(sg_gen_seq *g, int room, int32_t *draft) {
    if (g->ended) return 0;
    /* each draft token is one more sample: none past the answer's limit */
    int left = g->limit - g->res.n_generated - 1;
    int limit = room < left ? room : left;
    int k = spec_draft(&g->spec, g->hist.ids, g->hist.n, limit, draft);
    if (k > 0 && g->gst) {
        /* a draft token the grammar refuses would only be rejected after a wasted pass
         * (the draft follows the token sampled last, which the state has taken) */
        double t0 = gen_now_ms();
        k = grammar_state_allowed_prefix(g->gst, draft, k);
        g->res.grammar_ms += gen_now_ms() - t0;
    }
    return k;
}

int gen_seq_verify(sg_gen_seq *g, float *rows, size_t row_stride, const int32_t *draft, int k,
                   sg_gen_token_fn on_token, void *ctx, int32_t *next, int *kept) {
    int accepted = 0, rc;
    for (;;) {
        rc = gen_seq_step(g, rows + (size_t)accepted * row_stride, on_token, ctx, next);
        if (rc != 0 || accepted == k || *next != draft[accepted]) break;
        accepted++;   /* the token sampled here is the draft's: its row is valid */
    }
    *kept = 1 + accepted;
    g->res.n_drafted += k;
    g->res.n_accepted += accepted;
    spec_update(&g->spec, k, accepted);
    return rc;
}

int gen_run(sg_infer *inf, const int32_t *prompt, int n_prompt, const sg_gen_params *p,
            sg_gen_token_fn on_token, void *ctx, sg_gen_result *res, sg_error *err) {
    const sg_model *m = infer_model(inf);
    memset(res, 0, sizeof *res);
    res->n_prompt = n_prompt;
    res->finish_reason = "length";
    size_t V = (size_t)m->cfg.n_vocab;
    /* a row per token of a speculation round */
    float *logits = sg_xmalloc((p->draft > 0 ? 1 + SPEC_MAX_DRAFT : 1) * V * sizeof(float));
    int32_t round[1 + SPEC_MAX_DRAFT];
    sg_gen_seq *g = NULL;
    int rc = 0;

    double t0 = gen_now_ms();
    if (infer_eval(inf, prompt, n_prompt, logits, false, err)) { rc = -1; goto done; }
    double t1 = gen_now_ms();
    res->prompt_ms = t1 - t0;

    g = gen_seq_new(m, prompt, n_prompt, infer_n_ctx(inf) - infer_n_past(inf), p);
    if (!g) { rc = sg_fail(err, "a grammar needs the model's tokenizer"); goto done; }
    int32_t next;
    int st = gen_seq_step(g, logits, on_token, ctx, &next);
    while (st == 0) {
        int base = infer_n_past(inf);
        int k = gen_seq_draft(g, infer_n_ctx(inf) - base - 1, round + 1);
        round[0] = next;
        g->res.n_passes++;
        if (infer_eval(inf, round, 1 + k, logits, k > 0, err)) { rc = -1; goto done; }
        if (k == 0) { st = gen_seq_step(g, logits, on_token, ctx, &next); continue; }
        int kept;
        st = gen_seq_verify(g, logits, V, round + 1, k, on_token, ctx, &next, &kept);
        infer_truncate(inf, base + kept);   /* the rejected draft's keys and values go */
    }
    res->n_drafted = g->res.n_drafted;
    res->n_accepted = g->res.n_accepted;
    res->n_passes = g->res.n_passes;
    res->grammar_ms = g->res.grammar_ms;
    res->n_generated = g->res.n_generated;
    res->finish_reason = g->res.finish_reason;
    res->incomplete = g->res.incomplete;
    res->gen_ms = gen_now_ms() - t1;
done:
    if (rc && g) res->n_generated = g->res.n_generated;
    free(logits);
    gen_seq_free(g);
    return rc;
}
