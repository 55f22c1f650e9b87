/* test_embeddings.c: the embeddings codec (codec_embed.h): request validation, the
 * upstream bodies (OpenAI, Gemini), answers scanned into events, rendering (float and
 * base64), and base64 float32 both ways. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/codec_embed.h"
#include "testutil.h"

static int parse(const char *body, emb_request *r, gw_api_error *e) { return emb_parse_request(body, strlen(body), r, e); }

static void test_parse_valid(void) {
    emb_request r;
    gw_api_error e;
    CHECK_EQ_INT(parse("{\"model\":\"m\",\"input\":\"hello\"}", &r, &e), 0);
    CHECK_EQ_STR(r.model, "m");
    CHECK_EQ_INT(r.n_inputs, 1);
    CHECK(!r.tokens && !r.base64 && !r.has_format);
    CHECK_EQ_INT(r.dimensions, -1);
    emb_request_free(&r);
    CHECK_EQ_INT(parse("{\"model\":\"m\",\"input\":[\"a\",\"b\",\"c\"],\"encoding_format\":\"base64\",\"dimensions\":64,\"user\":\"u\"}", &r, &e), 0);
    CHECK_EQ_INT(r.n_inputs, 3);
    CHECK(r.base64 && r.has_format);
    CHECK_EQ_INT(r.dimensions, 64);
    emb_request_free(&r);
    CHECK_EQ_INT(parse("{\"model\":\"m\",\"input\":[1,2,3]}", &r, &e), 0);   /* one token array */
    CHECK_EQ_INT(r.n_inputs, 1);
    CHECK(r.tokens);
    emb_request_free(&r);
    CHECK_EQ_INT(parse("{\"model\":\"m\",\"input\":[[1,2],[3]]}", &r, &e), 0);
    CHECK_EQ_INT(r.n_inputs, 2);
    CHECK(r.tokens);
    emb_request_free(&r);
}

static void expect_400(const char *body, const char *param) {
    emb_request r;
    gw_api_error e;
    CHECK_MSG(parse(body, &r, &e) == -1, "%s", body);
    CHECK_EQ_INT(e.status, 400);
    if (param) CHECK_EQ_STR(e.param, param);
    CHECK(r.body == NULL);
}

static void test_parse_errors(void) {
    expect_400("", NULL);
    expect_400("not json", NULL);
    expect_400("[1,2]", NULL);
    expect_400("{\"input\":\"x\"}", "model");
    expect_400("{\"model\":7,\"input\":\"x\"}", "model");
    expect_400("{\"model\":\"a\\u0001b\",\"input\":\"x\"}", "model");
    expect_400("{\"model\":\"m\"}", "input");
    expect_400("{\"model\":\"m\",\"input\":\"\"}", "input");
    expect_400("{\"model\":\"m\",\"input\":[]}", "input");
    expect_400("{\"model\":\"m\",\"input\":[\"a\",\"\"]}", "input");
    expect_400("{\"model\":\"m\",\"input\":[\"a\",1]}", "input");
    expect_400("{\"model\":\"m\",\"input\":[[1],[-1]]}", "input");
    expect_400("{\"model\":\"m\",\"input\":[[]]}", "input");
    expect_400("{\"model\":\"m\",\"input\":{\"a\":1}}", "input");
    expect_400("{\"model\":\"m\",\"input\":[1.5]}", "input");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"encoding_format\":\"hex\"}", "encoding_format");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"dimensions\":0}", "dimensions");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"dimensions\":\"8\"}", "dimensions");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"user\":5}", "user");
    expect_400("{\"model\":\"m\",\"model\":\"n\",\"input\":\"x\"}", NULL);   /* duplicate key */
    /* more inputs than OpenAI takes */
    sg_buf b;
    sg_buf_init(&b);
    sg_buf_puts(&b, "{\"model\":\"m\",\"input\":[");
    for (int i = 0; i <= EMB_MAX_INPUTS; i++) sg_buf_puts(&b, i ? ",\"x\"" : "\"x\"");
    sg_buf_puts(&b, "]}");
    expect_400(b.data, "input");
    sg_buf_free(&b);
}

static void test_build(void) {
    emb_request r;
    gw_api_error e;
    sg_buf b;
    sg_buf_init(&b);
    CHECK_EQ_INT(parse("{\"model\":\"alias\",\"input\":[\"a\",\"b\"],\"dimensions\":8,\"extra\":1}", &r, &e), 0);
    emb_build_openai(&r, "text-embedding-3-small", &b);
    CHECK_EQ_STR(b.data, "{\"model\":\"text-embedding-3-small\",\"input\":[\"a\",\"b\"],\"dimensions\":8}");
    sg_buf_reset(&b);
    const char *method;
    CHECK_EQ_INT(emb_build_gemini(&r, "gemini-embedding-001", &b, &method, &e), 0);
    CHECK_EQ_STR(method, "batchEmbedContents");
    CHECK(strstr(b.data, "\"model\":\"models/gemini-embedding-001\"") != NULL);
    CHECK(strstr(b.data, "\"outputDimensionality\":8") != NULL);
    CHECK(strstr(b.data, "{\"parts\":[{\"text\":\"b\"}]}") != NULL);
    emb_request_free(&r);
    sg_buf_reset(&b);
    CHECK_EQ_INT(parse("{\"model\":\"m\",\"input\":\"one\",\"encoding_format\":\"base64\"}", &r, &e), 0);
    emb_build_openai(&r, "x", &b);
    CHECK_EQ_STR(b.data, "{\"model\":\"x\",\"input\":\"one\",\"encoding_format\":\"base64\"}");
    sg_buf_reset(&b);
    CHECK_EQ_INT(emb_build_gemini(&r, "models/g", &b, &method, &e), 0);
    CHECK_EQ_STR(method, "embedContent");
    CHECK_EQ_STR(b.data, "{\"content\":{\"parts\":[{\"text\":\"one\"}]}}");
    emb_request_free(&r);
    CHECK_EQ_INT(parse("{\"model\":\"m\",\"input\":[[1,2]]}", &r, &e), 0);
    sg_buf_reset(&b);
    CHECK_EQ_INT(emb_build_gemini(&r, "g", &b, &method, &e), -1);   /* Gemini takes no token ids */
    CHECK_EQ_INT(e.status, 400);
    int64_t tokens = 0;
    sg_buf_reset(&b);
    emb_input_text(&r, &b, &tokens);
    CHECK_EQ_INT(tokens, 2);
    emb_request_free(&r);
    sg_buf_free(&b);
}

static void test_base64(void) {
    const float v[3] = {1.0f, -0.5f, 0.1f};
    sg_buf b;
    sg_buf_init(&b);
    emb_base64_floats(v, 3, &b);
    CHECK_EQ_STR(b.data, "AACAPwAAAL/NzMw9");   /* little-endian float32, as numpy's tobytes */
    float *w;
    size_t n;
    CHECK_EQ_INT(emb_unbase64_floats(b.data, b.len, &w, &n), 0);
    CHECK_EQ_INT(n, 3);
    CHECK(memcmp(v, w, sizeof v) == 0);
    free(w);
    sg_buf_reset(&b);
    emb_base64_floats(v, 1, &b);   /* 4 bytes: padding */
    CHECK_EQ_STR(b.data, "AACAPw==");
    CHECK_EQ_INT(emb_unbase64_floats(b.data, b.len, &w, &n), 0);
    CHECK_EQ_INT(n, 1);
    CHECK(w[0] == 1.0f);
    free(w);
    CHECK_EQ_INT(emb_unbase64_floats("AAA", 3, &w, &n), -1);        /* not a multiple of 4 */
    CHECK_EQ_INT(emb_unbase64_floats("AAAA", 4, &w, &n), -1);       /* 3 bytes: no whole float */
    CHECK_EQ_INT(emb_unbase64_floats("AA!AAAAA", 8, &w, &n), -1);   /* not base64 */
    sg_buf_free(&b);
}

typedef struct rec {
    sg_buf log;
    float first;
} rec;

static int on_ev(void *ctx, const gw_event *ev) {
    rec *r = ctx;
    gw_event_format(ev, &r->log);
    if (ev->kind == GW_EV_EMBEDDING && ev->index == 0) r->first = ev->vec[0];
    return 0;
}

static char *scan(int (*fn)(const char *, size_t, gw_event_fn, void *), const char *body, int *rc, float *first) {
    rec r = {.first = NAN};
    sg_buf_init(&r.log);
    *rc = fn(body, strlen(body), on_ev, &r);
    if (first) *first = r.first;
    return r.log.data ? sg_buf_steal(&r.log) : calloc(1, 1);
}

static void test_scan(void) {
    int rc;
    float first;
    /* out of order by index, floats and base64 mixed, usage */
    char *s = scan(emb_scan_openai,
                   "{\"object\":\"list\",\"data\":[{\"index\":1,\"embedding\":\"AACAPw==\"},{\"index\":0,\"embedding\":[0.25,2]}],"
                   "\"usage\":{\"prompt_tokens\":7,\"total_tokens\":7}}", &rc, &first);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(s, "EMBEDDING 0 dims=2\nEMBEDDING 1 dims=1\nUSAGE in=7 cr=0 cw=0 out=0 rs=-1\n");
    CHECK(first == 0.25f);
    free(s);
    s = scan(emb_scan_openai, "{\"data\":[{\"index\":0,\"embedding\":[1]}]}", &rc, NULL);   /* no usage */
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(s, "EMBEDDING 0 dims=1\n");
    free(s);
    const char *bad[] = {
        "", "{}", "{\"data\":[]}", "{\"data\":[{\"index\":0,\"embedding\":[]}]}",
        "{\"data\":[{\"index\":1,\"embedding\":[1]}]}", "{\"data\":[{\"index\":0,\"embedding\":[1]},{\"index\":0,\"embedding\":[1]}]}",
        "{\"data\":[{\"index\":0,\"embedding\":[\"x\"]}]}", "{\"data\":[{\"index\":0,\"embedding\":\"AAA\"}]}",
        "{\"data\":[{\"index\":0,\"embedding\":\"AACA/w==\"}]}",   /* -inf */
        "{\"data\":[{\"index\":0,\"embedding\":[1e999]}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s = scan(emb_scan_openai, bad[i], &rc, NULL);
        CHECK_MSG(rc == 1, "%s", bad[i]);
        CHECK_EQ_STR(s, "");
        free(s);
    }
    s = scan(emb_scan_gemini, "{\"embedding\":{\"values\":[0.5,0.5,0.5]}}", &rc, &first);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(s, "EMBEDDING 0 dims=3\n");
    CHECK(first == 0.5f);
    free(s);
    s = scan(emb_scan_gemini, "{\"embeddings\":[{\"values\":[1]},{\"values\":[2,3]}]}", &rc, NULL);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(s, "EMBEDDING 0 dims=1\nEMBEDDING 1 dims=2\n");
    free(s);
    s = scan(emb_scan_gemini, "{\"embeddings\":[{\"values\":[1]},{}]}", &rc, NULL);
    CHECK_EQ_INT(rc, 1);
    free(s);
}

static void test_render(void) {
    sg_buf out;
    sg_buf_init(&out);
    emb_render r;
    float v[2] = {0.1f, -2.0f};
    gw_event ev = {.kind = GW_EV_EMBEDDING, .vec = v, .dims = 2};
    emb_render_init(&r, &out, false, 1, "text-embedding-3-small");
    emb_render_event(&r, &ev);
    gw_event u = {.kind = GW_EV_USAGE, .usage = {5, 0, 0, 0, -1, true}};
    emb_render_event(&r, &u);
    CHECK_EQ_INT(emb_render_end(&r), 200);
    CHECK_EQ_STR(out.data, "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[0.100000001,-2]}],"
                           "\"model\":\"text-embedding-3-small\",\"usage\":{\"prompt_tokens\":5,\"total_tokens\":5}}");
    CHECK((float)strtod("0.100000001", NULL) == v[0]);   /* the printed value reads back as the float32 */
    sg_buf_reset(&out);
    emb_render_init(&r, &out, true, 2, "m");
    emb_render_event(&r, &ev);
    emb_render_event(&r, &ev);
    CHECK_EQ_INT(emb_render_end(&r), 200);
    CHECK(strstr(out.data, "\"index\":1,\"embedding\":\"zczMPQAAAMA=\"") != NULL);
    CHECK(strstr(out.data, "\"prompt_tokens\":0") != NULL);   /* no usage known */
    sg_buf_reset(&out);
    emb_render_init(&r, &out, false, 2, "m");   /* one vector for two inputs */
    emb_render_event(&r, &ev);
    CHECK_EQ_INT(emb_render_end(&r), 502);
    CHECK(strncmp(out.data, "{\"error\":", 9) == 0);
    sg_buf_free(&out);
}

static void error_words(sg_buf *out, const gw_api_error *e) {
    sg_buf_printf(out, "{\"error\":\"%d %s\"}", e->status, e->message);
}

/* The other client APIs' shapes: Ollama's two, the AI Gateway protocol's. */
static void test_render_shapes(void) {
    sg_buf out;
    sg_buf_init(&out);
    emb_render r;
    float v[2] = {0.5f, -2.0f};
    gw_event ev = {.kind = GW_EV_EMBEDDING, .vec = v, .dims = 2};
    gw_event u = {.kind = GW_EV_USAGE, .usage = {7, 0, 0, 0, -1, false}};
    emb_render_init(&r, &out, true, 2, "nomic");   /* base64 asked: these shapes are numbers only */
    emb_render_shape(&r, EMB_SHAPE_OLLAMA, error_words);
    emb_render_event(&r, &ev);
    emb_render_event(&r, &ev);
    emb_render_event(&r, &u);
    r.elapsed_ns = 1234;
    CHECK_EQ_INT(emb_render_end(&r), 200);
    CHECK_EQ_STR(out.data, "{\"model\":\"nomic\",\"embeddings\":[[0.5,-2],[0.5,-2]],\"total_duration\":1234,"
                           "\"load_duration\":0,\"prompt_eval_count\":7}");
    sg_buf_reset(&out);
    emb_render_init(&r, &out, false, 1, "nomic");
    emb_render_shape(&r, EMB_SHAPE_OLLAMA_LEGACY, error_words);
    emb_render_event(&r, &ev);
    CHECK_EQ_INT(emb_render_end(&r), 200);
    CHECK_EQ_STR(out.data, "{\"embedding\":[0.5,-2]}");
    sg_buf_reset(&out);
    emb_render_init(&r, &out, false, 1, "nomic");   /* two vectors for the one prompt */
    emb_render_shape(&r, EMB_SHAPE_OLLAMA_LEGACY, error_words);
    emb_render_event(&r, &ev);
    emb_render_event(&r, &ev);
    CHECK_EQ_INT(emb_render_end(&r), 502);
    CHECK_EQ_STR(out.data, "{\"error\":\"502 the provider answered 2 embeddings for 1 inputs\"}");
    sg_buf_reset(&out);
    emb_render_init(&r, &out, false, 2, "openai/text-embedding-3-small");
    emb_render_shape(&r, EMB_SHAPE_AI_GATEWAY, error_words);
    emb_render_event(&r, &ev);
    emb_render_event(&r, &ev);
    emb_render_event(&r, &u);
    CHECK_EQ_INT(emb_render_end(&r), 200);
    CHECK_EQ_STR(out.data, "{\"embeddings\":[[0.5,-2],[0.5,-2]],\"usage\":{\"tokens\":7},\"warnings\":[]}");
    sg_buf_reset(&out);
    emb_render_init(&r, &out, false, 2, "m");   /* an upstream error, in the entry's words */
    emb_render_shape(&r, EMB_SHAPE_AI_GATEWAY, error_words);
    gw_api_error e;
    gw_api_fail(&e, 429, NULL, NULL, "slow down");
    emb_render_error(&r, &e);
    CHECK_EQ_INT(emb_render_end(&r), 429);
    CHECK_EQ_STR(out.data, "{\"error\":\"429 slow down\"}");
    sg_buf_free(&out);
}

/* emb_check_request: a tree another entry built, checked as an OpenAI body (and taken). */
static void test_check_tree(void) {
    emb_request r;
    gw_api_error e;
    CHECK_EQ_INT(emb_check_request(json_pack("{s:s,s:[s,s],s:i}", "model", "m", "input", "a", "b", "dimensions", 8), &r, &e), 0);
    CHECK_EQ_INT((int)r.n_inputs, 2);
    CHECK_EQ_INT((int)r.dimensions, 8);
    CHECK_EQ_STR(r.model, "m");
    emb_request_free(&r);
    CHECK_EQ_INT(emb_check_request(json_pack("{s:s,s:[]}", "model", "m", "input"), &r, &e), -1);
    CHECK_EQ_INT(e.status, 400);
    CHECK_EQ_STR(e.param, "input");
    CHECK(r.body == NULL);
    CHECK_EQ_INT(emb_check_request(json_pack("{s:s,s:s}", "model", "m", "input", "x"), &r, &e), 0);
    emb_request_free(&r);
    json_t *many = json_array();
    for (int i = 0; i <= EMB_MAX_INPUTS; i++) json_array_append_new(many, json_string("x"));
    CHECK_EQ_INT(emb_check_request(json_pack("{s:s,s:o}", "model", "m", "input", many), &r, &e), -1);
    CHECK(strstr(e.message, "2048") != NULL);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_parse_valid);
    RUN(test_parse_errors);
    RUN(test_build);
    RUN(test_base64);
    RUN(test_scan);
    RUN(test_render);
    RUN(test_render_shapes);
    RUN(test_check_tree);
    return tu_finish(argv[0]);
}
