/* upstream.c: see upstream.h. The API's entry points, which hand http:// and https://
 * requests to the native client (upstream_h1.c) when it is on, and the libcurl side.
 *
 * libcurl's multi-socket API on our loop. curl tells us which sockets to watch
 * (cb_socket) and when to call it back (cb_timer); we call curl_multi_socket_action and
 * then read finished transfers off curl_multi_info_read.
 *
 * Re-entrancy: curl forbids removing or adding easy handles from inside its callbacks.
 * Every call into curl goes through u_enter/u_leave; a cancel made while inside curl marks
 * the transfer and queues it, and so does a start; both are carried out by u_leave.
 *
 * Sockets: we watch curl's connection sockets level-triggered, as curl expects. When a
 * transfer ends curl asks us to stop watching its (now idle, cached) connection; we keep
 * the epoll registration instead and only drop it if an event arrives, so a reused
 * connection costs no epoll_ctl per request. That is safe only for sockets whose close we
 * see (opened and closed through our callbacks); others (curl's resolver socketpair) are
 * removed for real.
 */
#include "gateway/upstream.h"
#include "gateway/upstream_h1.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"

enum { X_FREE, X_PENDING, X_RUNNING, X_FINISHING };    /* xfer state */
enum { PH_CONNECT, PH_TTFB, PH_BODY };                  /* what the phase timer guards */
enum { M_GET = 1, M_POST, M_HEAD, M_CUSTOM };           /* method_kind */

typedef struct upstream_sock {
    loop_watch  w;
    upstream   *u;
    int         want;   /* CURL_POLL_* curl asked for; 0 after CURL_POLL_REMOVE */
    int         owned;  /* opened through cb_opensocket: we will see its close */
} upstream_sock;

struct upstream_xfer {
    int            impl;          /* UPSTREAM_IMPL_CURL: must stay first (upstream_h1.h) */
    upstream      *u;
    CURL          *easy;
    upstream_xfer *next;          /* free list / pending list / reap list */
    upstream_xfer *rprev, *rnext; /* u->running: transfers inside the multi handle */
    int            state;
    int            cancelled;
    int            paused;
    int            reaping;       /* on the reap list */
    int            in_multi;
    upstream_callbacks cb;
    void          *arg;
    /* timing (loop ms) */
    loop_timer     timer;
    int            phase;
    uint64_t       start_ms, phase_deadline, total_deadline, last_byte_ms, first_byte_ms;
    uint32_t       idle_ms, ttfb_ms;
    upstream_result forced;       /* set by our timers */
    char           forced_msg[128];
    /* request */
    int            method_kind;   /* last method set on the easy handle */
    CURLU         *cu;            /* the parsed URL, kept while requests repeat it */
    char          *cu_url;
    sg_buf         reqh;          /* "name: value\0" strings */
    struct curl_slist *slist;     /* nodes pointing into reqh */
    size_t         slist_cap;
    /* response head */
    int            status;
    int            head_done;
    sg_buf         hbuf;          /* header lines of the current response */
    upstream_header *hdrs;
    size_t         hdr_cap;
    uint64_t       body_bytes;
    uint64_t       max_body;      /* 0: unbounded */
    size_t         max_head;
    size_t         head_bytes;    /* of the current head (trailers included) */
    char           errbuf[CURL_ERROR_SIZE];
};

struct upstream {
    loop          *l;
    CURLM         *multi;
    upstream_config cfg;
    char          *ca_file;
    char          *proxy;         /* CURLOPT_PROXY for every handle; NULL: curl reads env */
    loop_timer     timer;         /* curl's single timeout */
    int            in_curl;       /* depth of calls into curl */
    int            in_check;      /* check_done running */
    upstream_xfer *free_list;
    size_t         n_free;
    upstream_xfer *pending_head, *pending_tail;  /* starts deferred while inside curl */
    upstream_xfer *reap;          /* cancels deferred while inside curl */
    upstream_xfer *running;       /* in the multi handle */
    upstream_sock **socks;        /* by fd */
    size_t         n_socks;
    int            http2;
    h1_client     *h1;            /* the native client; NULL when off */
    upstream_stats stats;
};

static void u_leave(upstream *u);
static void xfer_recycle(upstream_xfer *t);

/* ------------------------------------------------------------------------------------ */
/* names */

const char *upstream_result_name(upstream_result r) {
    switch (r) {
    case UPSTREAM_OK: return "ok";
    case UPSTREAM_ERR_DNS: return "dns";
    case UPSTREAM_ERR_CONNECT_REFUSED: return "connect_refused";
    case UPSTREAM_ERR_CONNECT: return "connect";
    case UPSTREAM_ERR_TLS: return "tls";
    case UPSTREAM_ERR_CONNECT_TIMEOUT: return "connect_timeout";
    case UPSTREAM_ERR_TTFB_TIMEOUT: return "ttfb_timeout";
    case UPSTREAM_ERR_IDLE_TIMEOUT: return "idle_timeout";
    case UPSTREAM_ERR_TOTAL_TIMEOUT: return "total_timeout";
    case UPSTREAM_ERR_RESET_BEFORE_RESPONSE: return "reset_before_response";
    case UPSTREAM_ERR_RESET_DURING_RESPONSE: return "reset_during_response";
    case UPSTREAM_ERR_PROTOCOL: return "protocol";
    case UPSTREAM_ERR_TOO_LARGE: return "too_large";
    case UPSTREAM_ERR_BAD_REQUEST: return "bad_request";
    case UPSTREAM_ERR_OTHER: return "other";
    }
    return "other";
}

int upstream_result_is_transport_error(upstream_result r) {
    return r != UPSTREAM_OK && r != UPSTREAM_ERR_BAD_REQUEST;
}

const char *upstream_response_header(const upstream_response *resp, const char *name) {
    for (size_t i = 0; i < resp->n_headers; i++)
        if (!strcasecmp(resp->headers[i].name, name)) return resp->headers[i].value;
    return NULL;
}

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

const char *upstream_version(void) {
    static char v[384];
    pthread_once(&g_curl_once, curl_init_once);
    curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
    const char *env = getenv("SMOLGATE_UPSTREAM");
    int off = env && !strcmp(env, "curl");
    snprintf(v, sizeof v, "native http/1.1 %s%s%s; %s (http2: %s)", off ? "off (SMOLGATE_UPSTREAM=curl)" : "(",
             off ? "" : h1_tls_version(), off ? "" : ")", curl_version(),
             (vi->features & CURL_VERSION_HTTP2) ? "yes" : "no");
    return v;
}

/* ------------------------------------------------------------------------------------ */
/* entering and leaving curl */

static void u_enter(upstream *u) { u->in_curl++; }

static void u_action(upstream *u, curl_socket_t fd, int mask) {
    int running = 0;
    u_enter(u);
    curl_multi_socket_action(u->multi, fd, mask, &running);
    u_leave(u);
}

/* ------------------------------------------------------------------------------------ */
/* sockets */

static upstream_sock *sock_get(upstream *u, curl_socket_t fd, int create) {
    if (fd < 0) return NULL;
    if ((size_t)fd >= u->n_socks) {
        if (!create) return NULL;
        size_t n = u->n_socks ? u->n_socks : 64;
        while (n <= (size_t)fd) n *= 2;
        u->socks = sg_xrealloc(u->socks, n * sizeof *u->socks);
        memset(u->socks + u->n_socks, 0, (n - u->n_socks) * sizeof *u->socks);
        u->n_socks = n;
    }
    upstream_sock *s = u->socks[fd];
    if (!s && create) {
        s = sg_xcalloc(1, sizeof *s);
        s->u = u;
        u->socks[fd] = s;
    }
    return s;
}

static void sock_on_event(loop *l, loop_watch *w, unsigned events, void *arg) {
    upstream_sock *s = arg;
    if (!s->want) {
        /* An idle cached connection became readable (the server closed it): stop
         * watching; curl notices the dead connection when it next tries to reuse it. */
        loop_watch_remove(l, w);
        return;
    }
    int mask = 0;
    if (events & LOOP_READ) mask |= CURL_CSELECT_IN;
    if (events & LOOP_WRITE) mask |= CURL_CSELECT_OUT;
    if (events & LOOP_ERROR) mask |= CURL_CSELECT_ERR;
    u_action(s->u, w->fd, mask);
}

static int cb_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
    (void)easy; (void)socketp;
    upstream *u = userp;
    upstream_sock *s = sock_get(u, fd, what != CURL_POLL_REMOVE);
    if (!s) return 0;
    if (what == CURL_POLL_REMOVE) {
        s->want = 0;
        if (!s->owned) {
            loop_watch_remove(u->l, &s->w);
            u->socks[fd] = NULL;
            free(s);
        }
        return 0;
    }
    if (s->w.fn == NULL) loop_watch_init(&s->w, fd, sock_on_event, s);
    s->want = what;
    unsigned interest = 0;
    if (what & CURL_POLL_IN) interest |= LOOP_READ;
    if (what & CURL_POLL_OUT) interest |= LOOP_WRITE;
    sg_error err;
    if (loop_watch_set(u->l, &s->w, interest, &err) < 0) {
        SG_WARN("upstream: %s", err.msg);
        return -1;
    }
    return 0;
}

static curl_socket_t cb_opensocket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a) {
    upstream *u = clientp;
    if (purpose != CURLSOCKTYPE_IPCXN) return CURL_SOCKET_BAD;
    int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd < 0) return CURL_SOCKET_BAD;
    upstream_sock *s = sock_get(u, fd, 1);
    s->owned = 1;
    s->want = 0;
    loop_watch_init(&s->w, fd, sock_on_event, s);
    u->stats.connections++;
    return fd;
}

static int cb_closesocket(void *clientp, curl_socket_t fd) {
    upstream *u = clientp;
    upstream_sock *s = sock_get(u, fd, 0);
    if (s) {
        /* close() takes the fd out of the epoll set: no epoll_ctl needed */
        loop_watch_forget(u->l, &s->w);
        u->socks[fd] = NULL;
        free(s);
    }
    return close(fd);
}

/* curl's timer: one deadline for the whole multi handle. */
static void u_on_timer(loop *l, loop_timer *t, void *arg) {
    (void)l; (void)t;
    u_action(arg, CURL_SOCKET_TIMEOUT, 0);
}

static int cb_timer(CURLM *multi, long timeout_ms, void *userp) {
    (void)multi;
    upstream *u = userp;
    if (timeout_ms < 0) loop_timer_stop(u->l, &u->timer);
    else loop_timer_start(u->l, &u->timer, (uint64_t)timeout_ms);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* per-transfer callbacks (inside curl) */

static void xfer_arm(upstream_xfer *t) {
    uint64_t d = t->phase_deadline < t->total_deadline ? t->phase_deadline : t->total_deadline;
    if (d == UINT64_MAX) loop_timer_stop(t->u->l, &t->timer);
    else loop_timer_start_at(t->u->l, &t->timer, d);
}

static uint64_t after(uint64_t now, uint32_t ms) { return ms == UPSTREAM_NO_TIMEOUT ? UINT64_MAX : now + ms; }

static int cb_prereq(void *clientp, char *conn_primary_ip, char *conn_local_ip, int conn_primary_port,
                     int conn_local_port) {
    (void)conn_primary_ip; (void)conn_local_ip; (void)conn_primary_port; (void)conn_local_port;
    upstream_xfer *t = clientp;
    /* Connected (or reused): the connect timeout is over, time-to-first-byte begins. */
    if (t->phase == PH_CONNECT) {
        t->phase = PH_TTFB;
        t->phase_deadline = after(loop_update_now(t->u->l), t->ttfb_ms);
        xfer_arm(t);
    }
    return CURL_PREREQFUNC_OK;
}

static void xfer_first_byte(upstream_xfer *t) {
    uint64_t now = loop_update_now(t->u->l);
    t->first_byte_ms = now;
    t->last_byte_ms = now;
    t->phase = PH_BODY;
    t->phase_deadline = after(now, t->idle_ms);
    xfer_arm(t);
}

/* Fails t from inside a curl callback: the callback returns an error code, curl ends the
 * transfer, and xfer_finish reports r with this message. */
static void xfer_force(upstream_xfer *t, upstream_result r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void xfer_force(upstream_xfer *t, upstream_result r, const char *fmt, ...) {
    t->forced = r;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->forced_msg, sizeof t->forced_msg, fmt, ap);
    va_end(ap);
}

/* The declared Content-Length of the head just split into t->hdrs, or -1. */
static int64_t declared_length(const upstream_xfer *t, size_t nh) {
    for (size_t i = 0; i < nh; i++) {
        if (strcasecmp(t->hdrs[i].name, "content-length")) continue;
        const char *v = t->hdrs[i].value;
        if (*v < '0' || *v > '9') return -1;
        unsigned long long x = strtoull(v, NULL, 10);
        return x > INT64_MAX ? INT64_MAX : (int64_t)x;
    }
    return -1;
}

static size_t cb_header(char *data, size_t size, size_t n, void *arg) {
    upstream_xfer *t = arg;
    size_t len = size * n;
    if (t->cancelled) return 0;
    if (!t->first_byte_ms) xfer_first_byte(t);
    else t->last_byte_ms = loop_now_ms(t->u->l);
    int status_line = len >= 5 && !memcmp(data, "HTTP/", 5);
    if (status_line && !t->head_done) t->head_bytes = 0;   /* a new head after a 1xx */
    t->head_bytes += len;
    if (t->head_bytes > t->max_head) {
        xfer_force(t, UPSTREAM_ERR_TOO_LARGE, "response head larger than %llu bytes", (unsigned long long)t->max_head);
        return 0;
    }
    if (status_line) {
        /* A status line starts a new head (after a 1xx, or a redirect we do not follow). */
        const char *sp = memchr(data, ' ', len);
        t->status = sp ? atoi(sp + 1) : 0;
        sg_buf_reset(&t->hbuf);
        return len;
    }
    if (len <= 2 && (len == 0 || data[0] == '\r' || data[0] == '\n')) {
        if (t->status >= 100 && t->status < 200) return len;  /* 100 Continue etc. */
        if (t->head_done) return len;                           /* end of trailers */
        /* End of the head: split the collected lines in place. */
        size_t nh = 0;
        char *p = t->hbuf.data, *end = t->hbuf.data + t->hbuf.len;
        while (p && p < end) {
            char *eol = memchr(p, '\n', (size_t)(end - p));
            if (!eol) break;
            char *line_end = eol;
            if (line_end > p && line_end[-1] == '\r') line_end--;
            *line_end = 0;
            char *colon = memchr(p, ':', (size_t)(line_end - p));
            if (colon && colon > p) {
                *colon = 0;
                char *v = colon + 1;
                while (*v == ' ' || *v == '\t') v++;
                char *ve = line_end;
                while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) *--ve = 0;
                if (nh == t->hdr_cap) {
                    t->hdr_cap = t->hdr_cap ? t->hdr_cap * 2 : 32;
                    t->hdrs = sg_xrealloc(t->hdrs, t->hdr_cap * sizeof *t->hdrs);
                }
                t->hdrs[nh++] = (upstream_header){p, v};
            }
            p = eol + 1;
        }
        t->head_done = 1;
        if (t->cb.on_headers) {
            upstream_response resp = {t->status, t->hdrs, nh};
            t->cb.on_headers(t, &resp, t->arg);
        }
        if (t->cancelled) return 0;
        int64_t clen = t->max_body && t->method_kind != M_HEAD && t->status != 204 && t->status != 304
                     ? declared_length(t, nh) : -1;
        if (clen >= 0 && (uint64_t)clen > t->max_body) {   /* fail before reading any of it */
            xfer_force(t, UPSTREAM_ERR_TOO_LARGE, "response body of %llu bytes (Content-Length) over the %llu-byte limit",
                       (unsigned long long)clen, (unsigned long long)t->max_body);
            return 0;
        }
        return len;
    }
    sg_buf_append(&t->hbuf, data, len);
    return len;
}

static size_t cb_write(char *data, size_t size, size_t n, void *arg) {
    upstream_xfer *t = arg;
    size_t len = size * n;
    if (t->cancelled) return CURL_WRITEFUNC_ERROR;
    t->last_byte_ms = loop_now_ms(t->u->l);
    if (t->max_body && t->body_bytes + len > t->max_body) {   /* cut: nothing past the bound */
        xfer_force(t, UPSTREAM_ERR_TOO_LARGE, "response body over the %llu-byte limit", (unsigned long long)t->max_body);
        return CURL_WRITEFUNC_ERROR;
    }
    t->body_bytes += len;
    if (t->cb.on_data) t->cb.on_data(t, data, len, t->arg);
    return t->cancelled ? CURL_WRITEFUNC_ERROR : len;
}

/* ------------------------------------------------------------------------------------ */
/* finishing */

static upstream_result map_curl(upstream_xfer *t, CURLcode rc) {
    switch (rc) {
    case CURLE_OK: return UPSTREAM_OK;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return UPSTREAM_ERR_DNS;
    case CURLE_COULDNT_CONNECT: {
        long os = 0;
        curl_easy_getinfo(t->easy, CURLINFO_OS_ERRNO, &os);
        return os == ECONNREFUSED ? UPSTREAM_ERR_CONNECT_REFUSED : UPSTREAM_ERR_CONNECT;
    }
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED: return UPSTREAM_ERR_TLS;
    case CURLE_OPERATION_TIMEDOUT:  /* curl's own backstop timers; ours normally fire first */
        if (t->phase == PH_CONNECT) return UPSTREAM_ERR_CONNECT_TIMEOUT;
        if (t->phase == PH_TTFB) return UPSTREAM_ERR_TTFB_TIMEOUT;
        return UPSTREAM_ERR_IDLE_TIMEOUT;
    case CURLE_GOT_NOTHING: return UPSTREAM_ERR_RESET_BEFORE_RESPONSE;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return t->first_byte_ms ? UPSTREAM_ERR_RESET_DURING_RESPONSE : UPSTREAM_ERR_RESET_BEFORE_RESPONSE;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING: return UPSTREAM_ERR_PROTOCOL;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL: return UPSTREAM_ERR_BAD_REQUEST;
    case CURLE_OUT_OF_MEMORY:   /* while reading a head: a header line over libcurl's own
                                   bound (CURL_MAX_HTTP_HEADER, 100 KiB) */
        return t->first_byte_ms && !t->head_done ? UPSTREAM_ERR_TOO_LARGE : UPSTREAM_ERR_OTHER;
    default: return UPSTREAM_ERR_OTHER;
    }
}

/* Removes t from the multi handle (if there) and stops its timer. Outside curl only. */
static void xfer_detach(upstream_xfer *t) {
    upstream *u = t->u;
    loop_timer_stop(u->l, &t->timer);
    if (t->in_multi) {
        curl_multi_remove_handle(u->multi, t->easy);
        t->in_multi = 0;
        if (t->rprev) t->rprev->rnext = t->rnext;
        else u->running = t->rnext;
        if (t->rnext) t->rnext->rprev = t->rprev;
        t->rprev = t->rnext = NULL;
    }
}

static void xfer_finish(upstream_xfer *t, CURLcode rc) {
    upstream *u = t->u;
    upstream_done d = {0};
    d.result = t->forced ? t->forced : map_curl(t, rc);
    d.status = t->head_done ? t->status : 0;
    d.curl_code = t->forced ? 0 : (int)rc;
    if (t->forced) d.error = t->forced_msg;
    else if (d.result == UPSTREAM_ERR_TOO_LARGE) d.error = "response head larger than libcurl's 102400-byte line limit";
    else if (rc != CURLE_OK) d.error = t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc);
    else d.error = "";
    if (d.result == UPSTREAM_OK && !t->head_done) d.result = UPSTREAM_ERR_PROTOCOL;
    d.body_bytes = t->body_bytes;
    uint64_t now = loop_now_ms(u->l);
    d.elapsed_ms = (uint32_t)(now - t->start_ms);
    d.ttfb_ms = t->first_byte_ms ? (uint32_t)(t->first_byte_ms - t->start_ms) : 0;
    long nconn = 0;
    curl_easy_getinfo(t->easy, CURLINFO_NUM_CONNECTS, &nconn);
    d.new_connection = nconn > 0;
    if (d.new_connection) {   /* microseconds from the start: TLS done, else TCP connected */
        curl_off_t tcp = 0, tls = 0;
        curl_easy_getinfo(t->easy, CURLINFO_CONNECT_TIME_T, &tcp);
        curl_easy_getinfo(t->easy, CURLINFO_APPCONNECT_TIME_T, &tls);
        d.connect_ms = (uint32_t)((tls > tcp ? tls : tcp) / 1000);
    } else if (t->phase == PH_CONNECT) {
        d.connect_ms = d.elapsed_ms;   /* never connected: the time spent trying */
    }
    d.requests_sent = t->phase != PH_CONNECT;
    /* Detach first so on_done may start requests that reuse this very connection. */
    xfer_detach(t);
    if (d.result == UPSTREAM_OK) u->stats.completed++;
    else u->stats.failed++;
    u->stats.in_flight--;
    t->state = X_FINISHING;
    if (t->cb.on_done) t->cb.on_done(t, &d, t->arg);
    xfer_recycle(t);
}

static void check_done(upstream *u) {
    if (u->in_check) return;  /* the outer loop picks up new messages */
    u->in_check = 1;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(u->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        upstream_xfer *t = (upstream_xfer *)priv;
        CURLcode rc = m->data.result;
        if (!t || t->state != X_RUNNING || t->cancelled) continue;
        xfer_finish(t, rc);
    }
    u->in_check = 0;
}

static CURLMcode xfer_add(upstream_xfer *t);

/* Called when the outermost call into curl returns: carry out what curl's callbacks
 * asked for, then report finished transfers. */
static void u_leave(upstream *u) {
    if (--u->in_curl > 0) return;
    while (u->reap) {
        upstream_xfer *t = u->reap;
        u->reap = t->next;
        t->reaping = 0;
        xfer_detach(t);
        xfer_recycle(t);
    }
    while (u->pending_head) {
        upstream_xfer *t = u->pending_head;
        u->pending_head = t->next;
        if (!u->pending_head) u->pending_tail = NULL;
        t->next = NULL;
        CURLMcode mc = xfer_add(t);
        if (mc != CURLM_OK) {  /* upstream_start has returned: report through on_done */
            t->forced = UPSTREAM_ERR_OTHER;
            snprintf(t->forced_msg, sizeof t->forced_msg, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
            t->state = X_RUNNING;
            xfer_finish(t, CURLE_FAILED_INIT);
        }
    }
    check_done(u);
}

/* ------------------------------------------------------------------------------------ */
/* the pool */

static int xfer_setup_easy(upstream_xfer *t) {
    upstream *u = t->u;
    CURL *e = t->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, cb_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, cb_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, cb_prereq);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, t);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, cb_opensocket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, u);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, cb_closesocket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, u);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (u->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, u->ca_file);
    /* An explicit proxy setting ("" = none) spares curl its getenv() calls per transfer. */
    if (u->proxy) curl_easy_setopt(e, CURLOPT_PROXY, u->proxy);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    if (u->cfg.pool_idle_ms != UPSTREAM_NO_TIMEOUT)
        curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, (long)(u->cfg.pool_idle_ms + 999) / 1000);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, u->http2 ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
    if (u->http2) curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    return 0;
}

static upstream_xfer *xfer_get(upstream *u) {
    upstream_xfer *t = u->free_list;
    if (t) {
        u->free_list = t->next;
        u->n_free--;
    } else {
        t = sg_xcalloc(1, sizeof *t);
        t->impl = UPSTREAM_IMPL_CURL;
        t->u = u;
        t->easy = curl_easy_init();
        if (!t->easy) {
            free(t);
            return NULL;
        }
        sg_buf_init(&t->reqh);
        sg_buf_init(&t->hbuf);
        loop_timer_init(&t->timer, NULL, t);
        xfer_setup_easy(t);
    }
    t->next = NULL;
    return t;
}

static void xfer_destroy(upstream_xfer *t) {
    curl_easy_cleanup(t->easy);
    if (t->cu) curl_url_cleanup(t->cu);
    free(t->cu_url);
    sg_buf_free(&t->reqh);
    sg_buf_free(&t->hbuf);
    free(t->slist);
    free(t->hdrs);
    free(t);
}

static void xfer_recycle(upstream_xfer *t) {
    upstream *u = t->u;
    t->state = X_FREE;
    t->cb = (upstream_callbacks){0};
    t->arg = NULL;
    if (u->n_free >= u->cfg.max_pooled_handles) {
        xfer_destroy(t);
        return;
    }
    t->next = u->free_list;
    u->free_list = t;
    u->n_free++;
}

/* ------------------------------------------------------------------------------------ */
/* timeouts */

static void xfer_on_timer(loop *l, loop_timer *tm, void *arg) {
    (void)tm;
    upstream_xfer *t = arg;
    uint64_t now = loop_now_ms(l);
    if (now >= t->total_deadline) {
        t->forced = UPSTREAM_ERR_TOTAL_TIMEOUT;
        snprintf(t->forced_msg, sizeof t->forced_msg, "request not complete within %llu ms",
                 (unsigned long long)(t->total_deadline - t->start_ms));
    } else if (t->phase == PH_CONNECT) {
        t->forced = UPSTREAM_ERR_CONNECT_TIMEOUT;
        snprintf(t->forced_msg, sizeof t->forced_msg, "not connected within %llu ms",
                 (unsigned long long)(now - t->start_ms));
    } else if (t->phase == PH_TTFB) {
        t->forced = UPSTREAM_ERR_TTFB_TIMEOUT;
        snprintf(t->forced_msg, sizeof t->forced_msg, "no response within %u ms of sending the request",
                 t->ttfb_ms);
    } else {
        /* The idle clock is checked lazily (bytes do not re-arm the timer, they move
         * last_byte_ms), and does not run while the caller has paused us. */
        if (t->paused) t->last_byte_ms = now;
        uint64_t due = after(t->last_byte_ms, t->idle_ms);
        if (now < due) {
            t->phase_deadline = due;
            xfer_arm(t);
            return;
        }
        t->forced = UPSTREAM_ERR_IDLE_TIMEOUT;
        snprintf(t->forced_msg, sizeof t->forced_msg, "response stalled: no bytes for %u ms", t->idle_ms);
    }
    /* We are outside curl here: take the handle out and report. */
    xfer_finish(t, CURLE_OPERATION_TIMEDOUT);
}

/* ------------------------------------------------------------------------------------ */
/* requests */


static int header_ok(const upstream_header *h) {
    if (!h->name || !h->value || !*h->name) return 0;
    for (const char *p = h->name; *p; p++)
        if (*p <= ' ' || *p == ':' || (unsigned char)*p >= 0x7f) return 0;
    return !strpbrk(h->value, "\r\n");
}

/* Hands t to curl. Returns the CURLMcode; on failure t is not in the multi handle. */
static CURLMcode xfer_add(upstream_xfer *t) {
    upstream *u = t->u;
    CURLMcode mc = curl_multi_add_handle(u->multi, t->easy);
    if (mc != CURLM_OK) return mc;
    t->in_multi = 1;
    t->rprev = NULL;
    t->rnext = u->running;
    if (u->running) u->running->rprev = t;
    u->running = t;
    t->state = X_RUNNING;
    xfer_arm(t);
    /* No curl_multi_socket_action here: curl has asked for a 0 ms timer, which fires in
     * this same loop iteration, after the I/O callbacks. Requests started by one batch of
     * client reads then go out together, which wakes the upstream once instead of once
     * per request (about 8% less CPU per proxied request at c=64 in bench_gateway_core). */
    return CURLM_OK;
}

upstream_xfer *upstream_start(upstream *u, const upstream_request *req, sg_error *err) {
    if (!req->url || !req->method || !*req->method) {
        sg_fail(err, "upstream request needs a method and a URL");
        return NULL;
    }
    if (u->h1 && !(u->http2 && !strncasecmp(req->url, "https:", 6))) {
        int declined = 0;
        upstream_xfer *x = h1_start(u->h1, req, &declined, err);
        if (x || !declined) return x;
    }
    upstream_xfer *t = xfer_get(u);
    if (!t) {
        sg_fail(err, "curl_easy_init failed");
        return NULL;
    }
    CURL *e = t->easy;
    t->cb = req->cb;
    t->arg = req->arg;
    t->cancelled = t->paused = t->reaping = 0;
    t->status = t->head_done = 0;
    t->body_bytes = 0;
    t->max_body = req->max_body_bytes;
    t->max_head = req->max_head_bytes ? req->max_head_bytes : u->cfg.max_head_bytes;
    t->head_bytes = 0;
    t->first_byte_ms = t->last_byte_ms = 0;
    t->forced = UPSTREAM_OK;
    t->forced_msg[0] = 0;
    t->errbuf[0] = 0;
    t->timer.fn = xfer_on_timer;
    t->timer.arg = t;
    sg_buf_reset(&t->hbuf);

    /* method and body */
    int mk = !strcmp(req->method, "GET") ? M_GET : !strcmp(req->method, "POST") ? M_POST
           : !strcmp(req->method, "HEAD") ? M_HEAD : M_CUSTOM;
    if (t->method_kind == M_CUSTOM || t->method_kind == M_HEAD || mk != t->method_kind) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
        curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
    if (mk == M_HEAD) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    if (mk == M_CUSTOM) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
    if (mk == M_POST || (mk == M_CUSTOM && req->body_len)) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body_len ? req->body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    t->method_kind = mk;
    /* Providers get the same URL over and over: parse it once per handle. */
    if (!t->cu_url || strcmp(t->cu_url, req->url)) {
        free(t->cu_url);
        t->cu_url = NULL;
        if (!t->cu) t->cu = curl_url();
        CURLUcode uc = curl_url_set(t->cu, CURLUPART_URL, req->url, CURLU_NON_SUPPORT_SCHEME);
        if (uc != CURLUE_OK) {
            sg_fail(err, "invalid URL: %s", curl_url_strerror(uc));
            xfer_recycle(t);
            return NULL;
        }
        t->cu_url = sg_xstrdup(req->url);
        curl_easy_setopt(e, CURLOPT_CURLU, t->cu);
    }

    /* headers: our own curl_slist nodes over one buffer (no malloc per header) */
    size_t need = req->n_headers + 1;
    if (need > t->slist_cap) {
        t->slist_cap = need * 2;
        t->slist = sg_xrealloc(t->slist, t->slist_cap * sizeof *t->slist);
    }
    sg_buf_reset(&t->reqh);
    size_t offs[64], n = 0;
    size_t *off = need <= 64 ? offs : sg_xmalloc(need * sizeof *off);
    for (size_t i = 0; i < req->n_headers; i++) {
        const upstream_header *h = &req->headers[i];
        if (!header_ok(h)) {
            SG_WARN("upstream: dropping a request header with invalid characters");
            continue;
        }
        off[n++] = t->reqh.len;
        sg_buf_puts(&t->reqh, h->name);
        sg_buf_append(&t->reqh, ": ", 2);
        sg_buf_puts(&t->reqh, h->value);
        sg_buf_putc(&t->reqh, 0);
    }
    off[n++] = t->reqh.len;
    sg_buf_append(&t->reqh, "Expect:", 8);  /* never 100-continue: it costs a round trip */
    for (size_t i = 0; i < n; i++) {
        t->slist[i].data = t->reqh.data + off[i];
        t->slist[i].next = i + 1 < n ? &t->slist[i + 1] : NULL;
    }
    if (off != offs) free(off);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->slist);

    /* timeouts */
    upstream_timeouts to = req->timeouts;
    if (!to.connect_ms) to.connect_ms = u->cfg.timeouts.connect_ms;
    if (!to.ttfb_ms) to.ttfb_ms = u->cfg.timeouts.ttfb_ms;
    if (!to.idle_ms) to.idle_ms = u->cfg.timeouts.idle_ms;
    if (!to.total_ms) to.total_ms = u->cfg.timeouts.total_ms;
    uint64_t now = loop_update_now(u->l);  /* callers may have been busy since the loop woke */
    t->start_ms = now;
    t->phase = PH_CONNECT;
    t->phase_deadline = after(now, to.connect_ms);
    t->total_deadline = after(now, to.total_ms);
    t->idle_ms = to.idle_ms;
    t->ttfb_ms = to.ttfb_ms;

    u->stats.started++;
    u->stats.in_flight++;
    if (u->in_curl) {  /* inside a curl callback: curl_multi_add_handle would refuse */
        t->state = X_PENDING;
        if (u->pending_tail) u->pending_tail->next = t;
        else u->pending_head = t;
        u->pending_tail = t;
        return t;
    }
    CURLMcode mc = xfer_add(t);
    if (mc != CURLM_OK) {
        sg_fail(err, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
        u->stats.started--;
        u->stats.in_flight--;
        xfer_recycle(t);
        return NULL;
    }
    return t;
}

void upstream_cancel(upstream_xfer *t) {
    if (upstream_xfer_impl(t) == UPSTREAM_IMPL_H1) {
        h1_cancel(t);
        return;
    }
    upstream *u = t->u;
    if (t->state == X_FINISHING || t->state == X_FREE || t->cancelled) return;
    t->cancelled = 1;
    u->stats.cancelled++;
    u->stats.in_flight--;
    loop_timer_stop(u->l, &t->timer);
    if (t->state == X_PENDING) {
        /* never reached curl: unlink from the pending list */
        upstream_xfer **pp = &u->pending_head, *prev = NULL;
        while (*pp && *pp != t) { prev = *pp; pp = &(*pp)->next; }
        if (*pp) *pp = t->next;
        if (u->pending_tail == t) u->pending_tail = prev;
        xfer_recycle(t);
        return;
    }
    if (u->in_curl) {
        t->reaping = 1;
        t->next = u->reap;
        u->reap = t;
        return;
    }
    xfer_detach(t);
    xfer_recycle(t);
}

void upstream_pause(upstream_xfer *t) {
    if (upstream_xfer_impl(t) == UPSTREAM_IMPL_H1) {
        h1_pause(t);
        return;
    }
    if (t->paused || t->state != X_RUNNING || t->cancelled) return;
    t->paused = 1;
    upstream *u = t->u;
    u_enter(u);
    curl_easy_pause(t->easy, CURLPAUSE_RECV);
    u_leave(u);
}

void upstream_resume(upstream_xfer *t) {
    if (upstream_xfer_impl(t) == UPSTREAM_IMPL_H1) {
        h1_resume(t);
        return;
    }
    if (!t->paused || t->state != X_RUNNING || t->cancelled) return;
    t->paused = 0;
    upstream *u = t->u;
    t->last_byte_ms = loop_update_now(u->l);  /* the idle clock restarts now */
    u_enter(u);
    curl_easy_pause(t->easy, CURLPAUSE_CONT);
    u_leave(u);
}

int upstream_paused(const upstream_xfer *t) {
    return upstream_xfer_impl(t) == UPSTREAM_IMPL_H1 ? h1_paused(t) : t->paused;
}

upstream_stats upstream_get_stats(const upstream *u) { return u->stats; }

/* ------------------------------------------------------------------------------------ */
/* lifecycle */

void upstream_config_defaults(upstream_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->native = 1;
    cfg->max_cached_connections = 1024;
    cfg->max_host_idle = 256;
    cfg->pool_idle_ms = 60000;
    cfg->max_pooled_handles = 1024;
    cfg->http2 = 0;
    cfg->timeouts.connect_ms = 10000;
    cfg->timeouts.ttfb_ms = 300000;
    cfg->timeouts.idle_ms = 120000;
    cfg->timeouts.total_ms = 600000;
    cfg->max_head_bytes = UPSTREAM_DEFAULT_MAX_HEAD;
}

upstream *upstream_new(loop *l, const upstream_config *cfg, sg_error *err) {
    pthread_once(&g_curl_once, curl_init_once);
    upstream *u = sg_xcalloc(1, sizeof *u);
    u->l = l;
    upstream_config_defaults(&u->cfg);
    if (cfg) {
        u->cfg = *cfg;
        upstream_config d;
        upstream_config_defaults(&d);
        if (!u->cfg.max_cached_connections) u->cfg.max_cached_connections = d.max_cached_connections;
        if (!u->cfg.max_pooled_handles) u->cfg.max_pooled_handles = d.max_pooled_handles;
        if (!u->cfg.max_host_idle) u->cfg.max_host_idle = d.max_host_idle;
        if (!u->cfg.pool_idle_ms) u->cfg.pool_idle_ms = d.pool_idle_ms;
        if (!u->cfg.timeouts.connect_ms) u->cfg.timeouts.connect_ms = d.timeouts.connect_ms;
        if (!u->cfg.timeouts.ttfb_ms) u->cfg.timeouts.ttfb_ms = d.timeouts.ttfb_ms;
        if (!u->cfg.timeouts.idle_ms) u->cfg.timeouts.idle_ms = d.timeouts.idle_ms;
        if (!u->cfg.timeouts.total_ms) u->cfg.timeouts.total_ms = d.timeouts.total_ms;
        if (!u->cfg.max_head_bytes) u->cfg.max_head_bytes = d.max_head_bytes;
    }
    if (u->cfg.ca_file) u->ca_file = sg_xstrdup(u->cfg.ca_file);
    u->cfg.ca_file = u->ca_file;
    if (u->cfg.proxy) {
        u->proxy = sg_xstrdup(u->cfg.proxy);
    } else {
        /* The variables curl itself honours; with none set, say so once ("" = no proxy)
         * instead of letting curl look them up on every transfer. */
        static const char *const vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"};
        int any = 0;
        for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) any |= getenv(vars[i]) != NULL;
        if (!any) u->proxy = sg_xstrdup("");
    }
    u->cfg.proxy = u->proxy;
    curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
    u->http2 = u->cfg.http2 && (vi->features & CURL_VERSION_HTTP2);
    u->multi = curl_multi_init();
    if (!u->multi) {
        free(u->ca_file);
        free(u->proxy);
        free(u);
        sg_fail(err, "curl_multi_init failed");
        return NULL;
    }
    loop_timer_init(&u->timer, u_on_timer, u);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, cb_socket);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, cb_timer);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, (long)u->cfg.max_cached_connections);
    curl_multi_setopt(u->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)u->cfg.max_host_connections);
    if (u->http2) curl_multi_setopt(u->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    /* The native client, unless turned off or a proxy is in play (libcurl speaks to it). */
    const char *impl = getenv("SMOLGATE_UPSTREAM");
    if (u->cfg.native && !(impl && !strcmp(impl, "curl")) && u->proxy && !u->proxy[0]) {
        u->h1 = h1_new(l, &u->cfg, &u->stats, err);
        if (!u->h1) {
            upstream_free(u);
            return NULL;
        }
    }
    return u;
}

void upstream_free(upstream *u) {
    if (!u) return;
    h1_free(u->h1);
    /* Whatever is still running: cancel without callbacks. (Transfers on the reap list
     * are still in the multi handle, so they are on the running list too.) */
    u->reap = NULL;
    while (u->running) {
        upstream_xfer *t = u->running;
        xfer_detach(t);
        xfer_destroy(t);
    }
    while (u->pending_head) {
        upstream_xfer *t = u->pending_head;
        u->pending_head = t->next;
        xfer_destroy(t);
    }
    while (u->free_list) {
        upstream_xfer *t = u->free_list;
        u->free_list = t->next;
        xfer_destroy(t);
    }
    loop_timer_stop(u->l, &u->timer);
    curl_multi_cleanup(u->multi);  /* closes cached connections via cb_closesocket */
    for (size_t i = 0; i < u->n_socks; i++) {
        if (u->socks[i]) {
            loop_watch_remove(u->l, &u->socks[i]->w);
            free(u->socks[i]);
        }
    }
    free(u->socks);
    free(u->ca_file);
    free(u->proxy);
    free(u);
}
