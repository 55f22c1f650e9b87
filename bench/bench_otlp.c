/* bench_otlp.c: what request tracing (otlp.h) costs the CPU, per request of a root span
 * and two attempt spans (a fallback): on the event loop, its ids, the traceparents of its
 * attempts and queuing it (otlp_begin, otlp_attempt_traceparent, otlp_submit), and
 * encoding it on the exporter thread (OTLP JSON and protobuf into a reused buffer, as
 * export_batch does). Figures, no assertions; CPU time of the calling thread (the machine is shared),
 * the best of 5 runs. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "gateway/otlp.h"

/* this thread's CPU time: the machine is shared, and wall time would count the others */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* a chat request that fell back once, as the gateway records it */
static ledger_record sample(ledger_attempt *atts) {
    atts[0] = (ledger_attempt){"openai", "gpt-4o-mini-2024-07-18", 503, "retryable", 41, 0, 0, 12, 40, -1, -1, 0};
    atts[1] = (ledger_attempt){"anthropic", "claude-3-5-haiku-20241022", 200, NULL, 612, 43, 0, 0, 180, 812, 96, 1234};
    return (ledger_record){
        .time_ms = 1765100000123, .request_id = "d2f1c7a9e35b4c1e", .key_id = "team-search", .route = "chat",
        .requested_model = "chat", .provider = "anthropic", .model = "claude-3-5-haiku-20241022", .attempts = atts,
        .n_attempts = 2, .usage = {812, 128, 0, 96, -1, false}, .cost_micro = 1234, .latency_ms = 660,
        .ttft_ms = 301, .status = 200, .stream = true,
    };
}

static double best_of(double *v, int n) {
    double b = v[0];
    for (int i = 1; i < n; i++) if (v[i] < b) b = v[i];
    return b;
}

int main(void) {
    sg_log_set_level(SG_LOG_ERROR);
    ledger_attempt atts[2];
    ledger_record r = sample(atts);
    otlp_ids ids;
    memset(&ids, 0, sizeof ids);
    for (int i = 0; i < 16; i++) ids.trace_id[i] = (uint8_t)(0x4b + 7 * i);
    for (int i = 0; i < 8; i++) ids.root_id[i] = (uint8_t)(0x11 + i), ids.att_ids[0][i] = (uint8_t)(0x21 + i),
                                ids.att_ids[1][i] = (uint8_t)(0x31 + i);

    /* encoding: N requests into one buffer, reset per batch of 256 as the exporter does */
    enum { N = 100000, RUNS = 5 };
    double enc[RUNS];
    size_t bytes = 0;
    sg_buf b;
    sg_buf_init(&b);
    for (int run = 0; run < RUNS; run++) {
        double t0 = now_s();
        for (int i = 0; i < N; i++) {
            if (i % 256 == 0) { bytes = b.len; sg_buf_reset(&b); }
            otlp_record_json(&r, "chat", &ids, "smolgate", &b);
        }
        enc[run] = (now_s() - t0) / N;
    }
    double pb[RUNS];
    for (int run = 0; run < RUNS; run++) {
        double t0 = now_s();
        for (int i = 0; i < N; i++) {
            if (i % 256 == 0) { bytes = b.len; sg_buf_reset(&b); }
            otlp_record_protobuf(&r, "chat", &ids, "smolgate", &b);
        }
        pb[run] = (now_s() - t0) / N;
    }
    sg_buf_reset(&b);
    otlp_record_json(&r, "chat", &ids, "smolgate", &b);
    size_t one = b.len;
    sg_buf_reset(&b);
    otlp_record_protobuf(&r, "chat", &ids, "smolgate", &b);
    size_t one_pb = b.len;
    (void)bytes;
    sg_buf_free(&b);

    /* queuing: 256 requests (a batch) into an exporter that does not drain them (flush_ms
     * is long and batch_max larger), then a fresh exporter: the memory is reused, as it is
     * in a gateway whose exporter keeps up */
    double sub[RUNS];
    enum { Q = 256, ROUNDS = 80 };
    for (int run = 0; run < RUNS; run++) {
        double t = 0;
        for (int k = 0; k < ROUNDS; k++) {
            otlp_opts o = {.endpoint = "http://127.0.0.1:9/v1/traces", .sample_ratio = 1.0, .batch_max = Q + 1,
                           .queue_max = Q, .flush_ms = 600000, .timeout_ms = 100, .max_retries = 0};
            sg_error err;
            otlp *x = otlp_open(&o, &err);
            if (!x) { fprintf(stderr, "otlp_open: %s\n", err.msg); return 1; }
            double t0 = now_s();
            for (int i = 0; i < Q; i++) {   /* what the loop does for a request: ids, two traceparents, the copy */
                otlp_ids q;
                char tp[OTLP_TRACEPARENT_LEN + 1];
                otlp_begin(x, NULL, &q);
                otlp_attempt_traceparent(&q, 0, tp);
                otlp_attempt_traceparent(&q, 1, tp);
                otlp_submit(x, &r, "chat", &q);
            }
            t += now_s() - t0;
            otlp_close(x, 0);
        }
        sub[run] = t / (Q * ROUNDS);
    }
    printf("otlp: one request (root + 2 attempt spans): %zu bytes of OTLP JSON, %zu of protobuf\n", one, one_pb);
    printf("otlp: encode http/json %.3f us per request (%.3f us per span), best of %d x %d\n", best_of(enc, RUNS) * 1e6,
           best_of(enc, RUNS) * 1e6 / 3, RUNS, N);
    printf("otlp: encode http/protobuf %.3f us per request (%.3f us per span)\n", best_of(pb, RUNS) * 1e6,
           best_of(pb, RUNS) * 1e6 / 3);
    printf("otlp: on the loop (otlp_begin, 2 traceparents, otlp_submit) %.3f us per request, best of %d x %d\n", best_of(sub, RUNS) * 1e6, RUNS, Q * ROUNDS);
    return 0;
}
