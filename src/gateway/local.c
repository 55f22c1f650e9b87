/* local.c: the local model behind a queue (local.h). */
#include "gateway/local.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"
#include "engine/chat.h"
#include "engine/generate.h"
#include "engine/infer.h"
#include "engine/tokenizer.h"

/* An event copied out of the worker, waiting for the loop thread. */
typedef struct queued_event {
    gw_event ev;
    char *text, *id, *name;   /* owned copies behind ev's pointers */
} queued_event;

struct local_job {
    gw_local *lm;
    json_t *request;              /* own reference */
    gw_event_fn on_event;
    local_done_fn on_done;
    void *ctx;
    atomic_bool cancelled;
    atomic_int refs;
    /* outbox: guarded by mu */
    pthread_mutex_t mu;
    queued_event *events;
    size_t n_events, cap_events;
    bool posted, finished;
    int status;
    char *message;
    gw_usage usage;
    local_job *next;              /* queue link, guarded by lm->mu */
};

struct gw_local {
    loop *loop;
    sg_model *m;
    sg_infer *inf;
    chat_kind kind;
    sg_ids turn_end;              /* extra end-of-turn ids (<|im_end|>, ...) */
    sg_ids cached;                /* prompt ids whose keys and values are in inf (worker only) */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    local_job *head, *tail;
    int queued, running, max_queue;
    bool stop;
    uint64_t next_id;
};

static void job_release(local_job *j) {
    if (atomic_fetch_sub(&j->refs, 1) != 1) return;
    for (size_t i = 0; i < j->n_events; i++) {
        free(j->events[i].text); free(j->events[i].id); free(j->events[i].name);
    }
    free(j->events);
    free(j->message);
    json_decref(j->request);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

/* ---- loop side ---- */

static void job_drain(loop *l, void *arg) {
    (void)l;
    local_job *j = arg;
    pthread_mutex_lock(&j->mu);
    queued_event *evs = j->events;
    size_t n = j->n_events;
    j->events = NULL;
    j->n_events = j->cap_events = 0;
    j->posted = false;
    bool finished = j->finished;
    pthread_mutex_unlock(&j->mu);
    bool live = !atomic_load(&j->cancelled);
    for (size_t i = 0; i < n; i++) {
        if (live && j->on_event && j->on_event(j->ctx, &evs[i].ev) != 0) live = false;
        free(evs[i].text); free(evs[i].id); free(evs[i].name);
    }
    free(evs);
    if (finished && !atomic_exchange(&j->cancelled, true)) {   /* the owner's reference ends here */
        if (j->on_done) j->on_done(j->ctx, j->status, j->message, &j->usage);
        job_release(j);
    }
    job_release(j);   /* the post's reference */
}

/* Worker: hands what is in the outbox to the loop thread (one post in flight). */
static void job_flush(local_job *j) {
    bool post = false;
    pthread_mutex_lock(&j->mu);
    if (!j->posted && (j->n_events || j->finished)) { j->posted = true; post = true; }
    pthread_mutex_unlock(&j->mu);
    if (post) {
        atomic_fetch_add(&j->refs, 1);
        if (loop_post(j->lm->loop, job_drain, j) != 0) job_release(j);
    }
}

static char *dup_n(const char *s, size_t n) { return s ? sg_xstrndup(s, n) : NULL; }

static void job_emit(local_job *j, const gw_event *ev) {
    queued_event q = {.ev = *ev};
    q.text = dup_n(ev->text, ev->len);
    q.id = ev->id ? sg_xstrdup(ev->id) : NULL;
    q.name = ev->name ? sg_xstrdup(ev->name) : NULL;
    q.ev.text = q.text;
    q.ev.id = q.id;
    q.ev.name = q.name;
    pthread_mutex_lock(&j->mu);
    if (j->n_events == j->cap_events) {
        j->cap_events = j->cap_events ? 2 * j->cap_events : 16;
        j->events = sg_xrealloc(j->events, j->cap_events * sizeof *j->events);
    }
    j->events[j->n_events++] = q;
    pthread_mutex_unlock(&j->mu);
}

void local_cancel(local_job *j) {
    if (!j) return;
    if (atomic_exchange(&j->cancelled, true)) return;   /* already finished or cancelled */
    job_release(j);   /* the owner's reference */
}

/* ---- worker side ---- */

typedef struct gen_state {
    local_job *job;
    chat_stream *cs;
    int n_tool_calls;
    sg_buf reasoning;
    int tokens_since_flush;
} gen_state;

static void on_chat_event(void *user, const chat_event *ce) {
    gen_state *g = user;
    gw_event ev = {0};
    char *args = NULL;
    switch (ce->kind) {
    case CHAT_EV_REASONING:
        ev.kind = GW_EV_REASONING;
        ev.text = ce->text;
        ev.len = ce->len;
        sg_buf_append(&g->reasoning, ce->text, ce->len);
        break;
    case CHAT_EV_CONTENT:
        ev.kind = GW_EV_TEXT;
        ev.text = ce->text;
        ev.len = ce->len;
        break;
    case CHAT_EV_TOOL_CALL: {
        const json_t *fn = json_object_get(ce->tool_call, "function");
        ev.kind = GW_EV_TOOL_CALL;
        ev.index = ce->index;
        ev.id = json_string_value(json_object_get(ce->tool_call, "id"));
        ev.name = json_string_value(json_object_get(fn, "name"));
        const char *a = json_string_value(json_object_get(fn, "arguments"));
        args = sg_xstrdup(a ? a : "{}");
        ev.text = args;
        ev.len = strlen(args);
        g->n_tool_calls++;
        break;
    }
    }
    if (ev.len || ev.kind == GW_EV_TOOL_CALL) job_emit(g->job, &ev);
    free(args);
}

static int on_token(void *ctx, int32_t id, const char *text, size_t len, const sg_sample_info *info) {
    (void)id; (void)info;
    gen_state *g = ctx;
    if (atomic_load(&g->job->cancelled)) return 1;
    if (text && len) chat_stream_feed(g->cs, text, len);
    job_flush(g->job);
    return 0;
}

static double num_or(const json_t *o, const char *key, double dflt) {
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

/* Sampling and limits from an OpenAI-shaped request. */
static void gen_params_from_request(const json_t *r, const sg_model *m, sg_gen_params *p, const char **stops,
                                    size_t *n_stops) {
    gen_params_default(p);
    /* SmolLM3's recommended defaults when the request leaves them out */
    p->sampling.temperature = (float)num_or(r, "temperature", 0.6);
    p->sampling.top_p = (float)num_or(r, "top_p", 0.95);
    p->sampling.top_k = (int)num_or(r, "top_k", 0);
    p->sampling.min_p = (float)num_or(r, "min_p", 0);
    p->sampling.presence_penalty = (float)num_or(r, "presence_penalty", 0);
    p->sampling.frequency_penalty = (float)num_or(r, "frequency_penalty", 0);
    p->sampling.repetition_penalty = (float)num_or(r, "repetition_penalty", 1);
    const json_t *seed = json_object_get(r, "seed");
    p->sampling.seed = json_is_integer(seed) ? (uint64_t)json_integer_value(seed) : (uint64_t)time(NULL) ^ (uint64_t)clock();
    double mt = num_or(r, "max_completion_tokens", num_or(r, "max_tokens", 0));
    p->max_tokens = mt > 0 ? (int)mt : 0;
    (void)m;
    *n_stops = 0;
    const json_t *st = json_object_get(r, "stop");
    if (json_is_string(st)) stops[(*n_stops)++] = json_string_value(st);
    else if (json_is_array(st)) {
        size_t i;
        json_t *v;
        json_array_foreach(st, i, v) if (json_is_string(v) && *n_stops < 4) stops[(*n_stops)++] = json_string_value(v);
    }
    p->stops = stops;
    p->n_stops = *n_stops;
}

static void run_job(gw_local *lm, local_job *j) {
    const json_t *r = j->request;
    sg_error err = {{0}};
    sg_buf prompt;
    sg_buf_init(&prompt);
    sg_ids ids = {0};
    gen_state g = {.job = j};
    sg_buf_init(&g.reasoning);
    j->status = 500;

    /* the prompt */
    chat_options co = {.enable_thinking = -1, .add_generation_prompt = true};
    const json_t *kw = json_object_get(r, "chat_template_kwargs");
    const json_t *et = json_object_get(kw, "enable_thinking");
    if (json_is_boolean(et)) co.enable_thinking = json_is_true(et);
    const char *effort = json_string_value(json_object_get(r, "reasoning_effort"));
    if (effort) co.enable_thinking = strcmp(effort, "none") != 0;
    const json_t *tools = json_object_get(r, "tools");
    if (chat_render(lm->kind, json_object_get(r, "messages"), json_is_array(tools) ? tools : NULL, &co, &prompt, &err)) {
        j->status = 400;
        j->message = sg_xstrdup(err.msg);
        goto done;
    }
    if (tok_encode(lm->m->tok, prompt.data, prompt.len, true, &ids, &err)) {
        j->status = 400;
        j->message = sg_xstrdup(err.msg);
        goto done;
    }
    if ((int)ids.n >= infer_n_ctx(lm->inf)) {
        j->status = 400;
        char b[160];
        snprintf(b, sizeof b, "the prompt is %zu tokens, the local model's context holds %d", ids.n, infer_n_ctx(lm->inf));
        j->message = sg_xstrdup(b);
        goto done;
    }
    /* reuse the cache for the prefix shared with the previous job */
    size_t common = 0;
    while (common < lm->cached.n && common < ids.n && lm->cached.ids[common] == ids.ids[common]) common++;
    if (common == ids.n) common--;
    infer_truncate(lm->inf, (int)common);
    lm->cached.n = 0;

    const char *stops[4];
    size_t n_stops;
    sg_gen_params gp;
    gen_params_from_request(r, lm->m, &gp, stops, &n_stops);
    gp.stop_ids = lm->turn_end.ids;
    gp.n_stop_ids = lm->turn_end.n;

    char idbuf[48];
    snprintf(idbuf, sizeof idbuf, "chatcmpl-local-%llx", (unsigned long long)(lm->next_id++ ^ (uint64_t)time(NULL) << 20));
    gw_event start = {.kind = GW_EV_START, .id = idbuf, .name = json_string_value(json_object_get(r, "model"))};
    job_emit(j, &start);
    g.cs = chat_stream_new(lm->kind, chat_prompt_opens_reasoning(prompt.data, prompt.len), on_chat_event, &g);
    sg_gen_result res;
    int rc = gen_run(lm->inf, ids.ids + common, (int)(ids.n - common), &gp, on_token, &g, &res, &err);
    chat_stream_finish(g.cs);
    chat_stream_free(g.cs);
    if (rc) {
        j->message = sg_xstrdup(err.msg);
        infer_truncate(lm->inf, 0);
        goto done;
    }
    for (size_t i = 0; i < ids.n; i++) sg_ids_push(&lm->cached, ids.ids[i]);
    infer_truncate(lm->inf, (int)ids.n);
    gw_event fin = {.kind = GW_EV_FINISH,
                    .finish = g.n_tool_calls ? "tool_calls" : !strcmp(res.finish_reason, "length") ? "length" : "stop"};
    job_emit(j, &fin);
    gw_usage_init(&j->usage);
    j->usage.input = (int64_t)ids.n;
    j->usage.cache_read = 0;
    j->usage.cache_write = 0;
    j->usage.output = res.n_generated;
    sg_ids rids = {0};
    if (g.reasoning.len) tok_encode(lm->m->tok, g.reasoning.data, g.reasoning.len, false, &rids, NULL);
    j->usage.reasoning = (int64_t)rids.n;
    sg_ids_free(&rids);
    gw_event us = {.kind = GW_EV_USAGE, .usage = j->usage};
    job_emit(j, &us);
    j->status = 200;
    SG_DEBUG("local: %d prompt tokens (%zu reused), %d generated, %.1f tok/s", res.n_prompt, common,
             res.n_generated, res.gen_ms > 0 ? res.n_generated * 1000.0 / res.gen_ms : 0.0);
done:
    if (j->status != 200 && !j->message) j->message = sg_xstrdup("the local model failed");
    sg_buf_free(&prompt);
    sg_buf_free(&g.reasoning);
    sg_ids_free(&ids);
    pthread_mutex_lock(&j->mu);
    j->finished = true;
    pthread_mutex_unlock(&j->mu);
    job_flush(j);
}

static void *worker_main(void *arg) {
    gw_local *lm = arg;
    for (;;) {
        pthread_mutex_lock(&lm->mu);
        while (!lm->head && !lm->stop) pthread_cond_wait(&lm->cv, &lm->mu);
        if (lm->stop) { pthread_mutex_unlock(&lm->mu); return NULL; }
        local_job *j = lm->head;
        lm->head = j->next;
        if (!lm->head) lm->tail = NULL;
        lm->queued--;
        lm->running = 1;
        pthread_mutex_unlock(&lm->mu);
        if (!atomic_load(&j->cancelled)) run_job(lm, j);
        job_release(j);   /* the worker's reference */
        pthread_mutex_lock(&lm->mu);
        lm->running = 0;
        pthread_mutex_unlock(&lm->mu);
    }
}

/* ---- lifecycle ---- */

gw_local *local_new(loop *l, const char *path, const local_opts *o, sg_error *err) {
    sg_model *m = model_load(path, err);
    if (!m) return NULL;
    if (!m->tok) {
        model_free(m);
        sg_fail(err, "%s has no tokenizer: a served model needs one", path);
        return NULL;
    }
    sg_infer_params ip;
    infer_params_default(&ip);
    ip.n_threads = o ? o->threads : 0;
    ip.n_ctx = o && o->ctx > 0 ? o->ctx : (m->cfg.max_ctx < 8192 ? m->cfg.max_ctx : 8192);
    sg_infer *inf = infer_new(m, &ip, err);
    if (!inf) { model_free(m); return NULL; }
    gw_local *lm = sg_xcalloc(1, sizeof *lm);
    lm->loop = l;
    lm->m = m;
    lm->inf = inf;
    lm->kind = chat_detect(m->chat_template);
    lm->max_queue = o && o->queue > 0 ? o->queue : 16;
    static const char *ends[] = {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>"};
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        int32_t id = tok_find(m->tok, ends[i]);
        if (id >= 0) sg_ids_push(&lm->turn_end, id);
    }
    pthread_mutex_init(&lm->mu, NULL);
    pthread_cond_init(&lm->cv, NULL);
    if (pthread_create(&lm->thread, NULL, worker_main, lm) != 0) {
        infer_free(inf);
        model_free(m);
        free(lm);
        sg_fail(err, "cannot start the local model's worker thread");
        return NULL;
    }
    return lm;
}

void local_free(gw_local *lm) {
    if (!lm) return;
    pthread_mutex_lock(&lm->mu);
    lm->stop = true;
    for (local_job *j = lm->head; j; j = j->next) atomic_store(&j->cancelled, true);
    pthread_cond_broadcast(&lm->cv);
    pthread_mutex_unlock(&lm->mu);
    pthread_join(lm->thread, NULL);
    while (lm->head) {
        local_job *j = lm->head;
        lm->head = j->next;
        job_release(j);
    }
    infer_free(lm->inf);
    model_free(lm->m);
    sg_ids_free(&lm->turn_end);
    sg_ids_free(&lm->cached);
    pthread_mutex_destroy(&lm->mu);
    pthread_cond_destroy(&lm->cv);
    free(lm);
}

const sg_model *local_model(const gw_local *lm) { return lm->m; }

int local_load(const gw_local *lm) {
    pthread_mutex_lock((pthread_mutex_t *)&lm->mu);
    int n = lm->queued + lm->running;
    pthread_mutex_unlock((pthread_mutex_t *)&lm->mu);
    return n;
}

local_job *local_submit(gw_local *lm, const json_t *request, gw_event_fn on_event, local_done_fn on_done,
                        void *ctx, int *status, sg_error *err) {
    if (!json_is_array(json_object_get(request, "messages"))) {
        *status = 400;
        sg_fail(err, "messages must be an array");
        return NULL;
    }
    local_job *j = sg_xcalloc(1, sizeof *j);
    j->lm = lm;
    j->request = json_deep_copy(request);   /* the worker reads it on its own thread */
    j->on_event = on_event;
    j->on_done = on_done;
    j->ctx = ctx;
    atomic_init(&j->refs, 2);               /* the owner's and the worker's */
    atomic_init(&j->cancelled, false);
    pthread_mutex_init(&j->mu, NULL);
    pthread_mutex_lock(&lm->mu);
    if (lm->queued >= lm->max_queue) {
        pthread_mutex_unlock(&lm->mu);
        j->refs = 1;
        job_release(j);
        *status = 429;
        sg_fail(err, "the local model's queue is full (%d waiting)", lm->max_queue);
        return NULL;
    }
    if (lm->tail) lm->tail->next = j;
    else lm->head = j;
    lm->tail = j;
    lm->queued++;
    pthread_cond_signal(&lm->cv);
    pthread_mutex_unlock(&lm->mu);
    *status = 200;
    return j;
}
