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
#include "gateway/local_constraint.h"

/* Prompt tokens a step carries besides the decode tokens of running requests. */
#define LOCAL_CHUNK_WHILE_DECODING 64

/* An event copied out of the worker, waiting for the loop thread. */
typedef struct queued_event {
    gw_event ev;
    char *text, *id, *name;   /* owned copies behind ev's pointers */
} queued_event;

struct local_job {
    gw_local *lm;
    json_t *request;              /* own reference */
    sg_buf gbnf;                  /* the answer's form (local_constraint.h), compiled by the worker */
    const char *gbnf_what;        /* the request's part it comes from; NULL: a free answer */
    sg_grammar *grammar;          /* gbnf compiled, on the worker thread (slot_start) */
    bool lazy;                    /* grammar applies from "<tool_call>" on (tool_choice auto) */
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

typedef struct slot slot;

struct gw_local {
    loop *loop;
    sg_model *m;
    sg_infer *inf;                /* n_slots sequences (worker only) */
    chat_kind kind;
    sg_ids turn_end;              /* extra end-of-turn ids (<|im_end|>, ...) */
    /* worker only */
    slot *slots;                  /* (n_slots) */
    int n_slots, step_tokens;     /* sequences at once; tokens per forward step */
    int draft;                    /* draft tokens per sequence and step at most (0: off) */
    int *step_seq;                /* (step_tokens) a step's tokens: sequence, id, logits wanted */
    int32_t *step_tok;
    bool *step_want;
    float *logits;                /* (n_slots, n_vocab) */
    uint64_t step_no;
    /* statistics, read by local_get_stats on any thread */
    atomic_llong st_steps, st_batched, st_reused, st_drafted, st_accepted;
    atomic_int st_max_active;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    local_job *head, *tail;
    int queued, running, max_queue;   /* running: jobs holding a slot */
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
    grammar_unref(j->grammar);
    sg_buf_free(&j->gbnf);
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
} gen_state;

/* One KV slot of the engine: the job decoding in it, or (job NULL) the tokens a finished
 * job left there, kept to serve a later request's shared prefix. */
typedef struct slot {
    local_job *job;
    sg_ids cached;                /* ids whose keys and values are in the slot (its n_past) */
    sg_ids prompt;                /* the job's prompt */
    size_t fed;                   /* prompt ids in the cache so far */
    size_t reused;                /* of those, copied or kept from the prefix cache */
    bool decoding;                /* prompt done: next is the token to evaluate */
    int32_t next;
    int32_t draft[SPEC_MAX_DRAFT];  /* this step's draft after next (speculate.h) */
    int n_draft, base;            /* its length; the slot's n_past before the step */
    sg_gen_seq *gen;
    sg_gen_params gp;
    const char *stops[4];         /* into job->request */
    gen_state g;
    double t_start, t_decode;     /* ms: admitted, first token sampled */
    uint64_t last_step;           /* when it last ran (the least recent free slot is reused) */
} slot;

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
static void gen_params_from_request(const json_t *r, sg_gen_params *p, const char **stops, size_t *n_stops) {
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

/* The job is over: free its place (before the client can hear of the ending, so that
 * local_load never counts an answered job), hand the ending to the loop thread, drop the
 * worker's reference. */
static void job_end(gw_local *lm, local_job *j, int status, const char *message) {
    pthread_mutex_lock(&lm->mu);
    lm->running--;
    pthread_mutex_unlock(&lm->mu);
    j->status = status;
    if (status != 200 && !j->message) j->message = sg_xstrdup(message ? message : "the local model failed");
    pthread_mutex_lock(&j->mu);
    j->finished = true;
    pthread_mutex_unlock(&j->mu);
    job_flush(j);
    job_release(j);   /* the worker's reference */
}

static size_t common_prefix(const sg_ids *a, const sg_ids *b) {
    size_t n = 0;
    while (n < a->n && n < b->n && a->ids[n] == b->ids[n]) n++;
    return n;
}

/* Picks a free slot for a prompt and fills it with the longest prefix of the prompt that
 * any slot's cache holds (running sequences included). A free slot whose whole cache
 * starts the prompt (the previous turn of this conversation) continues in place; else
 * the least recently used free slot takes a copy, so that the caches other requests may
 * continue stay intact. Returns the slot; *reused: prompt ids not to recompute. */
static slot *slot_for_prompt(gw_local *lm, const sg_ids *prompt, size_t *reused) {
    slot *dst = NULL, *lru = NULL, *src = NULL;
    size_t dst_common = 0, src_common = 0;
    for (int i = 0; i < lm->n_slots; i++) {
        slot *sl = &lm->slots[i];
        size_t c = common_prefix(&sl->cached, prompt);
        if (c > src_common) { src = sl; src_common = c; }
        if (sl->job) continue;
        if (c > 0 && c == sl->cached.n && c > dst_common) { dst = sl; dst_common = c; }
        if (!lru || sl->last_step < lru->last_step) lru = sl;
    }
    if (!dst) {
        dst = lru;
        dst_common = common_prefix(&dst->cached, prompt);
    }
    /* at least the last prompt token is evaluated: its logits start the answer */
    size_t cap = prompt->n - 1;
    if (src_common > cap) src_common = cap;
    if (dst_common > cap) dst_common = cap;
    size_t keep = dst_common;
    if (src && src != dst && src_common > dst_common &&
        infer_seq_copy(lm->inf, (int)(src - lm->slots), (int)(dst - lm->slots), (int)src_common, NULL) == 0) {
        keep = src_common;
        dst->cached.n = 0;
        for (size_t i = 0; i < keep; i++) sg_ids_push(&dst->cached, src->cached.ids[i]);
    }
    infer_seq_truncate(lm->inf, (int)(dst - lm->slots), (int)keep);
    dst->cached.n = keep;
    *reused = keep;
    return dst;
}

/* The chat-template options a request asks for. */
static chat_options request_chat_options(const json_t *r) {
    chat_options co = {.enable_thinking = -1, .add_generation_prompt = true};
    const json_t *et = json_object_get(json_object_get(r, "chat_template_kwargs"), "enable_thinking");
    if (json_is_boolean(et)) co.enable_thinking = json_is_true(et);
    const char *effort = json_string_value(json_object_get(r, "reasoning_effort"));
    if (effort) co.enable_thinking = strcmp(effort, "none") != 0;
    return co;
}

int local_count_prompt(const gw_local *lm, const json_t *r, int64_t *n, sg_error *err) {
    sg_buf text;
    sg_buf_init(&text);
    sg_ids ids = {0};
    chat_options co = request_chat_options(r);
    const json_t *tools = json_object_get(r, "tools");
    int rc = chat_render(lm->kind, json_object_get(r, "messages"), json_is_array(tools) ? tools : NULL, &co, &text, err);
    if (!rc) rc = tok_encode(lm->m->tok, text.data ? text.data : "", text.len, true, &ids, err);
    *n = (int64_t)ids.n;
    sg_buf_free(&text);
    sg_ids_free(&ids);
    return rc ? -1 : 0;
}

/* Renders and tokenizes a job's request and gives it a slot; ends the job on failure. */
static void slot_start(gw_local *lm, local_job *j) {
    const json_t *r = j->request;
    sg_error err = {{0}};
    sg_buf text;
    sg_buf_init(&text);
    sg_ids ids = {0};

    /* compiled here, not on the loop thread: a new tool list takes milliseconds */
    if (j->gbnf_what && !j->grammar && !(j->grammar = local_constraint_compile(j->gbnf.data, j->gbnf.len, j->gbnf_what, &err)))
        goto fail;
    chat_options co = {.enable_thinking = -1, .add_generation_prompt = true};
    const json_t *kw = json_object_get(r, "chat_template_kwargs");
    const json_t *et = json_object_get(kw, "enable_thinking");
    if (json_is_boolean(et)) co.enable_thinking = json_is_true(et);
    const char *effort = json_string_value(json_object_get(r, "reasoning_effort"));
    if (effort) co.enable_thinking = strcmp(effort, "none") != 0;
    const char *thinking = json_string_value(json_object_get(json_object_get(r, "thinking"), "type"));
    if (thinking) co.enable_thinking = strcmp(thinking, "disabled") != 0;   /* the canonical extension */
    if (j->grammar && !j->lazy) co.enable_thinking = 0;   /* the grammar's form starts the answer */
    const json_t *tools = local_constraint_offers_tools(r) ? json_object_get(r, "tools") : NULL;
    if (chat_render(lm->kind, json_object_get(r, "messages"), json_is_array(tools) ? tools : NULL, &co, &text, &err) ||
        tok_encode(lm->m->tok, text.data, text.len, true, &ids, &err))
        goto fail;
    if (ids.n == 0) {
        sg_fail(&err, "the prompt is empty");
        goto fail;
    }
    if ((int)ids.n >= infer_n_ctx(lm->inf)) {
        sg_fail(&err, "the prompt is %zu tokens, the local model's context holds %d", ids.n, infer_n_ctx(lm->inf));
        goto fail;
    }
    size_t reused;
    slot *sl = slot_for_prompt(lm, &ids, &reused);
    sl->job = j;
    sl->prompt = ids;
    sl->fed = sl->reused = reused;
    sl->decoding = false;
    sl->t_start = gen_now_ms();
    sl->t_decode = 0;
    size_t n_stops;
    gen_params_from_request(r, &sl->gp, sl->stops, &n_stops);
    sl->gp.stop_ids = lm->turn_end.ids;
    sl->gp.n_stop_ids = lm->turn_end.n;
    sl->gp.grammar = j->grammar;
    bool opens_reasoning = chat_prompt_opens_reasoning(text.data, text.len);
    if (j->lazy)
        sl->gp.lazy = (grammar_lazy){.trigger = LOCAL_CONSTRAINT_TRIGGER, .quiet_open = LOCAL_CONSTRAINT_QUIET_OPEN,
                                     .quiet_close = LOCAL_CONSTRAINT_QUIET_CLOSE, .in_quiet = opens_reasoning};
    sl->gp.draft = lm->draft;
    sl->gen = gen_seq_new(lm->m, ids.ids, (int)ids.n, infer_n_ctx(lm->inf) - (int)ids.n, &sl->gp);
    if (!sl->gen) {   /* a grammar without the model's tokenizer */
        sl->job = NULL;
        sl->prompt = (sg_ids){0};
        sg_fail(&err, "constrained decoding needs the model's tokenizer");
        goto fail;
    }

    char idbuf[48];
    snprintf(idbuf, sizeof idbuf, "chatcmpl-local-%llx", (unsigned long long)(lm->next_id++ ^ (uint64_t)time(NULL) << 20));
    gw_event start = {.kind = GW_EV_START, .id = idbuf, .name = json_string_value(json_object_get(r, "model"))};
    job_emit(j, &start);
    memset(&sl->g, 0, sizeof sl->g);
    sl->g.job = j;
    sg_buf_init(&sl->g.reasoning);
    sl->g.cs = chat_stream_new(lm->kind, opens_reasoning, on_chat_event, &sl->g);
    atomic_fetch_add(&lm->st_reused, (long long)reused);
    sg_buf_free(&text);
    return;
fail:
    sg_buf_free(&text);
    sg_ids_free(&ids);
    job_end(lm, j, 400, err.msg[0] ? err.msg : "the request cannot be rendered");
}

/* The slot's job is over (answered, cancelled or failed): its cache stays for reuse. */
static void slot_finish(gw_local *lm, slot *sl, int status, const char *message) {
    local_job *j = sl->job;
    chat_stream_finish(sl->g.cs);
    chat_stream_free(sl->g.cs);
    const sg_gen_result *res = gen_seq_result(sl->gen);
    if (status == 200) {
        gw_event fin = {.kind = GW_EV_FINISH,
                        .finish = res->incomplete ? "length" : sl->g.n_tool_calls ? "tool_calls" : !strcmp(res->finish_reason, "length") ? "length" : "stop"};
        job_emit(j, &fin);
        gw_usage_init(&j->usage);
        /* positions taken from the prefix cache are reported as OpenAI reports cached
         * prompt tokens: prompt_tokens counts them, cached_tokens says how many */
        j->usage.input = (int64_t)(sl->prompt.n - sl->reused);
        j->usage.cache_read = (int64_t)sl->reused;
        j->usage.cache_write = 0;
        j->usage.output = res->n_generated;
        sg_ids rids = {0};
        if (sl->g.reasoning.len) tok_encode(lm->m->tok, sl->g.reasoning.data, sl->g.reasoning.len, false, &rids, NULL);
        j->usage.reasoning = (int64_t)rids.n;
        sg_ids_free(&rids);
        gw_event us = {.kind = GW_EV_USAGE, .usage = j->usage};
        job_emit(j, &us);
        double now = gen_now_ms(), gen_ms = sl->t_decode > 0 ? now - sl->t_decode : 0;
        SG_DEBUG("local: %zu prompt tokens (%zu reused), %d generated, %.1f tok/s", sl->prompt.n, sl->reused,
                 res->n_generated, gen_ms > 0 ? res->n_generated * 1000.0 / gen_ms : 0.0);
    }
    gen_seq_free(sl->gen);
    sl->gen = NULL;
    sg_buf_free(&sl->g.reasoning);
    sg_ids_free(&sl->prompt);
    sl->job = NULL;
    job_end(lm, j, status, message);
}

/* One forward step: a token for every decoding sequence, and prompt chunks of the
 * sequences that joined, up to the engine's batch; then each sequence samples. */
static void run_step(gw_local *lm) {
    int n = 0, n_seqs = 0, n_out = 0, budget = lm->step_tokens;
    for (int i = 0; i < lm->n_slots; i++) {   /* gone clients leave first */
        slot *sl = &lm->slots[i];
        if (sl->job && atomic_load(&sl->job->cancelled)) slot_finish(lm, sl, 499, "cancelled");
    }
    int n_decoding = 0;
    for (int i = 0; i < lm->n_slots; i++) n_decoding += lm->slots[i].job && lm->slots[i].decoding;
    /* drafts ride along while the step's decode tokens stay few (speculate.h) */
    int spare = SPEC_STEP_TOKENS - n_decoding;
    for (int i = 0; i < lm->n_slots; i++) {
        slot *sl = &lm->slots[i];
        sl->n_draft = 0;
        if (!sl->job || !sl->decoding) continue;
        lm->step_seq[n] = i;
        lm->step_tok[n] = sl->next;
        lm->step_want[n++] = true;
        sl->base = infer_seq_n_past(lm->inf, i);
        int room = infer_n_ctx(lm->inf) - sl->base - 1;
        if (spare > 0) sl->n_draft = gen_seq_draft(sl->gen, room < spare ? room : spare, sl->draft);
        spare -= sl->n_draft;
        for (int k = 0; k < sl->n_draft; k++) {
            lm->step_seq[n] = i;
            lm->step_tok[n] = sl->draft[k];
            lm->step_want[n++] = true;
        }
        n_out++;
        n_seqs++;
    }
    budget -= n;
    /* While others decode, a joining prompt goes in small chunks: a step's time is every
     * running request's time to its next token. */
    if (n && budget > LOCAL_CHUNK_WHILE_DECODING) budget = LOCAL_CHUNK_WHILE_DECODING;
    for (int i = 0; i < lm->n_slots && budget > 0; i++) {
        slot *sl = &lm->slots[i];
        if (!sl->job || sl->decoding) continue;
        size_t left = sl->prompt.n - sl->fed, take = left < (size_t)budget ? left : (size_t)budget;
        for (size_t k = 0; k < take; k++) {
            lm->step_seq[n] = i;
            lm->step_tok[n] = sl->prompt.ids[sl->fed + k];
            lm->step_want[n++] = k + 1 == left;   /* the prompt's last token starts the answer */
        }
        n_out += take == left;
        budget -= (int)take;
        n_seqs++;
    }
    if (!n) return;
    sg_error err = {{0}};
    if (infer_step(lm->inf, lm->step_seq, lm->step_tok, lm->step_want, n, lm->logits, &err)) {
        SG_WARN("local: forward step failed: %s", err.msg);
        for (int i = 0; i < lm->n_slots; i++) {
            slot *sl = &lm->slots[i];
            if (!sl->job) continue;
            infer_seq_truncate(lm->inf, i, 0);
            sl->cached.n = 0;
            slot_finish(lm, sl, 500, err.msg);
        }
        return;
    }
    lm->step_no++;
    atomic_fetch_add(&lm->st_steps, 1);
    if (n_seqs > 1) atomic_fetch_add(&lm->st_batched, 1);
    if (n_seqs > atomic_load(&lm->st_max_active)) atomic_store(&lm->st_max_active, n_seqs);
    for (int t = 0; t < n; t++) {
        slot *sl = &lm->slots[lm->step_seq[t]];
        sg_ids_push(&sl->cached, lm->step_tok[t]);
        if (!sl->decoding) sl->fed++;
        sl->last_step = lm->step_no;
    }
    int row = 0;
    size_t V = (size_t)lm->m->cfg.n_vocab;
    for (int t = 0; t < n; t++) {
        if (!lm->step_want[t]) continue;
        int i = lm->step_seq[t];
        slot *sl = &lm->slots[i];
        float *lg = lm->logits + (size_t)row++ * V;
        if (!sl->decoding) {
            sl->decoding = true;
            sl->t_decode = gen_now_ms();
        }
        if (sl->n_draft == 0) {
            if (gen_seq_step(sl->gen, lg, on_token, &sl->g, &sl->next) != 0) slot_finish(lm, sl, 200, NULL);
            continue;
        }
        /* a speculation round: its rows follow; the rejected draft's keys and values go */
        int k = sl->n_draft, kept;
        t += k;
        row += k;
        int rc = gen_seq_verify(sl->gen, lg, V, sl->draft, k, on_token, &sl->g, &sl->next, &kept);
        infer_seq_truncate(lm->inf, i, sl->base + kept);
        sl->cached.n -= (size_t)(k + 1 - kept);
        sl->n_draft = 0;
        atomic_fetch_add(&lm->st_drafted, k);
        atomic_fetch_add(&lm->st_accepted, kept - 1);
        if (rc != 0) slot_finish(lm, sl, 200, NULL);
    }
}

static void *worker_main(void *arg) {
    gw_local *lm = arg;
    for (;;) {
        pthread_mutex_lock(&lm->mu);
        while (!lm->head && !lm->running && !lm->stop) pthread_cond_wait(&lm->cv, &lm->mu);
        bool stop = lm->stop;
        pthread_mutex_unlock(&lm->mu);
        if (stop) break;
        /* jobs join between steps, as many as there are free slots */
        for (;;) {
            pthread_mutex_lock(&lm->mu);
            local_job *j = lm->running < lm->n_slots ? lm->head : NULL;
            if (j) {
                lm->head = j->next;
                if (!lm->head) lm->tail = NULL;
                lm->queued--;
                lm->running++;
            }
            pthread_mutex_unlock(&lm->mu);
            if (!j) break;
            if (!atomic_load(&j->cancelled)) { slot_start(lm, j); continue; }
            job_release(j);
            pthread_mutex_lock(&lm->mu);
            lm->running--;
            pthread_mutex_unlock(&lm->mu);
        }
        run_step(lm);
    }
    /* shutting down: the jobs still decoding end here */
    for (int i = 0; i < lm->n_slots; i++)
        if (lm->slots[i].job) slot_finish(lm, &lm->slots[i], 503, "the local model is shutting down");
    return NULL;
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
    /* KV memory is slots x ctx positions (pages are touched only as slots fill) */
    ip.n_ctx = o && o->ctx > 0 ? o->ctx : (m->cfg.max_ctx < 4096 ? m->cfg.max_ctx : 4096);
    ip.n_seq = o && o->parallel > 0 ? o->parallel : 4;
    ip.n_batch = ip.n_seq > INFER_DEFAULT_BATCH ? ip.n_seq : INFER_DEFAULT_BATCH;
    sg_infer *inf = infer_new(m, &ip, err);
    if (!inf) { model_free(m); return NULL; }
    gw_local *lm = sg_xcalloc(1, sizeof *lm);
    lm->loop = l;
    lm->m = m;
    lm->inf = inf;
    lm->n_slots = ip.n_seq;
    lm->step_tokens = ip.n_batch;
    lm->slots = sg_xcalloc((size_t)lm->n_slots, sizeof *lm->slots);
    lm->step_seq = sg_xmalloc((size_t)lm->step_tokens * sizeof *lm->step_seq);
    lm->step_tok = sg_xmalloc((size_t)lm->step_tokens * sizeof *lm->step_tok);
    lm->step_want = sg_xmalloc((size_t)lm->step_tokens * sizeof *lm->step_want);
    lm->draft = o ? o->draft : 0;
    /* logits rows: a step's decode tokens and drafts, and prompts that end in it */
    lm->logits = sg_xmalloc((size_t)(lm->n_slots + SPEC_STEP_TOKENS) * (size_t)m->cfg.n_vocab * sizeof(float));
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
        lm->thread = pthread_self();
        local_free(lm);
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
    if (!pthread_equal(lm->thread, pthread_self())) pthread_join(lm->thread, NULL);
    while (lm->head) {
        local_job *j = lm->head;
        lm->head = j->next;
        job_release(j);
    }
    infer_free(lm->inf);
    model_free(lm->m);
    sg_ids_free(&lm->turn_end);
    for (int i = 0; i < lm->n_slots; i++) sg_ids_free(&lm->slots[i].cached);
    free(lm->slots);
    free(lm->step_seq);
    free(lm->step_tok);
    free(lm->step_want);
    free(lm->logits);
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
    sg_buf_init(&j->gbnf);
    if (local_constraint_gbnf(request, &j->gbnf, &j->lazy, &j->gbnf_what, err)) {
        sg_buf_free(&j->gbnf);
        free(j);
        *status = 400;
        return NULL;
    }
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

void local_get_stats(const gw_local *lm, local_stats *st) {
    gw_local *w = (gw_local *)lm;   /* the mutex and atomics, not the model */
    pthread_mutex_lock(&w->mu);
    st->active = w->running;
    st->queued = w->queued;
    pthread_mutex_unlock(&w->mu);
    st->slots = lm->n_slots;
    st->max_active = atomic_load(&w->st_max_active);
    st->steps = atomic_load(&w->st_steps);
    st->batched_steps = atomic_load(&w->st_batched);
    st->reused_tokens = atomic_load(&w->st_reused);
    st->drafted_tokens = atomic_load(&w->st_drafted);
    st->accepted_tokens = atomic_load(&w->st_accepted);
}
