/* provider_local.c: the in-process engine (local.h) as a provider: a job per attempt on
 * the named local model's worker, events straight from the decoder. No upstream, no
 * circuit breaker; the price is 0 (cost.h). */
#include <stdlib.h>

#include "common/buf.h"
#include "gateway/gateway.h"
#include "gateway/local.h"
#include "gateway/provider.h"

static const char *const k_keys[] = {"type", "models", "threads", "queue", "ctx", "parallel", "draft", "timeouts", "retries", "limits", NULL};

/* The job as the proxy holds it: the engine's job and where its end is reported. */
typedef struct local_call {
    local_job *job;
    gw_event_fn on_event;
    gw_job_done_fn on_done;
    void *ctx;
} local_call;

static const char *local_cost_vendor(const gw_provider *p) { (void)p; return NULL; }

/* The engine's statuses: 429 queue full and 5xx are transient, the rest the request's. */
static gw_failure local_failure(int status) { return status == 429 || status >= 500 ? GW_FAIL_RETRYABLE : GW_FAIL_CLIENT; }

static int local_event(void *ctx, const gw_event *ev) {
    local_call *c = ctx;
    return c->on_event(c->ctx, ev);
}

static void local_finished(void *ctx, int status, const char *message, const gw_usage *usage) {
    local_call *c = ctx;
    gw_job_done_fn done = c->on_done;
    void *dctx = c->ctx;
    free(c);   /* the job is gone once it reported */
    if (status == 200) { done(dctx, NULL, GW_FAIL_RETRYABLE, usage); return; }
    gw_api_error e;
    gw_api_fail(&e, status, status == 429 ? "local_queue_full" : "local_error", NULL, "%s", message);
    done(dctx, &e, local_failure(status), NULL);
}

static void *local_start(struct gateway *g, const char *model, const json_t *body, gw_event_fn on_event,
                         gw_job_done_fn on_done, void *ctx, gw_api_error *e, gw_failure *kind) {
    gw_local *lm = gateway_local(g, model);
    if (!lm) {
        gw_api_fail(e, 503, NULL, NULL, "the local model is not loaded");
        *kind = GW_FAIL_RETRYABLE;
        return NULL;
    }
    local_call *c = sg_xcalloc(1, sizeof *c);
    *c = (local_call){.on_event = on_event, .on_done = on_done, .ctx = ctx};
    int status;
    sg_error err;
    c->job = local_submit(lm, body, local_event, local_finished, c, &status, &err);
    if (!c->job) {
        free(c);
        gw_api_fail(e, status, status == 429 ? "local_queue_full" : "invalid_request", NULL, "%s", err.msg);
        *kind = status == 429 ? GW_FAIL_RETRYABLE : GW_FAIL_CLIENT;
        return NULL;
    }
    return c;
}

/* The local tokenizer over the rendered chat template: what the engine would be fed. */
static int local_count(struct gateway *g, const char *model, const json_t *body, int64_t *n, sg_error *err) {
    gw_local *lm = gateway_local(g, model);
    if (!lm) return 1;
    return local_count_prompt(lm, body, n, err) ? -1 : 0;
}

static void local_stop(void *job) {
    local_call *c = job;
    local_cancel(c->job);
    free(c);
}

const gw_provider_entry gw_provider_local = {
    .type = GW_PROVIDER_LOCAL,
    .type_name = "local",
    .config_keys = k_keys,
    .in_process = true,
    .cost_vendor = local_cost_vendor,
    .job_start = local_start,
    .job_cancel = local_stop,
    .count_prompt = local_count,
};
