/* alert_hook.c: see alert_hook.h. A queue under a mutex and one libcurl easy handle on a
 * thread of its own, so that a slow receiver never holds up the loop. */
#include "gateway/alert_hook.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"

typedef struct ah_item {
    struct ah_item *next;
    char *body;
} ah_item;

struct alert_hook {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    bool running, stop;
    ah_item *head, *tail;
    size_t queued;
    char *url;
    uint32_t timeout_ms;
    int retries;
};

static size_t discard(char *p, size_t sz, size_t n, void *arg) {
    (void)p; (void)arg;
    return sz * n;
}

/* One POST: the HTTP status, or -1 when none came. */
static long post_once(CURL *c, const char *url, const char *body, uint32_t timeout_ms, char *why, size_t cap) {
    struct curl_slist *h = curl_slist_append(NULL, "content-type: application/json");
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "smolgate-alerts");
    CURLcode rc = curl_easy_perform(c);
    long status = -1;
    if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else snprintf(why, cap, "%s", curl_easy_strerror(rc));
    curl_slist_free_all(h);
    return status;
}

static void *worker(void *arg) {
    alert_hook *h = arg;
    CURL *c = curl_easy_init();
    for (;;) {
        pthread_mutex_lock(&h->mu);
        while (!h->head && !h->stop) pthread_cond_wait(&h->cv, &h->mu);
        ah_item *it = h->head;
        if (!it) { pthread_mutex_unlock(&h->mu); break; }
        h->head = it->next;
        if (!h->head) h->tail = NULL;
        h->queued--;
        char *url = h->url ? sg_xstrdup(h->url) : NULL;
        uint32_t timeout = h->timeout_ms;
        int retries = h->retries;
        pthread_mutex_unlock(&h->mu);
        long status = -1;
        char why[256] = "";
        for (int t = 0; url && c && t <= retries; t++) {
            if (t) {
                long ms = 500L << (t - 1 < 4 ? t - 1 : 4);
                struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
                nanosleep(&ts, NULL);
            }
            status = post_once(c, url, it->body, timeout, why, sizeof why);
            if (status >= 200 && status < 300) break;
            if (status > 0) snprintf(why, sizeof why, "HTTP %ld", status);
        }
        if (url && !(status >= 200 && status < 300))
            SG_WARN("alerts: the webhook did not take an alert after %d tries: %s", retries + 1, why);
        free(url);
        free(it->body);
        free(it);
    }
    if (c) curl_easy_cleanup(c);
    return NULL;
}

alert_hook *alert_hook_new(void) {
    alert_hook *h = sg_xcalloc(1, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    h->timeout_ms = 5000;
    h->retries = 3;
    return h;
}

void alert_hook_configure(alert_hook *h, const char *url, uint32_t timeout_ms, int retries) {
    pthread_mutex_lock(&h->mu);
    free(h->url);
    h->url = url ? sg_xstrdup(url) : NULL;
    h->timeout_ms = timeout_ms ? timeout_ms : 5000;
    h->retries = retries < 0 ? 0 : retries;
    if (h->url && !h->running) h->running = pthread_create(&h->th, NULL, worker, h) == 0;
    pthread_mutex_unlock(&h->mu);
}

void alert_hook_send(alert_hook *h, const char *json_body) {
    pthread_mutex_lock(&h->mu);
    bool ok = h->url && h->running && h->queued < ALERT_HOOK_QUEUE_MAX;
    if (ok) {
        ah_item *it = sg_xcalloc(1, sizeof *it);
        it->body = sg_xstrdup(json_body);
        if (h->tail) h->tail->next = it;
        else h->head = it;
        h->tail = it;
        h->queued++;
        pthread_cond_signal(&h->cv);
    }
    bool configured = h->url != NULL;
    pthread_mutex_unlock(&h->mu);
    if (!ok && configured) SG_WARN("alerts: %d alerts wait for the webhook already; this one is only logged", ALERT_HOOK_QUEUE_MAX);
}

void alert_hook_free(alert_hook *h) {
    if (!h) return;
    pthread_mutex_lock(&h->mu);
    h->stop = true;
    pthread_cond_signal(&h->cv);
    bool running = h->running;
    pthread_mutex_unlock(&h->mu);
    if (running) pthread_join(h->th, NULL);
    free(h->url);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h);
}
