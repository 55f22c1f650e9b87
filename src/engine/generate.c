/* generate.c: see generate.h. */
#include "engine/generate.h"

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
};

sg_gen_seq *gen_seq_new(const sg_model *m, const int32_t *prompt, int n_prompt, int room, const sg_gen_params *p) {
    sg_gen_seq *g = sg_xcalloc(1, sizeof *g);
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
    return g;
}

void gen_seq_free(sg_gen_seq *g) {
    if (!g) return;
    sg_ids_free(&g->hist);
    sampler_free(g->smp);
    if (g->stop) stop_free(g->stop);
    sg_buf_free(&g->piece);
    sg_buf_free(&g->text);
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

int gen_seq_step(sg_gen_seq *g, float *logits, sg_gen_token_fn on_token, void *ctx, int32_t *next) {
    if (g->ended) return 1;
    const sg_model *m = g->m;
    const sg_gen_params *p = &g->p;
    sg_sample_info info = {0};
    /* log-probabilities cost a pass over the vocabulary: only when asked for */
    int32_t id = sampler_sample(g->smp, logits, g->hist.ids, g->hist.n, p->sampling.n_logprobs > 0 ? &info : NULL);
    sg_ids_push(&g->hist, id);
    if (is_stop_id(p, m, id)) { g->res.finish_reason = "stop"; return seq_end(g, false, on_token, ctx); }
    g->res.n_generated++;
    int stopped = 0;
    sg_buf_reset(&g->text);
    if (m->tok) {
        sg_buf_reset(&g->piece);
        tok_stream_push(m->tok, &g->ts, id, true, &g->piece);
        const char *pc = g->piece.data ? g->piece.data : "";
        if (g->stop) stopped = stop_feed(g->stop, pc, g->piece.len, &g->text);
        else sg_buf_append(&g->text, pc, g->piece.len);
    }
    if (on_token && on_token(ctx, id, m->tok ? (g->text.data ? g->text.data : "") : NULL, g->text.len,
                             p->sampling.n_logprobs > 0 ? &info : NULL)) {
        g->res.finish_reason = "cancelled";
        return seq_end(g, false, on_token, ctx);
    }
    if (stopped) { g->res.finish_reason = "stop"; return seq_end(g, true, on_token, ctx); }
    if (g->res.n_generated == g->limit) return seq_end(g, false, on_token, ctx);
    *next = id;
    return 0;
}

int gen_run(sg_infer *inf, const int32_t *prompt, int n_prompt, const sg_gen_params *p,
            sg_gen_token_fn on_token, void *ctx, sg_gen_result *res, sg_error *err) {
    const sg_model *m = infer_model(inf);
    memset(res, 0, sizeof *res);
    res->n_prompt = n_prompt;
    res->finish_reason = "length";
    float *logits = sg_xmalloc((size_t)m->cfg.n_vocab * sizeof(float));
    sg_gen_seq *g = NULL;
    int rc = 0;

    double t0 = gen_now_ms();
    if (infer_eval(inf, prompt, n_prompt, logits, false, err)) { rc = -1; goto done; }
    double t1 = gen_now_ms();
    res->prompt_ms = t1 - t0;

    g = gen_seq_new(m, prompt, n_prompt, infer_n_ctx(inf) - infer_n_past(inf), p);
    int32_t next;
    while (gen_seq_step(g, logits, on_token, ctx, &next) == 0)
        if (infer_eval(inf, &next, 1, logits, false, err)) { rc = -1; goto done; }
    res->n_generated = g->res.n_generated;
    res->finish_reason = g->res.finish_reason;
    res->gen_ms = gen_now_ms() - t1;
done:
    if (rc && g) res->n_generated = g->res.n_generated;
    free(logits);
    gen_seq_free(g);
    return rc;
}
