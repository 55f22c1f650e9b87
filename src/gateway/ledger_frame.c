/* ledger_frame.c: see ledger_frame.h. The record's spool formats: format 2's binary
 * frames (written and read), format 1's JSON lines (read; written for rejected.jsonl). */
#include "gateway/ledger_frame.h"

#include <jansson.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/crc32c.h"

#define MAX_ID 128                   /* bytes kept of ids, names and models */
#define MAX_NAME 256
#define MAX_ERROR 63
#define FIXED 80                     /* the payload's numbers: 9 x i64, i32, u8, u8, u16 */
#define NULL_STR 0xFFFF
#define ATT_TIMES 56                 /* format 3's per-attempt numbers: 7 x i64 */

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The length of the valid, whole UTF-8 sequence at s[i] (s has n bytes), 0 when the
 * bytes there are not one (overlong forms and surrogates are not). */
static size_t utf8_seq(const char *s, size_t i, size_t n) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80) return 1;
    size_t k = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
    bool ok = k && i + k <= n;
    for (size_t j = 1; ok && j < k; j++) ok = ((unsigned char)s[i + j] & 0xC0) == 0x80;
    if (ok && k == 3) {
        unsigned char c1 = (unsigned char)s[i + 1];
        ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);   /* overlong, surrogates */
    }
    if (ok && k == 4) {
        unsigned char c1 = (unsigned char)s[i + 1];
        ok = !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90);
    }
    return ok ? k : 0;
}

/* ---- format 2: a binary frame ------------------------------------------------------------ */

static char *put_u16(char *o, unsigned v) { o[0] = (char)(v & 0xff); o[1] = (char)(v >> 8 & 0xff); return o + 2; }

static char *put_u32(char *o, uint32_t v) {
    for (int i = 0; i < 4; i++) o[i] = (char)(v >> (8 * i) & 0xff);
    return o + 4;
}

static char *put_i64(char *o, int64_t v) {
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++) o[i] = (char)(u >> (8 * i) & 0xff);
    return o + 8;
}

/* A string of at most max bytes of s, invalid UTF-8 replaced: at most 3 * max + 3 bytes. */
static char *put_str(char *o, const char *s, size_t max) {
    if (!s) return put_u16(o, NULL_STR);
    size_t n = strnlen(s, max);
    char *start = o + 2, *w = start;
    unsigned char high = 0;
    for (size_t i = 0; i < n; i++) high |= (unsigned char)s[i];
    if (high < 0x80) {   /* ASCII, the usual case: copied whole */
        memcpy(w, s, n);
        w += n;
        n = 0;
    }
    for (size_t i = 0; i < n;) {
        if ((unsigned char)s[i] < 0x80) { *w++ = s[i++]; continue; }
        size_t k = utf8_seq(s, i, n);
        if (k) { memcpy(w, s + i, k); w += k; i += k; }
        else { memcpy(w, "\xEF\xBF\xBD", 3); w += 3; i++; }
    }
    put_u16(o, (unsigned)(w - start));
    *w++ = 0;
    return w;
}

static size_t room_bin(const char *s, size_t max) { return s ? strnlen(s, max) * 3 + 3 : 2; }

void ledger_frame_encode(const ledger_record *r, sg_buf *b) {
    size_t na = r->n_attempts < LEDGER_MAX_ATTEMPTS ? r->n_attempts : LEDGER_MAX_ATTEMPTS;
    size_t room = LEDGER_FRAME_HEADER + FIXED + room_bin(r->request_id ? r->request_id : "", MAX_ID) +
                  room_bin(r->key_id, MAX_ID) + room_bin(r->route, MAX_NAME) + room_bin(r->requested_model, MAX_NAME) +
                  room_bin(r->provider, MAX_ID) + room_bin(r->model, MAX_NAME) + room_bin(r->error, MAX_ERROR);
    for (size_t i = 0; i < na; i++)
        room += 12 + ATT_TIMES + room_bin(r->attempts[i].provider, MAX_ID) + room_bin(r->attempts[i].model, MAX_NAME) +
                room_bin(r->attempts[i].error, MAX_ERROR);
    sg_buf_reserve(b, room);
    char *h = b->data + b->len, *o = h + LEDGER_FRAME_HEADER;
    o = put_i64(o, r->time_ms ? r->time_ms : wall_ms());
    o = put_i64(o, r->usage.input);
    o = put_i64(o, r->usage.cache_read);
    o = put_i64(o, r->usage.cache_write);
    o = put_i64(o, r->usage.output);
    o = put_i64(o, r->usage.reasoning);
    o = put_i64(o, r->cost_micro < 0 ? -1 : r->cost_micro);
    o = put_i64(o, r->latency_ms);
    o = put_i64(o, r->ttft_ms);
    o = put_u32(o, (uint32_t)r->status);
    *o++ = (char)((r->stream ? 1 : 0) | (r->usage.estimated ? 2 : 0));
    *o++ = (char)na;
    o = put_u16(o, 0);
    o = put_str(o, r->request_id ? r->request_id : "", MAX_ID);
    o = put_str(o, r->key_id, MAX_ID);
    o = put_str(o, r->route, MAX_NAME);
    o = put_str(o, r->requested_model, MAX_NAME);
    o = put_str(o, r->provider, MAX_ID);
    o = put_str(o, r->model, MAX_NAME);
    o = put_str(o, r->error, MAX_ERROR);
    for (size_t i = 0; i < na; i++) {
        const ledger_attempt *a = &r->attempts[i];
        o = put_i64(o, a->latency_ms);
        o = put_u32(o, (uint32_t)a->status);
        o = put_str(o, a->provider, MAX_ID);
        o = put_str(o, a->model, MAX_NAME);
        o = put_str(o, a->error, MAX_ERROR);
        o = put_i64(o, a->start_ms);
        o = put_i64(o, a->queue_ms);
        o = put_i64(o, a->connect_ms);
        o = put_i64(o, a->ttft_ms);
        o = put_i64(o, a->input_tokens);
        o = put_i64(o, a->output_tokens);
        o = put_i64(o, a->cost_micro < 0 ? -1 : a->cost_micro);
    }
    uint32_t len = (uint32_t)(o - (h + LEDGER_FRAME_HEADER));
    h[0] = (char)LEDGER_FRAME_MAGIC;
    h[1] = LEDGER_FRAME_VERSION;
    put_u16(h + 2, 0);
    put_u32(h + 4, len);
    put_u32(h + 8, sg_crc32c(0, h + LEDGER_FRAME_HEADER, len));
    b->len = (size_t)(o - b->data);
    b->data[b->len] = 0;
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

typedef struct cursor {
    const unsigned char *p, *end;
    bool bad;                        /* ran past the end, or a string is malformed */
} cursor;

static int64_t get_i64(cursor *c) {
    if (c->end - c->p < 8) { c->bad = true; return 0; }
    uint64_t u = 0;
    for (int i = 7; i >= 0; i--) u = u << 8 | c->p[i];
    c->p += 8;
    return (int64_t)u;
}

static int32_t get_i32(cursor *c) {
    if (c->end - c->p < 4) { c->bad = true; return 0; }
    uint32_t u = get_u32(c->p);
    c->p += 4;
    return (int32_t)u;
}

/* A string: points into the frame (its NUL is there); NULL for a null one or when bad. */
static const char *get_str(cursor *c) {
    if (c->end - c->p < 2) { c->bad = true; return NULL; }
    size_t n = (size_t)c->p[0] | (size_t)c->p[1] << 8;
    c->p += 2;
    if (n == NULL_STR) return NULL;
    if ((size_t)(c->end - c->p) < n + 1 || c->p[n] != 0 || memchr(c->p, 0, n)) { c->bad = true; return NULL; }
    const char *s = (const char *)c->p;
    c->p += n + 1;
    return s;
}

int ledger_frame_decode(const char *buf, size_t len, ledger_record *r, ledger_attempt *atts, size_t *used) {
    const unsigned char *p = (const unsigned char *)buf;
    if (len < 1) return 0;
    if (p[0] != LEDGER_FRAME_MAGIC) return -1;
    if (len < 2) return 0;
    unsigned version = p[1];   /* 2: attempts without their timings, tokens and cost */
    if (version != 2 && version != LEDGER_FRAME_VERSION) return -1;
    if ((len > 2 && p[2]) || (len > 3 && p[3])) return -1;   /* judged as early as the bytes allow */
    if (len < 8) return 0;
    uint32_t L = get_u32(p + 4);
    if (L < FIXED || L > LEDGER_FRAME_MAX - LEDGER_FRAME_HEADER) return -1;
    if (len < LEDGER_FRAME_HEADER + (size_t)L) return 0;
    if (sg_crc32c(0, p + LEDGER_FRAME_HEADER, L) != get_u32(p + 8)) return -1;
    cursor c = {p + LEDGER_FRAME_HEADER, p + LEDGER_FRAME_HEADER + L, false};
    memset(r, 0, sizeof *r);
    r->time_ms = get_i64(&c);
    r->usage.input = get_i64(&c);
    r->usage.cache_read = get_i64(&c);
    r->usage.cache_write = get_i64(&c);
    r->usage.output = get_i64(&c);
    r->usage.reasoning = get_i64(&c);
    r->cost_micro = get_i64(&c);
    r->latency_ms = get_i64(&c);
    r->ttft_ms = get_i64(&c);
    r->status = get_i32(&c);
    unsigned flags = c.p[0], na = c.p[1];
    if (c.p[2] || c.p[3] || flags > 3 || na > LEDGER_MAX_ATTEMPTS) return -1;
    c.p += 4;
    r->stream = flags & 1;
    r->usage.estimated = flags & 2;
    r->request_id = get_str(&c);
    r->key_id = get_str(&c);
    r->route = get_str(&c);
    r->requested_model = get_str(&c);
    r->provider = get_str(&c);
    r->model = get_str(&c);
    r->error = get_str(&c);
    for (unsigned i = 0; i < na && !c.bad; i++) {
        ledger_attempt *a = &atts[i];
        a->latency_ms = get_i64(&c);
        a->status = get_i32(&c);
        a->provider = get_str(&c);
        a->model = get_str(&c);
        a->error = get_str(&c);
        if (version >= 3) {
            a->start_ms = get_i64(&c);
            a->queue_ms = get_i64(&c);
            a->connect_ms = get_i64(&c);
            a->ttft_ms = get_i64(&c);
            a->input_tokens = get_i64(&c);
            a->output_tokens = get_i64(&c);
            a->cost_micro = get_i64(&c);
        } else {
            a->start_ms = a->queue_ms = a->connect_ms = a->ttft_ms = -1;
            a->input_tokens = a->output_tokens = a->cost_micro = -1;
        }
    }
    if (c.bad || c.p != c.end || !r->request_id || !*r->request_id) return -1;
    r->attempts = atts;
    r->n_attempts = na;
    *used = LEDGER_FRAME_HEADER + L;
    return 1;
}

size_t ledger_frame_resync(const char *buf, size_t len) {
    ledger_record r;
    ledger_attempt atts[LEDGER_MAX_ATTEMPTS];
    size_t used;
    for (size_t i = 1; i < len; i++) {
        if ((unsigned char)buf[i] != LEDGER_FRAME_MAGIC) continue;
        if (ledger_frame_decode(buf + i, len - i, &r, atts, &used) >= 0) return i;
    }
    return len;
}

/* ---- format 1: a JSON line ------------------------------------------------------------ */

/* The line is written through a cursor into room reserved once: each string takes at
 * most 6 bytes per input byte (\uXXXX) plus its quotes, each number at most 20. */
static size_t room_str(const char *s, size_t max) { return s ? strnlen(s, max) * 6 + 2 : 4; }

/* A JSON string of at most max bytes of s; invalid UTF-8 becomes U+FFFD, so that the
 * parser (jansson: strict UTF-8) never refuses a line we wrote. */
static char *w_str(char *o, const char *s, size_t max) {
    static const char hex[] = "0123456789abcdef";
    if (!s) { memcpy(o, "null", 4); return o + 4; }
    size_t n = strnlen(s, max);
    *o++ = '"';
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') { *o++ = (char)c; i++; continue; }
        if (c < 0x80) {
            if (c == '"' || c == '\\') { o[0] = '\\'; o[1] = (char)c; o += 2; }
            else { memcpy(o, "\\u00", 4); o[4] = hex[c >> 4]; o[5] = hex[c & 15]; o += 6; }
            i++;
            continue;
        }
        size_t k = utf8_seq(s, i, n);
        if (k) { memcpy(o, s + i, k); o += k; i += k; }
        else { memcpy(o, "\\ufffd", 6); o += 6; i++; }
    }
    *o++ = '"';
    return o;
}

static char *w_int(char *o, int64_t v) { return o + sg_fmt_i64(o, v); }

#define W_LIT(o, lit) (memcpy((o), (lit), sizeof(lit) - 1), (o) + sizeof(lit) - 1)

void ledger_record_json(const ledger_record *r, sg_buf *b) {
    size_t na = r->n_attempts < LEDGER_MAX_ATTEMPTS ? r->n_attempts : LEDGER_MAX_ATTEMPTS;
    size_t room = 400 + room_str(r->request_id, MAX_ID) + room_str(r->key_id, MAX_ID) + room_str(r->route, MAX_NAME) +
                  room_str(r->requested_model, MAX_NAME) + room_str(r->provider, MAX_ID) + room_str(r->model, MAX_NAME) +
                  room_str(r->error, MAX_ERROR);
    for (size_t i = 0; i < na; i++)
        room += 240 + room_str(r->attempts[i].provider, MAX_ID) + room_str(r->attempts[i].model, MAX_NAME) +
                room_str(r->attempts[i].error, MAX_ERROR);
    sg_buf_reserve(b, room);
    char *o = b->data + b->len;
    o = W_LIT(o, "{\"v\":1,\"id\":"); o = w_str(o, r->request_id ? r->request_id : "", MAX_ID);
    o = W_LIT(o, ",\"ts\":"); o = w_int(o, r->time_ms ? r->time_ms : wall_ms());
    o = W_LIT(o, ",\"key\":"); o = w_str(o, r->key_id, MAX_ID);
    o = W_LIT(o, ",\"route\":"); o = w_str(o, r->route, MAX_NAME);
    o = W_LIT(o, ",\"req\":"); o = w_str(o, r->requested_model, MAX_NAME);
    o = W_LIT(o, ",\"prov\":"); o = w_str(o, r->provider, MAX_ID);
    o = W_LIT(o, ",\"model\":"); o = w_str(o, r->model, MAX_NAME);
    o = W_LIT(o, ",\"status\":"); o = w_int(o, r->status);
    o = W_LIT(o, ",\"err\":"); o = w_str(o, r->error, MAX_ERROR);
    if (r->stream) o = W_LIT(o, ",\"stream\":true");
    else o = W_LIT(o, ",\"stream\":false");
    o = W_LIT(o, ",\"in\":"); o = w_int(o, r->usage.input);
    o = W_LIT(o, ",\"cr\":"); o = w_int(o, r->usage.cache_read);
    o = W_LIT(o, ",\"cw\":"); o = w_int(o, r->usage.cache_write);
    o = W_LIT(o, ",\"out\":"); o = w_int(o, r->usage.output);
    o = W_LIT(o, ",\"rs\":"); o = w_int(o, r->usage.reasoning);
    if (r->usage.estimated) o = W_LIT(o, ",\"est\":true");
    else o = W_LIT(o, ",\"est\":false");
    o = W_LIT(o, ",\"cost\":"); o = w_int(o, r->cost_micro < 0 ? -1 : r->cost_micro);
    o = W_LIT(o, ",\"lat\":"); o = w_int(o, r->latency_ms);
    o = W_LIT(o, ",\"ttft\":"); o = w_int(o, r->ttft_ms);
    o = W_LIT(o, ",\"att\":[");
    for (size_t i = 0; i < na; i++) {
        const ledger_attempt *a = &r->attempts[i];
        if (i) *o++ = ',';
        *o++ = '[';
        o = w_str(o, a->provider, MAX_ID); *o++ = ',';
        o = w_str(o, a->model, MAX_NAME); *o++ = ',';
        o = w_int(o, a->status); *o++ = ',';
        o = w_str(o, a->error, MAX_ERROR); *o++ = ',';
        o = w_int(o, a->latency_ms); *o++ = ',';
        o = w_int(o, a->start_ms); *o++ = ',';
        o = w_int(o, a->queue_ms); *o++ = ',';
        o = w_int(o, a->connect_ms); *o++ = ',';
        o = w_int(o, a->ttft_ms); *o++ = ',';
        o = w_int(o, a->input_tokens); *o++ = ',';
        o = w_int(o, a->output_tokens); *o++ = ',';
        o = w_int(o, a->cost_micro < 0 ? -1 : a->cost_micro); *o++ = ']';
    }
    o = W_LIT(o, "]}\n");
    b->len = (size_t)(o - b->data);
    b->data[b->len] = 0;
}

int ledger_frame_parse_json(const char *s, size_t n, json_t **root, ledger_record *r, ledger_attempt *atts) {
    json_error_t jerr;
    *root = json_loadb(s, n, 0, &jerr);
    json_t *o = *root;
    if (!json_is_object(o)) return -1;
    memset(r, 0, sizeof *r);
#define S(k) (json_string_value(json_object_get(o, k)))
#define I(k, d) (json_is_integer(json_object_get(o, k)) ? (int64_t)json_integer_value(json_object_get(o, k)) : (d))
    r->request_id = S("id");
    if (!r->request_id || !*r->request_id) return -1;
    r->time_ms = I("ts", 0);
    r->key_id = S("key");
    r->route = S("route");
    r->requested_model = S("req");
    r->provider = S("prov");
    r->model = S("model");
    r->status = (int)I("status", 0);
    r->error = S("err");
    r->stream = json_is_true(json_object_get(o, "stream"));
    r->usage.input = I("in", -1);
    r->usage.cache_read = I("cr", -1);
    r->usage.cache_write = I("cw", -1);
    r->usage.output = I("out", -1);
    r->usage.reasoning = I("rs", -1);
    r->usage.estimated = json_is_true(json_object_get(o, "est"));
    r->cost_micro = I("cost", -1);
    r->latency_ms = I("lat", -1);
    r->ttft_ms = I("ttft", -1);
#undef S
#undef I
    json_t *att = json_object_get(o, "att");
    size_t i, na = 0;
    json_t *a;
    json_array_foreach(att, i, a) {
        if (na == LEDGER_MAX_ATTEMPTS || !json_is_array(a)) break;
        ledger_attempt *t = &atts[na++];
        t->provider = json_string_value(json_array_get(a, 0));
        t->model = json_string_value(json_array_get(a, 1));
        t->status = (int)json_integer_value(json_array_get(a, 2));
        t->error = json_string_value(json_array_get(a, 3));
        json_t *lat = json_array_get(a, 4);
        t->latency_ms = json_is_integer(lat) ? (int64_t)json_integer_value(lat) : -1;
        int64_t *more[] = {&t->start_ms, &t->queue_ms, &t->connect_ms, &t->ttft_ms, &t->input_tokens,
                           &t->output_tokens, &t->cost_micro};   /* absent in older lines: -1 */
        for (size_t k = 0; k < sizeof more / sizeof more[0]; k++) {
            json_t *v = json_array_get(a, 5 + k);
            *more[k] = json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
        }
    }
    r->attempts = atts;
    r->n_attempts = na;
    return 0;
}

