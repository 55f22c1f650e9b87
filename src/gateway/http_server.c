/* http_server.c: see http_server.h.
 *
 * Shape: one http_conn per accepted socket, each embedding its one exchange (pipelined
 * requests are served one at a time, so one is enough) and owning every buffer the
 * exchange uses: the input buffer (the request is parsed in place: its strings are
 * NUL-terminated where they lie), the header arrays, the output buffer and an arena.
 * Nothing is allocated per request once a connection has warmed up.
 *
 * Lifetimes: a conn is freed only when its socket is closed, its exchange is not owned
 * by a handler, and no function of ours is on the stack for it (c->busy). Every entry
 * point (I/O, timers, the prepare hook, owner calls) ends with conn_maybe_free().
 *
 * Until its request is complete the parser keeps only offsets from the request's start
 * (in_off): a body arriving after the headers may grow (realloc) or compact (memmove) the
 * input buffer under it. The request's pointers are made at dispatch, and from then on
 * the buffer is frozen (no realloc, no compaction) while the exchange is active;
 * pipelined bytes arriving meanwhile go into its spare room, and reading pauses when
 * that is full.
 *
 * The parser decides from the bytes alone, never from how they were split into reads:
 * every limit and syntax check on a line runs when the line is complete, in one order,
 * and the checks on an incomplete line (too long already) are the ones the complete line
 * would fail first. tests/fuzz/fuzz_http_segments.c holds it to that.
 */
#include "gateway/http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "gateway/request_id.h"

#define IN_INITIAL     4096
#define IN_MIN_READ    1024
#define OUT_HIGH       (256 * 1024)  /* stop serving pipelined requests above this */
#define DIRECT_MIN     (64 * 1024)   /* bodies this large are written from the caller's memory */
#define ARENA_FIRST    4096
#define CHUNK_LINE_MAX 4096          /* a chunk-size line (with extensions) */
#define MAX_LEADING_CRLF 8
#define BUF_KEEP       (256 * 1024)  /* idle connections give back buffers larger than this */

enum { PS_HEAD, PS_BODY_CL, PS_BODY_CHUNKED };           /* parser state */
enum { CK_SIZE, CK_DATA, CK_DATA_CRLF, CK_TRAILER };     /* chunked body state */
enum { RT_NONE, RT_HEADER, RT_IDLE, RT_BODY, RT_LINGER }; /* what the read timer guards */
enum { P_MORE, P_READY, P_ERROR };                        /* parse result */

typedef struct arena_block {
    struct arena_block *next;
    size_t cap, used;
    _Alignas(16) char data[];
} arena_block;

typedef struct http_conn http_conn;

/* A header's name and value as offsets from the request's start (in_off). */
typedef struct hdr_span {
    size_t name, value;
} hdr_span;

#define NO_POS SIZE_MAX

struct http_exchange {
    http_conn   *c;
    http_request req;
    char         id[REQID_LEN + 1];
    int          status;        /* sent status, 0 before */
    int          streaming;     /* stream_begin done */
    int          chunked;       /* streaming with chunked framing */
    int          head_only;     /* HEAD request: no body bytes */
    int          keep_alive;    /* decided when the response head is written */
    int          aborted;
    http_exchange_fn on_abort;
    void        *abort_arg;
    http_exchange_fn on_drain;
    void        *drain_arg;
    size_t       drain_low;
};

struct http_conn {
    http_server *s;
    int          fd;
    loop_watch   w;
    loop_timer   rtimer;         /* idle / header / body / linger, see rt_kind */
    loop_timer   wtimer;         /* write progress */
    int          rt_kind;
    http_conn   *prev, *next;    /* s->conns */
    http_conn   *fprev, *fnext;  /* s->flush list */
    int          in_flush;
    int          busy;           /* our frames on the stack for this conn */
    int          processing;     /* conn_process loop is on the stack */
    int          need_process;   /* run conn_process from the prepare hook */

    /* Input: [0, in_off) consumed; the current request starts at in_off. Parser
     * positions below are relative to in_off. */
    char        *in;
    size_t       in_len, in_cap, in_off;
    int          ps;
    size_t       scan;           /* head: bytes scanned for line ends */
    size_t       line_start;     /* head: start of the current line */
    size_t       n_lines;
    int          req_started;    /* a byte of the current request has arrived */
    int          leading_crlf;
    size_t       body_off;       /* body start */
    uint64_t     body_need;      /* Content-Length */
    size_t       ck_dst;         /* chunked: end of decoded bytes == start of undecoded */
    uint64_t     ck_rem;         /* chunked: bytes left in the current chunk */
    int          ck_state;
    size_t       trailer_bytes;
    size_t       req_end;        /* where the next request starts, once READY */
    size_t       path_at;        /* request target's path, or NO_POS for "/" */
    size_t       query_at;       /* after '?', or NO_POS for "" */
    int          version_minor;
    int          keep_alive;     /* the request allows keep-alive */
    int          expect_continue;

    hdr_span    *spans;          /* the headers while the request is read */
    http_header *hdrs;           /* the same, as pointers, from dispatch on */
    size_t       n_hdrs, hdr_cap;

    sg_buf       out;
    size_t       out_off;        /* bytes of out already written */
    int          write_blocked;  /* last write hit EAGAIN; wait for the socket */
    int          io_error;       /* a direct write failed; close at the next flush */

    int          peer_closed;    /* read EOF */
    int          read_paused;    /* stopped reading with bytes maybe left in the socket */
    int          out_paused;     /* stopped serving pipelined requests for output backlog */
    int          close_after_flush;
    int          lingering;      /* write side shut, discarding input until EOF */
    int          no_linger;      /* timed out: close once the response is out, no linger */
    int          x_active;       /* the exchange is owned by a handler */

    arena_block *arena;          /* first block kept across exchanges */
    http_exchange x;
    char         remote[64];
};

struct http_server {
    loop        *l;
    http_server_config cfg;
    char        *listen_str;
    char        *rid_header;
    size_t       rid_header_len;
    int          lfd;
    loop_watch   lw;
    int          port;
    int          accept_paused;
    loop_timer   accept_timer;   /* EMFILE back-off */
    http_conn   *conns;
    http_conn   *flush_head, *flush_tail;
    size_t       n_open;         /* sockets open */
    size_t       n_live;         /* conns allocated (closed ones may wait on owners) */
    size_t       in_hard_cap;
    http_server_stats stats;
    reqid_gen    ids;
    time_t       date_sec;
    char         date_line[48];  /* "Date: Tue, 15 Nov 1994 08:12:31 GMT\r\n" */
    size_t       date_len;
    int          shutting_down;
    int          freeing;
    loop_timer   shutdown_timer;
    loop_timer   done_timer;
    void       (*done)(http_server *, void *);
    void        *done_arg;
};

static void conn_process(http_conn *c);
static void conn_flush(http_conn *c);
static void conn_close(http_conn *c);
static void conn_linger_read(http_conn *c);
static int conn_drain_input(http_conn *c);
static void conn_maybe_free(http_conn *c);
static void server_check_done(http_server *s);
static void server_accept_resume(http_server *s);

/* ------------------------------------------------------------------------------------ */
/* small helpers */

static const char *const k_reasons[][2] = {
    {"100", "Continue"}, {"101", "Switching Protocols"}, {"200", "OK"}, {"201", "Created"},
    {"202", "Accepted"}, {"204", "No Content"}, {"206", "Partial Content"},
    {"301", "Moved Permanently"}, {"302", "Found"}, {"304", "Not Modified"},
    {"307", "Temporary Redirect"}, {"308", "Permanent Redirect"}, {"400", "Bad Request"},
    {"401", "Unauthorized"}, {"402", "Payment Required"}, {"403", "Forbidden"},
    {"404", "Not Found"}, {"405", "Method Not Allowed"}, {"406", "Not Acceptable"},
    {"408", "Request Timeout"}, {"409", "Conflict"}, {"410", "Gone"},
    {"411", "Length Required"}, {"413", "Content Too Large"}, {"414", "URI Too Long"},
    {"415", "Unsupported Media Type"}, {"417", "Expectation Failed"},
    {"422", "Unprocessable Content"}, {"429", "Too Many Requests"},
    {"431", "Request Header Fields Too Large"}, {"499", "Client Closed Request"},
    {"500", "Internal Server Error"}, {"501", "Not Implemented"}, {"502", "Bad Gateway"},
    {"503", "Service Unavailable"}, {"504", "Gateway Timeout"},
    {"505", "HTTP Version Not Supported"}, {"529", "Site Overloaded"},
};

const char *http_status_reason(int status) {
    char code[8];
    snprintf(code, sizeof code, "%d", status);
    for (size_t i = 0; i < sizeof k_reasons / sizeof k_reasons[0]; i++)
        if (!strcmp(k_reasons[i][0], code)) return k_reasons[i][1];
    return "Unknown";
}

/* RFC 9110 tchar. */
static const unsigned char k_tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static void make_request_id(http_server *s, char out[REQID_LEN + 1]) { reqid_next(&s->ids, out); }

/* "Date: ..." is the same for a whole second: format it once per second. */
static void update_date(http_server *s) {
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now == s->date_sec) return;
    s->date_sec = now;
    struct tm tm;
    gmtime_r(&now, &tm);
    int n = snprintf(s->date_line, sizeof s->date_line, "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n",
                     days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
                     tm.tm_hour, tm.tm_min, tm.tm_sec);
    s->date_len = n > 0 ? (size_t)n : 0;
}

/* ------------------------------------------------------------------------------------ */
/* arena */

void *http_exchange_alloc(http_exchange *x, size_t n) {
    http_conn *c = x->c;
    n = (n + 15) & ~(size_t)15;
    arena_block *b = c->arena;
    if (!b) {
        b = sg_xmalloc(sizeof *b + ARENA_FIRST);
        b->next = NULL;
        b->cap = ARENA_FIRST;
        b->used = 0;
        c->arena = b;
    }
    /* Allocate from the newest block (the list head after the first is the newest). */
    arena_block *cur = b->next ? b->next : b;
    if (cur->cap - cur->used < n) {
        size_t cap = n > 2 * ARENA_FIRST ? n : 2 * ARENA_FIRST;
        arena_block *nb = sg_xmalloc(sizeof *nb + cap);
        nb->cap = cap;
        nb->used = 0;
        nb->next = b->next;  /* newest extra block goes right after the first */
        b->next = nb;
        cur = nb;
    }
    void *p = cur->data + cur->used;
    cur->used += n;
    return p;
}

char *http_exchange_strdup(http_exchange *x, const char *s) {
    size_t n = strlen(s);
    char *p = http_exchange_alloc(x, n + 1);
    memcpy(p, s, n + 1);
    return p;
}

static void arena_reset(http_conn *c) {
    arena_block *b = c->arena;
    if (!b) return;
    arena_block *e = b->next;
    while (e) {
        arena_block *n = e->next;
        free(e);
        e = n;
    }
    b->next = NULL;
    b->used = 0;
}

/* ------------------------------------------------------------------------------------ */
/* flush list: connections with output to write, drain callbacks to run or requests to
 * process, handled by the prepare hook once per loop iteration */

static void flush_add(http_conn *c) {
    if (c->in_flush) return;
    http_server *s = c->s;
    c->in_flush = 1;
    c->fnext = NULL;
    c->fprev = s->flush_tail;
    if (s->flush_tail) s->flush_tail->fnext = c;
    else s->flush_head = c;
    s->flush_tail = c;
}

static void flush_remove(http_conn *c) {
    if (!c->in_flush) return;
    http_server *s = c->s;
    if (c->fprev) c->fprev->fnext = c->fnext;
    else s->flush_head = c->fnext;
    if (c->fnext) c->fnext->fprev = c->fprev;
    else s->flush_tail = c->fprev;
    c->in_flush = 0;
    c->fprev = c->fnext = NULL;
}

static void server_prepare(loop *l, void *arg) {
    (void)l;
    http_server *s = arg;
    http_conn *c;
    if (s->flush_head && s->cfg.before_send) s->cfg.before_send(s->cfg.before_send_arg);
    while ((c = s->flush_head)) {
        flush_remove(c);
        c->busy++;
        conn_flush(c);
        if (c->need_process && c->fd >= 0) {
            c->need_process = 0;
            if (c->lingering) conn_linger_read(c);
            else conn_process(c);
        }
        c->busy--;
        conn_maybe_free(c);
    }
}

/* ------------------------------------------------------------------------------------ */
/* output */

static size_t out_pending(const http_conn *c) { return c->out.len - c->out_off; }

static inline char *put(char *p, const void *src, size_t n) {
    memcpy(p, src, n);
    return p + n;
}

/* Framing and hop-by-hop headers are the server's to write. Returns 1 to skip. */
static int header_reserved(const char *name, size_t len, const char *value, int *want_close) {
    switch (len) {
    case 4: return !strcasecmp(name, "date");
    case 10:
        if (!strcasecmp(name, "connection")) {
            if (strcasestr(value, "close")) *want_close = 1;
            return 1;
        }
        return !strcasecmp(name, "keep-alive");
    case 14: return !strcasecmp(name, "content-length");
    case 17: return !strcasecmp(name, "transfer-encoding");
    default: return 0;
    }
}

/* Appends a response head to c->out. content_length < 0: none (chunked or close-delimited
 * or no body). Decides and records x->keep_alive. */
static void write_head(http_conn *c, http_exchange *x, int status, const http_header *h, size_t n,
                       int64_t content_length, int chunked) {
    http_server *s = c->s;
    int want_close = 0;
    size_t need = 160 + s->date_len + s->rid_header_len + REQID_LEN + 4;   /* ": " id "\r\n" */
    size_t *lens = n ? http_exchange_alloc(x, 2 * n * sizeof *lens) : NULL;
    for (size_t i = 0; i < n; i++) {
        lens[2 * i] = h[i].name ? strlen(h[i].name) : 0;
        lens[2 * i + 1] = h[i].value ? strlen(h[i].value) : 0;
        need += lens[2 * i] + lens[2 * i + 1] + 4;
    }
    update_date(s);
    sg_buf_reserve(&c->out, need);
    char *p = c->out.data + c->out.len;
    p = put(p, "HTTP/1.1 ", 9);
    if (status < 100 || status > 999) status = 500;
    *p++ = (char)('0' + status / 100);
    *p++ = (char)('0' + status / 10 % 10);
    *p++ = (char)('0' + status % 10);
    *p++ = ' ';
    const char *reason = http_status_reason(status);
    p = put(p, reason, strlen(reason));
    p = put(p, "\r\n", 2);
    p = put(p, s->date_line, s->date_len);
    for (size_t i = 0; i < n; i++) {
        size_t nl = lens[2 * i], vl = lens[2 * i + 1];
        if (!nl || !h[i].value) continue;
        int bad = 0;
        for (size_t k = 0; k < nl; k++) bad |= !k_tchar[(unsigned char)h[i].name[k]];
        if (bad || memchr(h[i].value, '\r', vl) || memchr(h[i].value, '\n', vl)) {
            SG_WARN("http: dropping response header with invalid characters (request %s)", x->id);
            continue;
        }
        if (header_reserved(h[i].name, nl, h[i].value, &want_close)) continue;
        p = put(p, h[i].name, nl);
        p = put(p, ": ", 2);
        p = put(p, h[i].value, vl);
        p = put(p, "\r\n", 2);
    }
    if (s->rid_header_len) {
        p = put(p, s->rid_header, s->rid_header_len);
        p = put(p, ": ", 2);
        p = put(p, x->id, REQID_LEN);
        p = put(p, "\r\n", 2);
    }
    if (chunked) p = put(p, "Transfer-Encoding: chunked\r\n", 28);
    else if (content_length >= 0) {
        p = put(p, "Content-Length: ", 16);
        p += sg_fmt_u64(p, (uint64_t)content_length);
        p = put(p, "\r\n", 2);
    }
    int keep = c->keep_alive && !want_close && !s->shutting_down;
    if (x->streaming && !chunked && !x->head_only) keep = 0;  /* close-delimited body */
    if (!keep) p = put(p, "Connection: close\r\n", 19);
    else if (c->version_minor == 0) p = put(p, "Connection: keep-alive\r\n", 24);
    p = put(p, "\r\n", 2);
    c->out.len = (size_t)(p - c->out.data);
    c->out.data[c->out.len] = 0;
    x->keep_alive = keep;
    x->status = status;
}

/* Writes as much of c->out as the socket takes. Called from the prepare hook and on
 * EPOLLOUT; may close the connection (write error) or start the lingering close. */
static void conn_flush(http_conn *c) {
    if (c->fd < 0) return;
    http_server *s = c->s;
    if (c->io_error) {
        conn_close(c);
        return;
    }
    int progressed = 0;
    while (out_pending(c)) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, out_pending(c), MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            progressed = 1;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->write_blocked = 1;
            if (progressed || !loop_timer_active(&c->wtimer))
                loop_timer_start(s->l, &c->wtimer, s->cfg.write_timeout_ms);
            break;
        }
        conn_close(c);  /* EPIPE, ECONNRESET: the client is gone */
        return;
    }
    if (!out_pending(c)) {
        c->out.len = c->out_off = 0;
        if (c->out.cap > BUF_KEEP) sg_buf_free(&c->out);
        c->write_blocked = 0;
        loop_timer_stop(s->l, &c->wtimer);
    }
    /* Backpressure callback: one-shot, may write more (which re-queues this conn). */
    http_exchange *x = &c->x;
    if (c->x_active && x->on_drain && !x->aborted && out_pending(c) <= x->drain_low) {
        http_exchange_fn fn = x->on_drain;
        x->on_drain = NULL;
        fn(x, x->drain_arg);
        if (c->fd < 0) return;
    }
    if (out_pending(c)) return;
    if (c->close_after_flush && !c->x_active && !c->lingering) {
        if (c->no_linger) {
            /* A client too slow to send its request in time gets no linger_ms more:
             * read what has arrived (closing on unread input would send a reset
             * instead of the FIN) and close now. */
            conn_drain_input(c);
            conn_close(c);
            return;
        }
        if (c->peer_closed || s->shutting_down || s->cfg.linger_ms == 0) {
            conn_close(c);
            return;
        }
        /* Lingering close: shut our side and discard what the client still sends, so
         * closing with unread input does not turn into a reset that eats the response. */
        shutdown(c->fd, SHUT_WR);
        c->lingering = 1;
        c->rt_kind = RT_LINGER;
        loop_timer_start(s->l, &c->rtimer, s->cfg.linger_ms);
        flush_add(c);  /* read once: the client may have closed already (edge-triggered) */
        c->need_process = 1;
        return;
    }
    if (c->out_paused) {
        c->out_paused = 0;
        c->need_process = 1;
        flush_add(c);
    }
}

/* Makes the exchange over for the handler: resets it, consumes the request's bytes and
 * schedules the next pipelined request. The conn may be freed. */
static void exchange_end(http_exchange *x) {
    http_conn *c = x->c;
    c->x_active = 0;
    arena_reset(c);
    int keep = x->keep_alive && !x->aborted;
    memset(x, 0, sizeof *x);
    x->c = c;
    if (c->fd >= 0) {
        c->in_off += c->req_end;
        if (c->in_off == c->in_len) {
            c->in_off = c->in_len = 0;
            if (c->in_cap > BUF_KEEP) {  /* a big body came through: do not keep its room */
                free(c->in);
                c->in = NULL;
                c->in_cap = 0;
            }
        }
        c->ps = PS_HEAD;
        c->scan = c->line_start = c->n_lines = 0;
        c->req_started = 0;
        c->leading_crlf = 0;
        c->req_end = 0;
        if (!keep) c->close_after_flush = 1;
        if (!c->processing) c->need_process = 1;
        flush_add(c);
    }
    conn_maybe_free(c);
}

int http_respond(http_exchange *x, int status, const http_header *headers, size_t n_headers,
                 const void *body, size_t len) {
    http_conn *c = x->c;
    if (!c->x_active || x->streaming) return -1;  /* already ended, or streaming */
    if (c->fd < 0 || x->aborted) {
        exchange_end(x);
        return -1;
    }
    int no_body = status < 200 || status == 204 || status == 304;
    int64_t cl = no_body ? -1 : (int64_t)len;
    size_t head_at = c->out.len;
    write_head(c, x, status, headers, n_headers, cl, 0);
    if (!no_body && !x->head_only && len) {
        if (len >= DIRECT_MIN && c->out_off == head_at && !c->write_blocked) {
            /* Big body: writev head + body from the caller's memory; copy what is left. */
            struct iovec iov[2] = {{c->out.data + c->out_off, c->out.len - c->out_off},
                                   {(void *)body, len}};
            struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
            ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
            size_t head_left = iov[0].iov_len;
            if (w < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) c->io_error = 1;
                w = 0;
            }
            if ((size_t)w >= head_left) {
                c->out.len = c->out_off = 0;
                sg_buf_append(&c->out, (const char *)body + ((size_t)w - head_left), len - ((size_t)w - head_left));
            } else {
                c->out_off += (size_t)w;
                sg_buf_append(&c->out, body, len);
            }
        } else {
            sg_buf_append(&c->out, body, len);
        }
    }
    flush_add(c);
    exchange_end(x);
    return 0;
}

int http_stream_begin(http_exchange *x, int status, const http_header *headers, size_t n_headers) {
    http_conn *c = x->c;
    if (!c->x_active || x->streaming) return -1;
    if (c->fd < 0 || x->aborted) return -1;
    x->streaming = 1;
    x->chunked = c->version_minor >= 1 && !x->head_only;
    write_head(c, x, status, headers, n_headers, -1, x->chunked);
    flush_add(c);
    return 0;
}

int http_stream_write(http_exchange *x, const void *data, size_t len) {
    http_conn *c = x->c;
    if (!c->x_active || !x->streaming || c->fd < 0 || x->aborted) return -1;
    if (!len || x->head_only) return 0;
    if (x->chunked) {
        char line[24];
        int n = snprintf(line, sizeof line, "%zx\r\n", len);
        sg_buf_reserve(&c->out, (size_t)n + len + 2);
        sg_buf_append(&c->out, line, (size_t)n);
        sg_buf_append(&c->out, data, len);
        sg_buf_append(&c->out, "\r\n", 2);
    } else {
        sg_buf_append(&c->out, data, len);
    }
    flush_add(c);
    return 0;
}

int http_stream_end(http_exchange *x) {
    http_conn *c = x->c;
    if (!c->x_active) return -1;
    if (!x->streaming && !x->aborted && c->fd >= 0) return -1;
    int rc = 0;
    if (c->fd < 0 || x->aborted) rc = -1;
    else if (x->chunked) sg_buf_append(&c->out, "0\r\n\r\n", 5);
    exchange_end(x);
    return rc;
}

void http_exchange_close(http_exchange *x) {
    if (!x->c->x_active) return;
    x->keep_alive = 0;
    exchange_end(x);
}

/* ------------------------------------------------------------------------------------ */
/* exchange accessors */

void http_exchange_on_abort(http_exchange *x, http_exchange_fn fn, void *arg) {
    x->on_abort = fn;
    x->abort_arg = arg;
}
int http_exchange_aborted(const http_exchange *x) { return x->aborted || x->c->fd < 0; }
size_t http_exchange_buffered(const http_exchange *x) { return x->c->fd < 0 ? 0 : out_pending(x->c); }

void http_exchange_on_drain(http_exchange *x, size_t low_water, http_exchange_fn fn, void *arg) {
    x->on_drain = fn;
    x->drain_arg = arg;
    x->drain_low = low_water;
    if (fn && x->c->fd >= 0) flush_add(x->c);
}

const char *http_exchange_id(const http_exchange *x) { return x->id; }
const http_request *http_exchange_request(const http_exchange *x) { return &x->req; }
loop *http_exchange_loop(const http_exchange *x) { return x->c->s->l; }
int http_exchange_status(const http_exchange *x) { return x->status; }

const char *http_request_header(const http_request *req, const char *name) {
    for (size_t i = 0; i < req->n_headers; i++)
        if (!strcasecmp(req->headers[i].name, name)) return req->headers[i].value;
    return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* errors the server answers itself */

static void conn_send_error(http_conn *c, int status, const char *code, const char *msg) {
    http_server *s = c->s;
    s->stats.errors++;
    http_exchange *x = &c->x;
    make_request_id(s, x->id);
    char body[512];
    int n = snprintf(body, sizeof body,
                     "{\"error\":{\"message\":\"%s\",\"type\":\"invalid_request_error\","
                     "\"param\":null,\"code\":\"%s\"}}",
                     msg, code);
    static const http_header ct = {"Content-Type", "application/json"};
    c->keep_alive = 0;
    write_head(c, x, status, &ct, 1, n, 0);
    sg_buf_append(&c->out, body, (size_t)n);
    arena_reset(c);
    memset(x, 0, sizeof *x);
    x->c = c;
    c->close_after_flush = 1;
    loop_timer_stop(s->l, &c->rtimer);
    c->rt_kind = RT_NONE;
    SG_DEBUG("http: %d %s from %s", status, code, c->remote);
    flush_add(c);
}

/* ------------------------------------------------------------------------------------ */
/* request parsing (in place; positions relative to c->in_off) */

typedef struct parse_err {
    int         status;
    const char *code;
    const char *msg;
} parse_err;

#define PFAIL(st, cd, m) do { e->status = (st); e->code = (cd); e->msg = (m); return P_ERROR; } while (0)

static int ieq(const char *a, size_t an, const char *b) {
    size_t bn = strlen(b);
    return an == bn && !strncasecmp(a, b, an);
}

/* Does a comma-separated header value hold this token? */
static int has_token(const char *v, const char *tok) {
    size_t tl = strlen(tok);
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',') v++;
        const char *st = v;
        while (*v && *v != ',') v++;
        const char *en = v;
        while (en > st && (en[-1] == ' ' || en[-1] == '\t')) en--;
        if ((size_t)(en - st) == tl && !strncasecmp(st, tok, tl)) return 1;
    }
    return 0;
}

/* Parses the complete head [0, head_end) of the request at base. The scanner (conn_parse)
 * has checked that every line ends in CRLF and holds no other CR, so lines are found by
 * their LF. Strings are NUL-terminated in place; what the handler will see is recorded
 * as offsets from base (the buffer may still move before dispatch). */
static int parse_head_block(http_conn *c, char *base, size_t head_end, parse_err *e) {
    http_server *s = c->s;
    const http_server_config *cfg = &s->cfg;
    char *p = base, *end = base + head_end;

    /* request line; the method starts at offset 0 */
    char *method = p;
    while (p < end && k_tchar[(unsigned char)*p]) p++;
    if (p == method || *p != ' ') PFAIL(400, "bad_request_line", "malformed request line");
    *p++ = 0;
    char *target = p;
    while (p < end && (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f) p++;
    size_t tlen = (size_t)(p - target);
    if (tlen > cfg->max_uri_bytes) PFAIL(414, "uri_too_long", "request target too long");
    if (tlen == 0 || *p != ' ') {
        if (p < end && (unsigned char)*p >= 0x7f)
            PFAIL(400, "bad_request_target", "request target holds bytes outside printable ASCII");
        PFAIL(400, "bad_request_line", "malformed request line");
    }
    *p++ = 0;
    char *eol = (char *)memchr(p, '\n', (size_t)(end - p)) - 1;  /* the CR of the line's CRLF */
    size_t vl = (size_t)(eol - p);
    int digit5 = vl >= 6 && p[5] >= '0' && p[5] <= '9';
    if (vl < 6 || memcmp(p, "HTTP/", 5) != 0 || !digit5) PFAIL(400, "bad_request_line", "malformed HTTP version");
    if (vl == 8 && p[6] == '.' && p[7] >= '0' && p[7] <= '9') {
        if (p[5] != '1') PFAIL(505, "http_version_not_supported", "only HTTP/1.x is served");
        c->version_minor = p[7] == '0' ? 0 : 1;  /* 1.2+ would be served as 1.1 */
    } else if (vl == 6 && p[5] >= '2') {
        PFAIL(505, "http_version_not_supported", "only HTTP/1.x is served");
    } else {
        PFAIL(400, "bad_request_line", "malformed HTTP version");
    }
    p = eol + 2;

    /* target forms */
    char *path = target, *query = NULL;
    if (target[0] == '/') {
    } else if (!strcmp(target, "*")) {
    } else if (!strncasecmp(target, "http://", 7) || !strncasecmp(target, "https://", 8)) {
        char *auth = strstr(target, "//") + 2;
        char *stop = strpbrk(auth, "/?");  /* the authority ends at the path or the query */
        if (stop && *stop == '/') {
            path = stop;
        } else {
            path = NULL;  /* the path is "/" */
            if (stop) query = stop + 1;
        }
    } else {
        PFAIL(400, "bad_request_target", "malformed request target");
    }
    if (path && !query) {
        char *q = strchr(path, '?');
        if (q) {
            *q = 0;
            query = q + 1;
        }
    }

    /* headers */
    c->n_hdrs = 0;
    int n_host = 0, n_te = 0, te_chunked = 0, have_cl = 0, expect_other = 0;
    uint64_t cl = 0;
    int conn_close_tok = 0, conn_keep_tok = 0;
    c->expect_continue = 0;
    while (p < end) {
        char *line = p;
        char *cr = (char *)memchr(p, '\n', (size_t)(end - p)) - 1;
        p = cr + 2;
        if (cr == line) break;  /* the empty line */
        if (*line == ' ' || *line == '\t') PFAIL(400, "bad_header", "obsolete line folding is not accepted");
        char *n = line;
        while (n < cr && k_tchar[(unsigned char)*n]) n++;
        if (n == line || n == cr || *n != ':') PFAIL(400, "bad_header", "malformed header name");
        size_t name_len = (size_t)(n - line);
        *n = 0;
        char *v = n + 1;
        while (v < cr && (*v == ' ' || *v == '\t')) v++;
        char *ve = cr;
        for (char *q = v; q < cr; q++) {
            unsigned char ch = (unsigned char)*q;
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f) PFAIL(400, "bad_header", "control character in header value");
        }
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        *ve = 0;
        if (c->n_hdrs == c->hdr_cap) {
            c->hdr_cap = c->hdr_cap ? c->hdr_cap * 2 : 16;
            c->spans = sg_xrealloc(c->spans, c->hdr_cap * sizeof *c->spans);
            c->hdrs = sg_xrealloc(c->hdrs, c->hdr_cap * sizeof *c->hdrs);
        }
        c->spans[c->n_hdrs++] = (hdr_span){(size_t)(line - base), (size_t)(v - base)};

        switch (name_len) {
        case 4:
            if (!strcasecmp(line, "host")) n_host++;
            break;
        case 6:
            if (!strcasecmp(line, "expect")) {
                if (!strcasecmp(v, "100-continue")) c->expect_continue = 1;
                else expect_other = 1;
            }
            break;
        case 10:
            if (!strcasecmp(line, "connection")) {
                conn_close_tok |= has_token(v, "close");
                conn_keep_tok |= has_token(v, "keep-alive");
            }
            break;
        case 14:
            if (!strcasecmp(line, "content-length")) {
                if (*v == 0) PFAIL(400, "bad_content_length", "empty Content-Length");
                uint64_t val = 0;
                int big = 0;
                for (char *q = v; *q; q++) {
                    if (*q < '0' || *q > '9') PFAIL(400, "bad_content_length", "invalid Content-Length");
                    if (val > (UINT64_MAX - 9) / 10) big = 1;
                    else val = val * 10 + (uint64_t)(*q - '0');
                }
                if (big) val = UINT64_MAX;
                if (have_cl && val != cl) PFAIL(400, "bad_content_length", "conflicting Content-Length headers");
                have_cl = 1;
                cl = val;
            }
            break;
        case 17:
            if (!strcasecmp(line, "transfer-encoding")) {
                n_te++;
                te_chunked = !strcasecmp(v, "chunked");
                if (!te_chunked) {
                    /* "gzip, chunked" and friends: a coding we do not decode. */
                    if (ieq(v, strlen(v), "identity")) PFAIL(400, "bad_transfer_encoding", "invalid Transfer-Encoding");
                    e->status = 501; e->code = "unsupported_transfer_encoding";
                    e->msg = "only chunked transfer coding is supported";
                }
            }
            break;
        default:
            break;
        }
    }
    if (n_te && have_cl) PFAIL(400, "bad_framing", "both Content-Length and Transfer-Encoding");
    if (n_te > 1) PFAIL(400, "bad_transfer_encoding", "repeated Transfer-Encoding");
    if (n_te && c->version_minor == 0) PFAIL(400, "bad_transfer_encoding", "Transfer-Encoding in an HTTP/1.0 request");
    if (n_te && !te_chunked) return P_ERROR;  /* 501 set above */
    if (n_host > 1 || (c->version_minor == 1 && n_host == 0))
        PFAIL(400, "bad_host", "an HTTP/1.1 request needs exactly one Host header");
    if (expect_other) PFAIL(417, "expectation_failed", "only 100-continue is supported");
    if (have_cl && cl > cfg->max_body_bytes) PFAIL(413, "body_too_large", "request body too large");

    c->keep_alive = c->version_minor == 1 ? !conn_close_tok : (conn_keep_tok && !conn_close_tok);

    /* Where the handler's strings are (made into pointers at dispatch). */
    c->path_at = path ? (size_t)(path - base) : NO_POS;
    c->query_at = query ? (size_t)(query - base) : NO_POS;
    c->x.head_only = !strcmp(method, "HEAD");

    c->body_off = head_end;
    if (te_chunked) {
        c->ps = PS_BODY_CHUNKED;
        c->ck_state = CK_SIZE;
        c->ck_dst = head_end;
        c->ck_rem = 0;
        c->trailer_bytes = 0;
    } else if (cl > 0) {
        c->ps = PS_BODY_CL;
        c->body_need = cl;
    } else {
        c->body_need = 0;
        c->req_end = head_end;
        return P_READY;
    }
    return P_MORE;
}

/* Decodes as much of a chunked body as has arrived, moving data down to ck_dst. */
static int parse_chunked(http_conn *c, char *base, size_t avail, parse_err *e) {
    const http_server_config *cfg = &c->s->cfg;
    size_t src = c->ck_dst;  /* undecoded input always starts at ck_dst (see the end) */
    int rc = P_MORE;
    for (;;) {
        if (c->ck_state == CK_SIZE || c->ck_state == CK_TRAILER) {
            char *nl = memchr(base + src, '\n', avail - src);
            if (!nl) {
                if (avail - src > CHUNK_LINE_MAX) PFAIL(400, "bad_chunk", "chunk size line too long");
                break;
            }
            size_t eol = (size_t)(nl - base);
            /* The same bound as on an incomplete line above, checked first, so that
             * where the reads split the line changes nothing. */
            if (eol - src > CHUNK_LINE_MAX) PFAIL(400, "bad_chunk", "chunk size line too long");
            if (eol == src || base[eol - 1] != '\r') PFAIL(400, "bad_chunk", "chunk line without CRLF");
            char *q = base + src, *qe = base + eol - 1;
            if (memchr(q, '\r', (size_t)(qe - q))) PFAIL(400, "bad_chunk", "bare CR in a chunk line");
            if (c->ck_state == CK_TRAILER) {
                c->trailer_bytes += eol + 1 - src;
                if (c->trailer_bytes > cfg->max_header_bytes) PFAIL(431, "headers_too_large", "chunked trailers too large");
                src = eol + 1;
                if (q == qe) {  /* end of trailers: the request is complete */
                    c->req_end = src;
                    rc = P_READY;
                    break;
                }
                continue;
            }
            uint64_t size = 0;
            int digits = 0;
            for (; q < qe && hexval(*q) >= 0; q++, digits++) {
                if (digits >= 15) PFAIL(413, "body_too_large", "chunk size too large");
                size = size * 16 + (uint64_t)hexval(*q);
            }
            if (!digits) PFAIL(400, "bad_chunk", "invalid chunk size");
            while (q < qe && (*q == ' ' || *q == '\t')) q++;
            if (q < qe && *q != ';') PFAIL(400, "bad_chunk", "invalid chunk size");
            for (; q < qe; q++)
                if ((unsigned char)*q < 0x20 && *q != '\t') PFAIL(400, "bad_chunk", "control character in chunk extension");
            src = eol + 1;
            if (size == 0) {
                c->ck_state = CK_TRAILER;
                continue;
            }
            if ((c->ck_dst - c->body_off) + size > cfg->max_body_bytes) PFAIL(413, "body_too_large", "request body too large");
            c->ck_rem = size;
            c->ck_state = CK_DATA;
        } else if (c->ck_state == CK_DATA) {
            size_t n = avail - src;
            if (n > c->ck_rem) n = (size_t)c->ck_rem;
            if (!n) break;
            if (c->ck_dst != src) memmove(base + c->ck_dst, base + src, n);
            c->ck_dst += n;
            src += n;
            c->ck_rem -= n;
            if (!c->ck_rem) c->ck_state = CK_DATA_CRLF;
        } else {  /* CK_DATA_CRLF */
            if (avail - src < 2) break;
            if (base[src] != '\r' || base[src + 1] != '\n') PFAIL(400, "bad_chunk", "chunk data not followed by CRLF");
            src += 2;
            c->ck_state = CK_SIZE;
        }
    }
    if (rc == P_READY) return rc;
    /* Close the gap between decoded and undecoded bytes so the buffer never holds more
     * than body + one partial line, whatever the chunk sizes. */
    if (src != c->ck_dst) {
        memmove(base + c->ck_dst, base + src, avail - src);
        c->in_len -= src - c->ck_dst;
    }
    return P_MORE;
}

static int conn_parse(http_conn *c, parse_err *e) {
    const http_server_config *cfg = &c->s->cfg;
    if (c->ps == PS_HEAD) {
        /* Skip empty lines before a request (some clients send CRLF after a body). */
        while (c->scan == 0 && c->in_len > c->in_off) {
            char *b = c->in + c->in_off;
            if (b[0] == '\n') PFAIL(400, "bad_request_line", "bare LF");
            if (b[0] != '\r') break;
            if (c->in_len - c->in_off < 2) return P_MORE;
            if (b[1] != '\n') PFAIL(400, "bad_request_line", "bare CR");
            if (++c->leading_crlf > MAX_LEADING_CRLF) PFAIL(400, "bad_request_line", "too many empty lines");
            c->in_off += 2;
        }
        char *base = c->in + c->in_off;
        size_t avail = c->in_len - c->in_off;
        if (!avail) return P_MORE;
        c->req_started = 1;
        /* Lines end at an LF with a CR just before it. Each line is checked when it is
         * complete, the size bound first: an incomplete line fails that same bound as soon
         * as it is over it, so where the reads split the head changes no answer. */
        for (;;) {
            char *nl = memchr(base + c->scan, '\n', avail - c->scan);
            if (!nl) {
                c->scan = avail;
                if (avail > cfg->max_header_bytes) {
                    if (c->n_lines == 0) PFAIL(414, "uri_too_long", "request line too long");
                    PFAIL(431, "headers_too_large", "request headers too large");
                }
                return P_MORE;
            }
            size_t pos = (size_t)(nl - base);
            c->scan = pos + 1;
            if (pos + 1 > cfg->max_header_bytes) {
                if (c->n_lines == 0) PFAIL(414, "uri_too_long", "request line too long");
                PFAIL(431, "headers_too_large", "request headers too large");
            }
            if (pos == c->line_start || base[pos - 1] != '\r') PFAIL(400, "bad_request", "line ending without CR");
            size_t content = pos - 1 - c->line_start;  /* the line without its CRLF */
            if (memchr(base + c->line_start, '\r', content)) {
                if (c->n_lines == 0) PFAIL(400, "bad_request_line", "bare CR in the request line");
                PFAIL(400, "bad_header", "bare CR in a header line");
            }
            if (content == 0 && c->n_lines > 0) break;  /* empty line: end of head */
            if (content == 0) PFAIL(400, "bad_request_line", "empty request line");
            c->n_lines++;
            if (c->n_lines > cfg->max_headers + 1) PFAIL(431, "headers_too_large", "too many request headers");
            c->line_start = pos + 1;
        }
        int r = parse_head_block(c, base, c->scan, e);
        if (r != P_MORE) return r;
        if (c->expect_continue && c->version_minor == 1) {
            /* Only if the body has not started arriving: the client is waiting for us. */
            if (c->in_len - c->in_off == c->scan) {
                sg_buf_append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
                flush_add(c);
            }
        }
    }
    char *base = c->in + c->in_off;
    size_t avail = c->in_len - c->in_off;
    if (c->ps == PS_BODY_CL) {
        if (avail - c->body_off < c->body_need) return P_MORE;
        c->req_end = c->body_off + (size_t)c->body_need;
        return P_READY;
    }
    return parse_chunked(c, base, avail, e);
}

/* ------------------------------------------------------------------------------------ */
/* connection I/O */

/* Reads until the socket is drained (edge-triggered) or the buffer may not grow. A short
 * read means drained, unless the peer has shut down (rdhup): then read on to the EOF,
 * which no further edge would announce. Returns -1 if the connection was closed. */
static int conn_read(http_conn *c, int rdhup) {
    http_server *s = c->s;
    for (;;) {
        size_t spare = c->in_cap - c->in_len;
        if (spare < IN_MIN_READ && !c->x_active) {
            if (c->in_off) {
                memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
                c->in_len -= c->in_off;
                c->in_off = 0;
            }
            spare = c->in_cap - c->in_len;
            if (spare < IN_MIN_READ && c->in_cap < s->in_hard_cap) {
                size_t cap = c->in_cap ? c->in_cap * 2 : IN_INITIAL;
                if (cap > s->in_hard_cap) cap = s->in_hard_cap;
                c->in = sg_xrealloc(c->in, cap);
                c->in_cap = cap;
                spare = cap - c->in_len;
            }
        }
        if (!spare) {
            c->read_paused = 1;
            return 0;
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, spare, 0);
        if (n > 0) {
            c->in_len += (size_t)n;
            if ((size_t)n < spare && !rdhup) return 0;  /* a short read drained the socket */
            continue;
        }
        if (n == 0) {
            c->peer_closed = 1;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        conn_close(c);
        return -1;
    }
}

static void conn_arm_read_timer(http_conn *c) {
    http_server *s = c->s;
    int want;
    uint32_t ms;
    if (c->ps != PS_HEAD) { want = RT_BODY; ms = s->cfg.body_timeout_ms; }
    else if (c->req_started || c->rt_kind == RT_HEADER) { want = RT_HEADER; ms = s->cfg.header_timeout_ms; }
    else { want = RT_IDLE; ms = s->cfg.idle_timeout_ms; }
    if (c->rt_kind == want && loop_timer_active(&c->rtimer)) return;
    c->rt_kind = want;
    loop_timer_start(s->l, &c->rtimer, ms);
}

static void conn_dispatch(http_conn *c) {
    http_server *s = c->s;
    http_exchange *x = &c->x;
    x->c = c;
    /* The buffer is frozen from here until the exchange ends: offsets become pointers. */
    char *base = c->in + c->in_off;
    x->req.method = base;
    x->req.path = c->path_at == NO_POS ? "/" : base + c->path_at;
    x->req.query = c->query_at == NO_POS ? "" : base + c->query_at;
    x->req.version_minor = c->version_minor;
    for (size_t i = 0; i < c->n_hdrs; i++)
        c->hdrs[i] = (http_header){base + c->spans[i].name, base + c->spans[i].value};
    x->req.headers = c->hdrs;
    x->req.n_headers = c->n_hdrs;
    x->req.keep_alive = c->keep_alive && !s->shutting_down;
    if (c->ps == PS_BODY_CHUNKED) {
        x->req.body = c->in + c->in_off + c->body_off;
        x->req.body_len = c->ck_dst - c->body_off;
    } else if (c->ps == PS_BODY_CL) {
        x->req.body = c->in + c->in_off + c->body_off;
        x->req.body_len = (size_t)c->body_need;
    } else {
        x->req.body = "";
        x->req.body_len = 0;
    }
    make_request_id(s, x->id);
    x->req.request_id = x->id;
    x->req.remote_addr = c->remote;
    x->keep_alive = c->keep_alive;
    loop_timer_stop(s->l, &c->rtimer);
    c->rt_kind = RT_NONE;
    c->x_active = 1;
    s->stats.requests++;
    if (s->cfg.handler) s->cfg.handler(x, &x->req, s->cfg.handler_arg);
    else http_respond(x, 500, NULL, 0, NULL, 0);
}

/* Parses and dispatches buffered requests, one at a time, while the previous exchange is
 * over; arms the right read timer when more input is needed. */
static void conn_process(http_conn *c) {
    c->busy++;
    c->processing = 1;
    for (;;) {
        if (c->fd < 0 || c->x_active || c->close_after_flush || c->lingering) break;
        if (out_pending(c) > OUT_HIGH) {
            c->out_paused = 1;
            break;
        }
        parse_err e = {0};
        int st = conn_parse(c, &e);
        if (st == P_READY) {
            conn_dispatch(c);
            continue;
        }
        if (st == P_ERROR) {
            conn_send_error(c, e.status, e.code, e.msg);
            break;
        }
        if (c->read_paused) {
            size_t before = c->in_len;
            c->read_paused = 0;
            if (conn_read(c, 0) < 0) break;
            if (c->in_len != before) continue;
        }
        if (c->peer_closed) {  /* EOF between requests or inside a truncated one */
            c->close_after_flush = 1;
            flush_add(c);
            break;
        }
        conn_arm_read_timer(c);
        break;
    }
    c->processing = 0;
    /* The client closed while its request is with the handler: treat it as gone. */
    if (c->fd >= 0 && c->x_active && c->peer_closed) conn_close(c);
    c->busy--;
}

/* Reads and discards what the socket holds. Returns 1 at EOF or on an error, 0 once
 * it would block. */
static int conn_drain_input(http_conn *c) {
    char junk[4096];
    for (;;) {
        ssize_t n = recv(c->fd, junk, sizeof junk, 0);
        if (n > 0) continue;
        if (n < 0 && errno == EINTR) continue;
        return !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    }
}

static void conn_linger_read(http_conn *c) {
    if (conn_drain_input(c)) conn_close(c);  /* EOF or error: done lingering */
}

static void conn_on_io(loop *l, loop_watch *w, unsigned events, void *arg) {
    (void)l; (void)w;
    http_conn *c = arg;
    c->busy++;
    if (c->lingering) {
        conn_linger_read(c);
    } else if (events & LOOP_ERROR) {
        conn_close(c);
    } else {
        if ((events & (LOOP_READ | LOOP_RDHUP)) && conn_read(c, (events & LOOP_RDHUP) != 0) == 0) {
            if (c->x_active) {
                if (c->peer_closed || (events & LOOP_RDHUP)) conn_close(c);
            } else {
                conn_process(c);
            }
        }
        if (c->fd >= 0 && (events & LOOP_WRITE) && c->write_blocked) {
            c->write_blocked = 0;
            if (c->s->cfg.before_send) c->s->cfg.before_send(c->s->cfg.before_send_arg);
            conn_flush(c);
        }
    }
    c->busy--;
    conn_maybe_free(c);
}

static void conn_on_rtimer(loop *l, loop_timer *t, void *arg) {
    (void)l; (void)t;
    http_conn *c = arg;
    c->busy++;
    int kind = c->rt_kind;
    c->rt_kind = RT_NONE;
    if (kind == RT_HEADER || kind == RT_BODY) {
        if (c->req_started && !c->x_active && !c->close_after_flush) {
            conn_send_error(c, 408, "request_timeout", "request not received in time");
            c->no_linger = 1;
        } else
            conn_close(c);
    } else if (kind == RT_IDLE || kind == RT_LINGER) {
        conn_close(c);
    }
    c->busy--;
    conn_maybe_free(c);
}

static void conn_on_wtimer(loop *l, loop_timer *t, void *arg) {
    (void)l; (void)t;
    http_conn *c = arg;
    c->busy++;
    SG_DEBUG("http: write timeout to %s", c->remote);
    conn_close(c);
    c->busy--;
    conn_maybe_free(c);
}

/* Closes the socket. With an exchange still owned by a handler, marks it aborted and
 * runs its abort callback (once). Never frees c (callers end with conn_maybe_free). */
static void conn_close(http_conn *c) {
    if (c->fd < 0) return;
    http_server *s = c->s;
    loop_watch_remove(s->l, &c->w);
    close(c->fd);
    c->fd = -1;
    s->n_open--;
    loop_timer_stop(s->l, &c->rtimer);
    loop_timer_stop(s->l, &c->wtimer);
    flush_remove(c);
    c->out.len = c->out_off = 0;
    if (c->x_active && !c->x.aborted) {
        http_exchange *x = &c->x;
        x->aborted = 1;
        if (x->on_abort) {
            http_exchange_fn fn = x->on_abort;
            x->on_abort = NULL;
            c->busy++;
            fn(x, x->abort_arg);
            c->busy--;
        }
    }
    if (s->accept_paused == 1) server_accept_resume(s);
}

static void conn_maybe_free(http_conn *c) {
    if (c->fd >= 0 || c->x_active || c->busy) return;
    http_server *s = c->s;
    flush_remove(c);
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c->in);
    free(c->hdrs);
    free(c->spans);
    sg_buf_free(&c->out);
    arena_reset(c);
    free(c->arena);
    free(c);
    s->n_live--;
    server_check_done(s);
}

/* ------------------------------------------------------------------------------------ */
/* listening and accepting */

static void format_addr(const struct sockaddr_storage *ss, char *out, size_t n) {
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
        snprintf(out, n, "%s:%d", host, port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
        snprintf(out, n, "[%s]:%d", host, port);
    } else {
        snprintf(out, n, "unix");
    }
}

static http_conn *conn_new(http_server *s, int fd, const struct sockaddr_storage *ss) {
    http_conn *c = sg_xcalloc(1, sizeof *c);
    c->s = s;
    c->fd = fd;
    c->x.c = c;
    sg_buf_init(&c->out);
    format_addr(ss, c->remote, sizeof c->remote);
    loop_watch_init(&c->w, fd, conn_on_io, c);
    loop_timer_init(&c->rtimer, conn_on_rtimer, c);
    loop_timer_init(&c->wtimer, conn_on_wtimer, c);
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_open++;
    s->n_live++;
    s->stats.accepted++;
    sg_error err;
    /* Read and write interest once, edge-triggered: no epoll_ctl per request. */
    if (loop_watch_set(s->l, &c->w, LOOP_READ | LOOP_WRITE | LOOP_EDGE, &err) < 0) {
        SG_WARN("http: %s", err.msg);
        conn_close(c);
        conn_maybe_free(c);
        return NULL;
    }
    /* The first request's header timeout runs from the accept. */
    c->rt_kind = RT_HEADER;
    loop_timer_start(s->l, &c->rtimer, s->cfg.header_timeout_ms);
    return c;
}

int http_server_adopt(http_server *s, int fd, sg_error *err) {
    if (s->shutting_down || s->n_open >= s->cfg.max_connections) {
        close(fd);
        return sg_fail(err, "http: not taking connections (%s)", s->shutting_down ? "shutting down" : "connection limit");
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        sg_fail(err, "http: adopt fd %d: %s", fd, strerror(errno));
        close(fd);
        return -1;
    }
    struct sockaddr_storage ss = {0};
    socklen_t sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) ss.ss_family = AF_UNSPEC;
    if (!conn_new(s, fd, &ss)) return sg_fail(err, "http: cannot watch fd %d", fd);
    return 0;
}

static void server_accept_pause(http_server *s, int why) {
    if (s->lfd < 0) return;
    loop_watch_set(s->l, &s->lw, 0, NULL);
    s->accept_paused = why;  /* 1: connection limit, 2: out of fds (timer) */
}

static void server_accept_resume(http_server *s) {
    if (s->lfd < 0 || !s->accept_paused || s->shutting_down) return;
    if (s->accept_paused == 1 && s->n_open >= s->cfg.max_connections) return;
    s->accept_paused = 0;
    sg_error err;
    if (loop_watch_set(s->l, &s->lw, LOOP_READ, &err) < 0) SG_WARN("http: %s", err.msg);
}

static void server_on_accept_timer(loop *l, loop_timer *t, void *arg) {
    (void)l; (void)t;
    server_accept_resume(arg);
}

static void server_on_accept(loop *l, loop_watch *w, unsigned events, void *arg) {
    (void)l; (void)w; (void)events;
    http_server *s = arg;
    for (int i = 0; i < 64; i++) {  /* bounded: level-triggered, we come back next turn */
        if (s->n_open >= s->cfg.max_connections) {
            server_accept_pause(s, 1);
            return;
        }
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(s->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                SG_WARN("http: accept: %s; pausing accepts for 100 ms", strerror(errno));
                server_accept_pause(s, 2);
                loop_timer_start(s->l, &s->accept_timer, 100);
                return;
            }
            SG_WARN("http: accept: %s", strerror(errno));
            return;
        }
        if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        conn_new(s, fd, &ss);
    }
}

static int server_listen(http_server *s, sg_error *err) {
    const char *spec = s->listen_str;
    char host[256];
    const char *port;
    if (spec[0] == '[') {
        const char *rb = strchr(spec, ']');
        if (!rb || rb[1] != ':') return sg_fail(err, "listen address \"%s\": expected [IPV6]:PORT", spec);
        size_t n = (size_t)(rb - spec - 1);
        if (n >= sizeof host) return sg_fail(err, "listen address \"%s\": host too long", spec);
        memcpy(host, spec + 1, n);
        host[n] = 0;
        port = rb + 2;
    } else {
        const char *colon = strrchr(spec, ':');
        if (!colon) return sg_fail(err, "listen address \"%s\": expected HOST:PORT", spec);
        size_t n = (size_t)(colon - spec);
        if (n >= sizeof host) return sg_fail(err, "listen address \"%s\": host too long", spec);
        memcpy(host, spec, n);
        host[n] = 0;
        port = colon + 1;
    }
    if (!*port) return sg_fail(err, "listen address \"%s\": missing port", spec);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host[0] && strcmp(host, "*") ? host : NULL, port, &hints, &res);
    if (gai) return sg_fail(err, "listen address \"%s\": %s", spec, gai_strerror(gai));
    int fd = -1;
    char why[256] = "no address";
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            snprintf(why, sizeof why, "socket: %s", strerror(errno));
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (s->cfg.reuse_port) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, s->cfg.backlog) == 0) break;
        snprintf(why, sizeof why, "bind/listen: %s", strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) return sg_fail(err, "listen on %s: %s", spec, why);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    s->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    s->lfd = fd;
    loop_watch_init(&s->lw, fd, server_on_accept, s);
    if (loop_watch_set(s->l, &s->lw, LOOP_READ, err) < 0) {
        close(fd);
        s->lfd = -1;
        return -1;
    }
    return 0;
}

static void server_close_listener(http_server *s) {
    if (s->lfd < 0) return;
    loop_watch_remove(s->l, &s->lw);
    close(s->lfd);
    s->lfd = -1;
    loop_timer_stop(s->l, &s->accept_timer);
}

/* ------------------------------------------------------------------------------------ */
/* server lifecycle */

void http_server_config_defaults(http_server_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->listen = "127.0.0.1:8080";
    cfg->backlog = 4096;
    cfg->max_connections = 10000;
    cfg->max_header_bytes = 16384;
    cfg->max_headers = 100;
    cfg->max_uri_bytes = 8192;
    cfg->max_body_bytes = 16u << 20;
    cfg->header_timeout_ms = 10000;
    cfg->body_timeout_ms = 60000;
    cfg->idle_timeout_ms = 75000;
    cfg->write_timeout_ms = 30000;
    cfg->linger_ms = 2000;
    cfg->request_id_header = "x-request-id";
}

http_server *http_server_new(loop *l, const http_server_config *cfg, sg_error *err) {
    http_server *s = sg_xcalloc(1, sizeof *s);
    s->l = l;
    s->cfg = *cfg;
    s->listen_str = sg_xstrdup(cfg->listen ? cfg->listen : "127.0.0.1:8080");
    s->cfg.listen = s->listen_str;
    if (cfg->request_id_header && *cfg->request_id_header) {
        s->rid_header = sg_xstrdup(cfg->request_id_header);
        s->rid_header_len = strlen(s->rid_header);
    }
    s->cfg.request_id_header = s->rid_header;
    if (!s->cfg.backlog) s->cfg.backlog = 4096;
    if (!s->cfg.max_connections) s->cfg.max_connections = 10000;
    if (!s->cfg.max_header_bytes) s->cfg.max_header_bytes = 16384;
    if (!s->cfg.max_headers) s->cfg.max_headers = 100;
    if (!s->cfg.max_uri_bytes) s->cfg.max_uri_bytes = 8192;
    s->in_hard_cap = s->cfg.max_header_bytes + s->cfg.max_body_bytes + CHUNK_LINE_MAX + 64 * 1024;
    s->lfd = -1;
    reqid_init(&s->ids);
    loop_timer_init(&s->accept_timer, server_on_accept_timer, s);
    update_date(s);
    if (server_listen(s, err) < 0) {
        free(s->listen_str);
        free(s->rid_header);
        free(s);
        return NULL;
    }
    loop_add_prepare(l, server_prepare, s);
    return s;
}

int http_server_port(const http_server *s) { return s->port; }

http_server_stats http_server_get_stats(const http_server *s) {
    http_server_stats st = s->stats;
    st.conns_open = s->n_open;
    return st;
}

static void server_on_done_timer(loop *l, loop_timer *t, void *arg) {
    (void)l; (void)t;
    http_server *s = arg;
    void (*done)(http_server *, void *) = s->done;
    s->done = NULL;
    if (done) done(s, s->done_arg);
}

static void server_check_done(http_server *s) {
    if (!s->shutting_down || s->freeing || s->n_live) return;
    loop_timer_stop(s->l, &s->shutdown_timer);
    if (s->done) loop_timer_start(s->l, &s->done_timer, 0);
}

static void server_on_shutdown_deadline(loop *l, loop_timer *t, void *arg) {
    (void)l; (void)t;
    http_server *s = arg;
    SG_INFO("http: shutdown deadline reached, closing %zu connection(s)", s->n_open);
    for (http_conn *c = s->conns, *next; c; c = next) {
        c->busy++;
        conn_close(c);
        c->busy--;
        next = c->next;
        conn_maybe_free(c);
    }
    server_check_done(s);
}

void http_server_shutdown(http_server *s, uint32_t deadline_ms,
                          void (*done)(http_server *s, void *arg), void *arg) {
    if (s->shutting_down) return;
    s->shutting_down = 1;
    s->done = done;
    s->done_arg = arg;
    loop_timer_init(&s->shutdown_timer, server_on_shutdown_deadline, s);
    loop_timer_init(&s->done_timer, server_on_done_timer, s);
    server_close_listener(s);
    for (http_conn *c = s->conns, *next; c; c = next) {
        c->busy++;
        int idle = c->fd >= 0 && !c->x_active && !c->req_started && !out_pending(c);
        if (idle || c->lingering) conn_close(c);
        else if (c->fd >= 0 && !c->x_active && !c->req_started) c->close_after_flush = 1;
        c->busy--;
        next = c->next;
        conn_maybe_free(c);
    }
    if (s->n_live) loop_timer_start(s->l, &s->shutdown_timer, deadline_ms);
    server_check_done(s);
}

void http_server_free(http_server *s) {
    if (!s) return;
    server_close_listener(s);
    for (http_conn *c = s->conns, *next; c; c = next) {
        c->busy++;
        conn_close(c);
        c->busy--;
        next = c->next;
        conn_maybe_free(c);
    }
    s->freeing = 1;
    /* Exchanges whose owners did not end them from the abort callback. */
    while (s->conns) {
        http_conn *c = s->conns;
        c->x_active = 0;
        c->busy = 0;
        conn_maybe_free(c);
    }
    loop_timer_stop(s->l, &s->shutdown_timer);
    loop_timer_stop(s->l, &s->done_timer);
    loop_remove_prepare(s->l, server_prepare, s);
    free(s->listen_str);
    free(s->rid_header);
    free(s);
}
