/* local.h: the local model as a gateway provider: the in-process engine behind a
 * bounded queue, answering canonical (OpenAI-shaped) chat requests with canonical events.
 *
 * Each served model has one worker thread that owns the model and its KV cache and
 * serves up to `parallel` jobs at once by continuous batching: each forward step decodes
 * one token for every running job (one infer_step, so the weights are read once for
 * all), and carries prompt chunks of jobs that just joined; jobs join and leave between
 * steps, and the rest wait in the queue. A decoding job may carry a draft of the tokens
 * it will likely say next (prompt lookup, engine/speculate.h) in the same step: the
 * accepted part saves steps, the rejected part's keys and values are dropped. The KV slot a job leaves keeps its tokens: a
 * later prompt that starts with them (the same system prompt, the previous turn of the
 * conversation) starts from a copy of those keys and values, taken from any slot, a
 * running one included, instead of recomputing them. The worker applies the model's chat template
 * (SmolLM3's, tools included, or ChatML), samples with the request's parameters, and
 * turns the answer into events: reasoning (<think>...</think>), content, and tool calls
 * (<tool_call>{...}</tool_call> -> OpenAI tool_calls).
 *
 * Threading: local_submit and local_cancel are called on the loop thread; events and
 * the completion are delivered on the loop thread too (the worker hands them over with
 * loop_post), in order, and never after local_cancel returns. */
#ifndef SG_GATEWAY_LOCAL_H
#define SG_GATEWAY_LOCAL_H

#include <jansson.h>
#include <stdbool.h>

#include "common/error.h"
#include "engine/model.h"
#include "gateway/chat.h"
#include "gateway/loop.h"

typedef struct local_opts {
    int threads;        /* engine threads (0: all CPUs) */
    int queue;          /* jobs waiting at most (0: 16); beyond it local_submit refuses */
    int ctx;            /* KV cache positions per sequence (0: min(model, 4096)) */
    int parallel;       /* sequences decoded together (0: 4); KV memory is parallel x ctx */
    int draft;          /* speculative decoding (engine/speculate.h): draft tokens per
                           sequence and step at most; 0: off */
} local_opts;

typedef struct gw_local gw_local;
typedef struct local_job local_job;

/* Loads the model at path (GGUF or Hugging Face folder) and starts its worker. */
gw_local *local_new(loop *l, const char *path, const local_opts *o, sg_error *err);
void local_free(gw_local *lm);
const sg_model *local_model(const gw_local *lm);
/* Jobs queued or running now. */
int local_load(const gw_local *lm);

/* What the scheduler has done so far (any thread). */
typedef struct local_stats {
    int slots;                  /* sequences decoded together at most (parallel) */
    int active, queued;         /* jobs holding a slot / waiting now */
    int max_active;             /* most sequences one forward step has carried */
    long long steps;            /* forward steps */
    long long batched_steps;    /* steps that carried two or more sequences */
    long long reused_tokens;    /* prompt tokens taken from the prefix cache, not computed */
    long long drafted_tokens;   /* speculation: draft tokens verified */
    long long accepted_tokens;  /* ... and accepted */
} local_stats;
void local_get_stats(const gw_local *lm, local_stats *st);

/* How a job ended. status: 200, or the HTTP status of the failure (400 bad request,
 * 429 queue full, 500 engine error); message when status != 200. */
typedef void (*local_done_fn)(void *ctx, int status, const char *message, const gw_usage *usage);

/* Queues a request (OpenAI chat-completions shape: messages, tools, max_tokens /
 * max_completion_tokens, temperature, top_p, seed, stop, presence_penalty,
 * frequency_penalty; SmolLM3 reasoning from chat_template_kwargs.enable_thinking or
 * reasoning_effort "none"; response_format and a forced tool_choice as a grammar,
 * local_constraint.h, with reasoning off). Returns NULL with err (and *status) when it
 * cannot be queued: 429 when the queue is full, 400 for a form that cannot be
 * constrained; a request the template cannot render ends with 400. */
local_job *local_submit(gw_local *lm, const json_t *request, gw_event_fn on_event, local_done_fn on_done,
                        void *ctx, int *status, sg_error *err);
/* The prompt tokens of a request (its messages and tools through the model's chat
 * template, with the generation prompt): 0, or -1 with err when it cannot be rendered.
 * Loop thread; the tokenizer is only read. */
int local_count_prompt(const gw_local *lm, const json_t *request, int64_t *n, sg_error *err);
/* Stops a job (client gone); no callback runs after this returns. A job whose on_done
 * has run is gone: do not cancel it then. */
void local_cancel(local_job *j);

#endif
