/* response_store.c: the in-process stored responses (response_store.h): a doubly linked
 * list in insertion order (oldest first) and an open hash table by id. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "gateway/response_store.h"

typedef struct rs_node {
    struct rs_node *prev, *next;   /* insertion order */
    struct rs_node *hnext;         /* hash chain */
    char *id, *owner, *response, *messages;
    int64_t created;
    size_t bytes;
} rs_node;

#define RS_BUCKETS 4096

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static rs_node *head, *tail;
static rs_node *buckets[RS_BUCKETS];
static size_t count, bytes;
static rstore_limits limits = {RSTORE_DEFAULT_MAX_COUNT, RSTORE_DEFAULT_MAX_BYTES, RSTORE_DEFAULT_MAX_AGE_S};

static size_t hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (size_t)(h % RS_BUCKETS);
}

static rs_node **slot(const char *id) {
    rs_node **pp = &buckets[hash(id)];
    while (*pp && strcmp((*pp)->id, id)) pp = &(*pp)->hnext;
    return pp;
}

static void unlink_free(rs_node *n) {
    rs_node **pp = slot(n->id);
    if (*pp == n) *pp = n->hnext;
    if (n->prev) n->prev->next = n->next;
    else head = n->next;
    if (n->next) n->next->prev = n->prev;
    else tail = n->prev;
    count--;
    bytes -= n->bytes;
    free(n->id);
    free(n->owner);
    free(n->response);
    free(n->messages);
    free(n);
}

static void evict(int64_t now) {
    while (head && (count > limits.max_count || bytes > limits.max_bytes || head->created + limits.max_age_s <= now))
        unlink_free(head);
}

void rstore_configure(const rstore_limits *l) {
    pthread_mutex_lock(&mu);
    limits = *l;
    pthread_mutex_unlock(&mu);
}

rstore_limits rstore_get_limits(void) {
    pthread_mutex_lock(&mu);
    rstore_limits l = limits;
    pthread_mutex_unlock(&mu);
    return l;
}

void rstore_put(const char *id, const char *owner, int64_t now, const char *response, const char *messages) {
    if (!owner) owner = "";
    size_t b = strlen(id) + strlen(owner) + strlen(response) + strlen(messages) + sizeof(rs_node);
    pthread_mutex_lock(&mu);
    rs_node **pp = slot(id);
    if (*pp) unlink_free(*pp);
    if (limits.max_count && b <= limits.max_bytes) {
        rs_node *n = sg_xcalloc(1, sizeof *n);
        n->id = sg_xstrdup(id);
        n->owner = sg_xstrdup(owner);
        n->response = sg_xstrdup(response);
        n->messages = sg_xstrdup(messages);
        n->created = now;
        n->bytes = b;
        n->prev = tail;
        if (tail) tail->next = n;
        else head = n;
        tail = n;
        n->hnext = buckets[hash(id)];
        buckets[hash(id)] = n;
        count++;
        bytes += b;
    }
    evict(now);
    pthread_mutex_unlock(&mu);
}

static rs_node *find(const char *id, const rstore_who *who, int64_t now) {
    evict(now);
    rs_node *n = *slot(id);
    if (!n) return NULL;
    if (who && !who->admin && strcmp(n->owner, who->owner ? who->owner : "")) return NULL;
    return n;
}

int rstore_get(const char *id, const rstore_who *who, int64_t now, rstore_entry *e) {
    pthread_mutex_lock(&mu);
    rs_node *n = find(id, who, now);
    if (n) {
        e->response = sg_xstrdup(n->response);
        e->messages = sg_xstrdup(n->messages);
        e->created = n->created;
    }
    pthread_mutex_unlock(&mu);
    return n ? 0 : -1;
}

int rstore_delete(const char *id, const rstore_who *who, int64_t now) {
    pthread_mutex_lock(&mu);
    rs_node *n = find(id, who, now);
    if (n) unlink_free(n);
    pthread_mutex_unlock(&mu);
    return n ? 0 : -1;
}

void rstore_entry_free(rstore_entry *e) {
    free(e->response);
    free(e->messages);
    e->response = e->messages = NULL;
}

size_t rstore_count(void) {
    pthread_mutex_lock(&mu);
    size_t c = count;
    pthread_mutex_unlock(&mu);
    return c;
}

size_t rstore_bytes(void) {
    pthread_mutex_lock(&mu);
    size_t b = bytes;
    pthread_mutex_unlock(&mu);
    return b;
}

void rstore_clear(void) {
    pthread_mutex_lock(&mu);
    while (head) unlink_free(head);
    pthread_mutex_unlock(&mu);
}
