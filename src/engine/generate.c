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

int gen_run(sg_infer *inf, const int32_t *prompt, int n_prompt, const sg_gen_params *p,
            sg_gen_token_fn on_token, void *ctx, sg_gen_result *res, sg_error *err) {
    const sg_model *m = infer_model(inf);
    int n_vocab = m->cfg.n_vocab;
    memset(res, 0, sizeof *res);
    res->n_prompt = n_prompt;
    res->finish_reason = "length";
    float *logits = sg_xmalloc((size_t)n_vocab * sizeof(float));
    sg_ids hist = {0};
    for (int i = 0; i < n_prompt; i++) sg_ids_push(&hist, prompt[i]);
    sg_sampler *smp = sampler_new(&p->sampling, (size_t)n_vocab);
    sg_stop *stop = p->n_stops ? stop_new(p->stops, p->n_stops) : NULL;
    tok_stream ts;
    tok_stream_init(&ts);
    sg_buf piece, text;
    sg_buf_init(&piece);
    sg_buf_init(&text);
    int rc = 0;
    bool hit_stop_string = false;

    double t0 = gen_now_ms();
    if (infer_eval(inf, prompt, n_prompt, logits, false, err)) { rc = -1; goto done; }
    double t1 = gen_now_ms();
    res->prompt_ms = t1 - t0;

    int room = infer_n_ctx(inf) - infer_n_past(inf);
    int limit = p->max_tokens > 0 && p->max_tokens < room + 1 ? p->max_tokens : room + 1;
    for (int i = 0; i < limit; i++) {
        sg_sample_info info = {0};
        /* log-probabilities cost a pass over the vocabulary: only when asked for */
        int32_t id = sampler_sample(smp, logits, hist.ids, hist.n, p->sampling.n_logprobs > 0 ? &info : NULL);
        sg_ids_push(&hist, id);
        if (is_stop_id(p, m, id)) { res->finish_reason = "stop"; break; }
        res->n_generated++;
        int stopped = 0;
        sg_buf_reset(&text);
        if (m->tok) {
            sg_buf_reset(&piece);
            tok_stream_push(m->tok, &ts, id, true, &piece);
            if (stop) stopped = stop_feed(stop, piece.data ? piece.data : "", piece.len, &text);
            else sg_buf_append(&text, piece.data ? piece.data : "", piece.len);
        }
        if (on_token && on_token(ctx, id, m->tok ? (text.data ? text.data : "") : NULL, text.len,
                                 p->sampling.n_logprobs > 0 ? &info : NULL)) {
            res->finish_reason = "cancelled";
            break;
        }
        if (stopped) { res->finish_reason = "stop"; hit_stop_string = true; break; }
        if (i + 1 == limit) break;
        if (infer_eval(inf, &id, 1, logits, false, err)) { rc = -1; goto done; }
    }
    /* release what the stream decoder and the stop matcher still hold */
    if (m->tok && !hit_stop_string && strcmp(res->finish_reason, "cancelled") != 0) {
        sg_buf_reset(&piece);
        sg_buf_reset(&text);
        tok_stream_flush(&ts, &piece);
        if (stop) { stop_feed(stop, piece.data ? piece.data : "", piece.len, &text); stop_flush(stop, &text); }
        else sg_buf_append(&text, piece.data ? piece.data : "", piece.len);
        if (text.len && on_token) on_token(ctx, -1, text.data, text.len, NULL);
    }
    res->gen_ms = gen_now_ms() - t1;
done:
    free(logits);
    sg_ids_free(&hist);
    sampler_free(smp);
    if (stop) stop_free(stop);
    sg_buf_free(&piece);
    sg_buf_free(&text);
    return rc;
}
