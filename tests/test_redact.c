/* test_redact.c: the redaction rule of redact.h: known secrets anywhere, short ones only
 * as whole tokens, truncated pieces, gateway keys by their SHA-256, the credential shapes
 * (Bearer, key names with ':' or '=', ?key=, URL passwords, conninfo), what must stay
 * (masked keys, ordinary words), the in-place form's truncation, and a configuration's
 * set (every provider key, header value, gateway key hash and DSN password, and a reload
 * bringing its own). */
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "gateway/config.h"
#include "gateway/redact.h"
#include "testutil.h"

/* text through set s; returns a static copy for CHECK_EQ_STR */
static const char *red(const redact_set *s, const char *text, size_t *count) {
    static char out[2048];
    sg_buf b;
    sg_buf_init(&b);
    size_t n = redact_text(s, text, strlen(text), &b);
    if (count) *count = n;
    snprintf(out, sizeof out, "%s", b.data ? b.data : "");
    sg_buf_free(&b);
    return out;
}

static void test_known_secrets(void) {
    redact_set *s = redact_new();
    redact_add(s, "sk-abc123456789xyz", 18);
    redact_add(s, "short", 5);
    CHECK_EQ_INT(redact_count(s), 2);
    size_t n = 0;
    CHECK_EQ_STR(red(s, "{\"error\":{\"message\":\"Incorrect API key provided: sk-abc123456789xyz.\"}}", &n),
                 "{\"error\":{\"message\":\"Incorrect API key provided: [REDACTED].\"}}");
    CHECK_EQ_INT(n, 1);
    /* inside a longer run of characters, twice */
    CHECK_EQ_STR(red(s, "k=xxsk-abc123456789xyzyy and sk-abc123456789xyz", &n), "k=xx[REDACTED]yy and [REDACTED]");
    CHECK_EQ_INT(n, 2);
    /* a short secret: only as a whole token */
    CHECK_EQ_STR(red(s, "short shorter not-short short.", NULL), "[REDACTED] shorter not-short [REDACTED].");
    /* a truncated echo (a piece of 12+ characters) goes; a masked key stays */
    CHECK_EQ_STR(red(s, "key sk-abc12345678... was wrong", NULL), "key [REDACTED]... was wrong");
    /* the secret pass first, then the shapes: the scheme word stays */
    CHECK_EQ_STR(red(s, "had \"Authorization: Bearer sk-abc123456789xyz\".", NULL), "had \"Authorization: Bearer [REDACTED]\".");
    CHECK_EQ_STR(red(s, "x-api-key: sk-abc123456789xyz", NULL), "x-api-key: [REDACTED]");
    CHECK_EQ_STR(red(s, "key sk-abc***************9xyz was wrong", NULL), "key sk-abc***************9xyz was wrong");
    /* nothing to do: the text comes back as it was, and an empty text is fine */
    CHECK_EQ_STR(red(s, "upstream answered HTTP 500", &n), "upstream answered HTTP 500");
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_STR(red(s, "", &n), "");
    CHECK_EQ_INT(n, 0);
    redact_free(s);
}

static void test_shapes(void) {
    /* no set at all: the credential shapes still go */
    CHECK_EQ_STR(red(NULL, "Authorization: Bearer sk-live-whatever_1.2/3==", NULL), "Authorization: Bearer [REDACTED]");
    CHECK_EQ_STR(red(NULL, "authorization: bearer\tabc", NULL), "authorization: bearer\t[REDACTED]");
    CHECK_EQ_STR(red(NULL, "echo: Bearer sk-abcdefgh.", NULL), "echo: Bearer [REDACTED].");
    CHECK_EQ_STR(red(NULL, "sent Basic dXNlcjpwYXNz= to it", NULL), "sent Basic [REDACTED] to it");
    CHECK_EQ_STR(red(NULL, "{\"x-api-key\": \"sk-ant-123\", \"n\": 1}", NULL), "{\"x-api-key\": \"[REDACTED]\", \"n\": 1}");
    CHECK_EQ_STR(red(NULL, "X-Goog-Api-Key:AIzaXYZ", NULL), "X-Goog-Api-Key:[REDACTED]");
    CHECK_EQ_STR(red(NULL, "api_key=abc&x=1", NULL), "api_key=[REDACTED]&x=1");
    CHECK_EQ_STR(red(NULL, "GET /v1beta/models?key=AIzaSECRET&alt=sse", NULL), "GET /v1beta/models?key=[REDACTED]&alt=sse");
    CHECK_EQ_STR(red(NULL, "authorization=Bearer tok", NULL), "authorization=Bearer [REDACTED]");
    CHECK_EQ_STR(red(NULL, "redis://user:hunter2@cache:6379/0 down", NULL), "redis://user:[REDACTED]@cache:6379/0 down");
    CHECK_EQ_STR(red(NULL, "host=db password=s3cret dbname=x", NULL), "host=db password=[REDACTED] dbname=x");
    /* words that only look alike stay */
    CHECK_EQ_STR(red(NULL, "Invalid api-key provided. The bearer of bad news; key=", NULL),
                 "Invalid api-key provided. The bearer of bad news; key=");
    CHECK_EQ_STR(red(NULL, "a mykey=1 and https://host/path", NULL), "a mykey=1 and https://host/path");
}

static void test_hashes_and_dsn(void) {
    redact_set *s = redact_new();
    uint8_t h[GW_SHA256_LEN];
    CHECK(config_key_hash("sk-gw-team-key-0001", 19, h) == 0);
    redact_add_sha256(s, h);
    redact_add_dsn(s, "postgresql://ledger:pg-pass-9876@db.internal:5432/smolgate");
    redact_add_dsn(s, "host=x user=y password='p w q secret'");
    CHECK_EQ_STR(red(s, "the client sent sk-gw-team-key-0001 in the body", NULL), "the client sent [REDACTED] in the body");
    CHECK_EQ_STR(red(s, "sk-gw-team-key-0002 is another", NULL), "sk-gw-team-key-0002 is another");
    CHECK_EQ_STR(red(s, "FATAL: password authentication failed (pg-pass-9876)", NULL),
                 "FATAL: password authentication failed ([REDACTED])");
    CHECK_EQ_STR(red(s, "bad 'p w q secret'", NULL), "bad '[REDACTED]'");
    redact_free(s);
    redact_free(NULL);
}

static void test_in_place(void) {
    redact_set *s = redact_new();
    redact_add(s, "sk-0123456789", 13);
    char msg[24] = "key sk-0123456789 bad";
    CHECK_EQ_INT(redact_str(s, msg, sizeof msg), 1);
    CHECK_EQ_STR(msg, "key [REDACTED] bad");
    /* growing past the buffer: cut to fit, still NUL-terminated, no key left */
    char small[16] = "Bearer abcdefgh";
    CHECK_EQ_INT(redact_str(s, small, sizeof small), 1);
    CHECK_EQ_STR(small, "Bearer [REDACTE");
    char none[8] = "fine";
    CHECK_EQ_INT(redact_str(s, none, sizeof none), 0);
    CHECK_EQ_STR(none, "fine");
    redact_free(s);
}

static const char *no_env(void *ctx, const char *name) { (void)ctx; (void)name; return NULL; }

static void test_from_config(void) {
    const char *yaml =
        "providers:\n"
        "  openai: {api_key: sk-config-openai-0001, headers: {OpenAI-Organization: org-config-0002}}\n"
        "  anthropic: {api_key: sk-ant-config-0003}\n"
        "keys:\n"
        "  - {id: team, key: sk-gw-config-0004}\n"
        "state: {redis: 'redis://:redis-pass-0005@127.0.0.1:6379'}\n"
        "ledger: {postgres: 'postgresql://u:pg-pass-0006@127.0.0.1/db'}\n";
    char *path = tu_path("%s/redact.yaml", tu_tmpdir());
    CHECK(tu_write(path, yaml, strlen(yaml)) == 0);
    config_env env = {no_env, NULL};
    gw_config *c = NULL;
    sg_error err;
    int rc = config_load(&c, path, &env, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) return;
    CHECK(c->secrets != NULL);
    const char *all = "sk-config-openai-0001 org-config-0002 sk-ant-config-0003 sk-gw-config-0004 redis-pass-0005 pg-pass-0006";
    CHECK_EQ_STR(red(c->secrets, all, NULL),
                 "[REDACTED] [REDACTED] [REDACTED] [REDACTED] [REDACTED] [REDACTED]");
    /* a reload is a new configuration with its own set: the new key goes, the old stays
     * in the old set (requests that still hold the old configuration) */
    const char *yaml2 = "providers:\n  openai: {api_key: sk-config-openai-0007}\n";
    CHECK(tu_write(path, yaml2, strlen(yaml2)) == 0);
    gw_config *c2 = NULL;
    CHECK(config_load(&c2, path, &env, &err) == 0);
    if (c2) {
        CHECK_EQ_STR(red(c2->secrets, "sk-config-openai-0007", NULL), "[REDACTED]");
        CHECK_EQ_STR(red(c2->secrets, "org-config-0002", NULL), "org-config-0002");
        CHECK_EQ_STR(red(c->secrets, "sk-config-openai-0001", NULL), "[REDACTED]");
        config_unref(c2);
    }
    config_unref(c);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_known_secrets);
    RUN(test_shapes);
    RUN(test_hashes_and_dsn);
    RUN(test_in_place);
    RUN(test_from_config);
    return tu_finish(argv[0]);
}
