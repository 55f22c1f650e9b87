/* bench_codec.c: the cost of the OpenAI codec on the gateway's hot path (figures, no
 * assertions): scanning one stream chunk, and turning a client request into the upstream
 * body by the zero-allocation fast path and by jansson. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gateway/codec_openai.h"

/* ---- cost ---- */

static int count_event(void *ctx, const gw_event *ev) {
    (void)ev;
    (*(long *)ctx)++;
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void scan_cost(void) {
    const char *chunk =
        "{\"id\":\"chatcmpl-9xYzAbCdEfGhIjKlMnOpQrStUv\",\"object\":\"chat.completion.chunk\",\"created\":1717000000,"
        "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{\"index\":0,"
        "\"delta\":{\"content\":\" quick brown\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}";
    size_t len = strlen(chunk);
    const int N = 200000;
    long events = 0;
    oai_scan s;
    oai_scan_init(&s);
    double t0 = now_s();
    for (int i = 0; i < N; i++) oai_scan_chunk(&s, chunk, len, count_event, &events);
    double t1 = now_s();
    oai_scan_free(&s);
    double t2 = now_s();
    for (int i = 0; i < N; i++) {
        json_t *j = json_loadb(chunk, len, 0, NULL);
        json_decref(j);
    }
    double t3 = now_s();
    const char *req = "{\"model\":\"openai/gpt-4o-mini\",\"messages\":[{\"role\":\"system\",\"content\":\"You are a "
                      "helpful assistant.\"},{\"role\":\"user\",\"content\":\"Say hello in five words.\"}],\"stream\":true,"
                      "\"stream_options\":{\"include_usage\":true},\"max_tokens\":64,\"temperature\":0.2}";
    size_t rl = strlen(req);
    const int R = 20000;
    sg_buf out;
    sg_buf_init(&out);
    double t4 = now_s();
    for (int i = 0; i < R; i++) {
        oai_peek pk;
        oai_peek_request(req, rl, &pk);
        sg_buf_reset(&out);
        oai_splice_upstream(req, &pk, "gpt-4o-mini", true, 0, &out);
    }
    double t5 = now_s();
    for (int i = 0; i < R; i++) {
        oai_request q;
        gw_api_error e;
        oai_parse_request(req, rl, &q, &e);
        sg_buf_reset(&out);
        oai_build_upstream(q.body, "gpt-4o-mini", true, 0, &out);
        oai_request_free(&q);
    }
    double t6 = now_s();
    sg_buf_free(&out);
    printf("request to upstream body (%zu B): fast path %.3f us, jansson path %.3f us\n", rl, (t5 - t4) * 1e6 / R,
           (t6 - t5) * 1e6 / R);
    printf("oai_scan_chunk: %.3f us per %zu-byte chunk (jansson json_loadb alone: %.3f us)\n",
           (t1 - t0) * 1e6 / N, len, (t3 - t2) * 1e6 / N);
}

int main(void) {
    scan_cost();
    return 0;
}
