/* hub_http.c: blocking libcurl requests for pulls (hub_http.h). */
#include "hub/hub_http.h"

#include <ctype.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FETCH_BODY_MAX   (64u << 20)
#define ERROR_BODY_MAX   (64u << 10)
#define MAX_REDIRECTS    5
#define CONNECT_TIMEOUT_S 30L
#define STALL_TIMEOUT_S   60L   /* a transfer under 1 byte/s this long is dropped (and retried) */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

void hub_http_resp_free(hub_http_resp *r) {
    free(r->url); free(r->location); free(r->etag); free(r->linked_etag);
    free(r->repo_commit); free(r->error_code);
    sg_buf_free(&r->body);
    memset(r, 0, sizeof *r);
}

static void resp_reset_headers(hub_http_resp *r) {
    free(r->location); free(r->etag); free(r->linked_etag); free(r->repo_commit); free(r->error_code);
    r->location = r->etag = r->linked_etag = r->repo_commit = r->error_code = NULL;
    r->linked_size = r->length = r->range_start = -1;
    r->status = 0;
}

char *hub_http_origin(const char *url) {
    const char *p = strstr(url, "://");
    if (!p) return sg_xstrdup("");
    const char *host = p + 3;
    size_t hlen = strcspn(host, "/?#");
    const char *at = memchr(host, '@', hlen);   /* drop user:pass@ */
    if (at) { hlen -= (size_t)(at + 1 - host); host = at + 1; }
    sg_buf b;
    sg_buf_init(&b);
    for (const char *s = url; s < p + 3; s++) sg_buf_putc(&b, (char)tolower((unsigned char)*s));
    for (size_t i = 0; i < hlen; i++) sg_buf_putc(&b, (char)tolower((unsigned char)host[i]));
    /* "http://h" and "http://h:80" are one origin */
    const char *colon = memchr(host, ':', hlen);
    if (host[0] != '[' && !colon)
        sg_buf_puts(&b, !strncasecmp(url, "https", 5) ? ":443" : ":80");
    return sg_buf_steal(&b);
}

/* A header value without surrounding quotes and a weak W/ prefix (how ETags are compared). */
static char *unquote(const char *v, size_t n) {
    if (n >= 2 && v[0] == 'W' && v[1] == '/') { v += 2; n -= 2; }
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') { v++; n -= 2; }
    return sg_xstrndup(v, n);
}

typedef struct xfer {
    hub_http_resp *r;
    const hub_http_sink *sink;   /* NULL: body to r->body */
    int started;                 /* sink->start called for this response */
    int aborted;                 /* the sink said stop */
    size_t cap;
} xfer;

static size_t on_header(char *line, size_t size, size_t nmemb, void *ud) {
    xfer *x = ud;
    hub_http_resp *r = x->r;
    size_t n = size * nmemb, len = n;
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
    if (len >= 5 && !strncmp(line, "HTTP/", 5)) {   /* a new response (after a 100 or a redirect) */
        resp_reset_headers(r);
        const char *sp = memchr(line, ' ', len);
        if (sp) r->status = strtol(sp + 1, NULL, 10);
        x->started = 0;
        return n;
    }
    if (len == 0) {   /* end of headers */
        if (x->sink && r->status >= 200 && r->status < 300 && !x->started) {
            x->started = 1;
            if (r->status != 206) r->range_start = -1;
            if (x->sink->start(x->sink->ctx, r)) { x->aborted = 1; return 0; }
        }
        return n;
    }
    const char *colon = memchr(line, ':', len);
    if (!colon) return n;
    size_t klen = (size_t)(colon - line);
    const char *v = colon + 1;
    while (v < line + len && (*v == ' ' || *v == '\t')) v++;
    size_t vlen = (size_t)(line + len - v);
#define IS(name) (klen == sizeof(name) - 1 && !strncasecmp(line, name, klen))
    if (IS("ETag")) { free(r->etag); r->etag = unquote(v, vlen); }
    else if (IS("X-Linked-Etag")) { free(r->linked_etag); r->linked_etag = unquote(v, vlen); }
    else if (IS("X-Repo-Commit")) { free(r->repo_commit); r->repo_commit = sg_xstrndup(v, vlen); }
    else if (IS("X-Error-Code")) { free(r->error_code); r->error_code = sg_xstrndup(v, vlen); }
    else if (IS("X-Linked-Size")) r->linked_size = strtoll(v, NULL, 10);
    else if (IS("Content-Length")) r->length = strtoll(v, NULL, 10);
    else if (IS("Content-Range")) {   /* "bytes START-END/TOTAL" */
        if (vlen > 6 && !strncasecmp(v, "bytes ", 6) && isdigit((unsigned char)v[6]))
            r->range_start = strtoll(v + 6, NULL, 10);
    }
#undef IS
    return n;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
    xfer *x = ud;
    size_t n = size * nmemb;
    hub_http_resp *r = x->r;
    if (x->sink && x->started) {
        if (x->sink->data(x->sink->ctx, p, n)) { x->aborted = 1; return 0; }
        return n;
    }
    if (r->body.len + n > x->cap) return 0;   /* too big: fails the transfer */
    sg_buf_append(&r->body, p, n);
    return n;
}

/* One request, no redirect followed. */
static int perform(const char *method, const char *url, const char *accept,
                   const hub_http_auth *auth, int64_t offset, const hub_http_sink *sink,
                   hub_http_resp *r, sg_error *err) {
    pthread_once(&curl_once, curl_init_once);
    CURL *c = curl_easy_init();
    if (!c) return sg_fail(err, "curl_easy_init failed");
    resp_reset_headers(r);
    sg_buf_reset(&r->body);
    free(r->url);
    r->url = sg_xstrdup(url);
    r->transport = 0;
    xfer x = {.r = r, .sink = sink, .cap = sink ? ERROR_BODY_MAX : FETCH_BODY_MAX};

    struct curl_slist *hdrs = NULL;
    char line[4096];
    if (accept) {
        snprintf(line, sizeof line, "Accept: %s", accept);
        hdrs = curl_slist_append(hdrs, line);
    }
    if (auth && auth->token && *auth->token && auth->origin) {
        char *o = hub_http_origin(url);
        if (!strcmp(o, auth->origin)) {
            snprintf(line, sizeof line, "Authorization: Bearer %s", auth->token);
            hdrs = curl_slist_append(hdrs, line);
        }
        free(o);
    }
    char range[64];
    if (offset > 0) {
        snprintf(range, sizeof range, "%lld-", (long long)offset);
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (!strcmp(method, "HEAD")) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "smolgate");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, STALL_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 512L * 1024);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
    CURLcode rc = curl_easy_perform(c);
    char *redirect = NULL;
    if (curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &redirect) == CURLE_OK && redirect)
        r->location = sg_xstrdup(redirect);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);

    if (rc == CURLE_OK) return 0;
    if (x.aborted) return -1;   /* the sink wrote its own message */
    if (rc == CURLE_WRITE_ERROR) return sg_fail(err, "%s: answer larger than %u bytes", url, (unsigned)x.cap);
    r->transport = 1;
    return sg_fail(err, "%s: %s", url, curl_easy_strerror(rc));
}

static int is_redirect(long s) { return s == 301 || s == 302 || s == 303 || s == 307 || s == 308; }

int hub_http_fetch(const char *method, const char *url, const char *accept,
                   const hub_http_auth *auth, int follow, hub_http_resp *r, sg_error *err) {
    char *cur = sg_xstrdup(url);
    int rc;
    for (int hop = 0;; hop++) {
        rc = perform(method, cur, accept, auth, 0, NULL, r, err);
        if (rc || !is_redirect(r->status) || !r->location || hop >= follow) break;
        free(cur);
        cur = sg_xstrdup(r->location);
    }
    free(cur);
    return rc;
}

int hub_http_download(const char *url, const hub_http_auth *auth, int64_t offset,
                      const hub_http_sink *sink, hub_http_resp *r, sg_error *err) {
    char *cur = sg_xstrdup(url);
    int rc;
    for (int hop = 0;; hop++) {
        rc = perform("GET", cur, NULL, auth, offset, sink, r, err);
        if (rc) break;
        if (is_redirect(r->status) && r->location) {
            if (hop >= MAX_REDIRECTS) { rc = sg_fail(err, "%s: too many redirects", url); break; }
            free(cur);
            cur = sg_xstrdup(r->location);
            continue;
        }
        if (r->status < 200 || r->status >= 300) rc = sg_fail(err, "%s: HTTP %ld", cur, r->status);
        break;
    }
    free(cur);
    return rc;
}
