/* response_store.c: the stored responses (response_store.h). Memory: a doubly linked
 * list in insertion order (oldest first) and an open hash table by id. Database: a job
 * queue served by one worker thread (response_store_db.h does the SQL). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"
#include "gateway/response_store.h"
#include "gateway/response_store_db.h"

typedef struct rs_node {
    struct rs_node *prev, *next;   /* insertion order */
    struct rs_node *hnext;         /* hash chain */
    char *id, *owner, *response, *messages, *input_items;
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
    free(n->input_items);
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

static void mem_put(const char *id, const char *owner, int64_t now, const char *response, const char *messages,
                    const char *input_items) {
    size_t b = strlen(id) + strlen(owner) + strlen(response) + strlen(messages) + strlen(input_items) + sizeof(rs_node);
    pthread_mutex_lock(&mu);
    rs_node **pp = slot(id);
    if (*pp) unlink_free(*pp);
    if (limits.max_count && b <= limits.max_bytes) {
        rs_node *n = sg_xcalloc(1, sizeof *n);
        n->id = sg_xstrdup(id);
        n->owner = sg_xstrdup(owner);
        n->response = sg_xstrdup(response);
        n->messages = sg_xstrdup(messages);
        n->input_items = sg_xstrdup(input_items);
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

static int mem_get(const char *id, const rstore_who *who, int64_t now, rstore_entry *e) {
    pthread_mutex_lock(&mu);
    rs_node *n = find(id, who, now);
    if (n) {
        e->response = sg_xstrdup(n->response);
        e->messages = sg_xstrdup(n->messages);
        e->input_items = sg_xstrdup(n->input_items);
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
    free(e->input_items);
    e->response = e->messages = e->input_items = NULL;
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

/* ---- the database backend: one worker thread, calls in order ---------------------------- */

typedef enum job_op { JOB_PUT, JOB_FETCH, JOB_DELETE } job_op;

typedef struct rs_job {
    struct rs_job *next;
    job_op op;
    loop *l;                       /* where done runs */
    rstore_fetch_fn done;          /* NULL for a put */
    void *arg;
    char *owner;
    bool admin;
    char *ids[RSTORE_MAX_FETCH];
    size_t n;
    char *response, *messages, *input_items;   /* a put */
    int64_t created_ms;            /* a put: when the loop made it (orders the responses) */
    rstore_status status;
    rstore_entry entries[RSTORE_MAX_FETCH];
} rs_job;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool running, stop;
    pthread_t th;
    rs_job *head, *tail;
    size_t queued;
    gw_ledger_kind kind;
    char *target;
    unsigned gen;                  /* bumped when the target changes: reconnect */
} w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

#define RS_RETRY_MS 2000           /* between connection attempts while the database is away */

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void job_free(rs_job *j) {
    for (size_t i = 0; i < j->n; i++) {
        free(j->ids[i]);
        rstore_entry_free(&j->entries[i]);
    }
    free(j->owner);
    free(j->response);
    free(j->messages);
    free(j->input_items);
    free(j);
}

static void job_finish(loop *l, void *arg) {   /* loop thread */
    rs_job *j = arg;
    j->done(l, j->arg, j->status, j->entries);
    job_free(j);
}

/* Runs j on db (NULL: unreachable). */
static void job_run(ledger_db *db, rs_job *j, const rstore_limits *lim, sg_error *err, bool *failed) {
    *failed = false;
    if (!db) { j->status = RSTORE_UNAVAILABLE; return; }
    rstore_who who = {j->owner, j->admin};
    int64_t now = wall_ms();
    int rc = 0;
    if (j->op == JOB_PUT) {
        rstore_db_record r = {j->ids[0], j->owner, j->response, j->messages, j->input_items};
        rc = rstore_db_put(db, &r, lim, j->created_ms, err);
    } else if (j->op == JOB_DELETE) {
        rc = rstore_db_delete(db, j->ids[0], &who, lim->max_age_s, now, err);
        j->status = rc == 1 ? RSTORE_NOT_FOUND : RSTORE_OK;
    } else {
        for (size_t i = 0; i < j->n && rc >= 0; i++) rc = rstore_db_get(db, j->ids[i], &who, lim->max_age_s, now, &j->entries[i], err);
        j->status = RSTORE_OK;
    }
    if (rc < 0) {
        j->status = RSTORE_UNAVAILABLE;
        *failed = true;
    }
}

static void *worker_main(void *arg) {
    (void)arg;
    ledger_db *db = NULL;
    unsigned db_gen = 0;
    int64_t retry_at = 0;
    bool down = false;             /* logged once per outage */
    for (;;) {
        pthread_mutex_lock(&w.mu);
        while (!w.head && !w.stop) pthread_cond_wait(&w.cv, &w.mu);
        rs_job *j = w.head;
        if (!j) { pthread_mutex_unlock(&w.mu); break; }
        w.head = j->next;
        if (!w.head) w.tail = NULL;
        w.queued--;
        unsigned gen = w.gen;
        gw_ledger_kind kind = w.kind;
        char *target = w.target ? sg_xstrdup(w.target) : NULL;
        pthread_mutex_unlock(&w.mu);

        sg_error err;
        if (db && db_gen != gen) { ledger_db_close(db); db = NULL; retry_at = 0; }
        if (!db && wall_ms() >= retry_at) {
            db = ledger_db_open(kind, target, false, &err);
            db_gen = gen;
            if (!db) {
                retry_at = wall_ms() + RS_RETRY_MS;
                if (!down) SG_WARN("responses: the database is unavailable, stored responses cannot be read or kept: %s", err.msg);
                down = true;
            } else if (down) {
                SG_INFO("responses: the database is back");
                down = false;
            }
        }
        free(target);
        rstore_limits lim = rstore_get_limits();
        bool failed;
        job_run(db, j, &lim, &err, &failed);
        if (failed) {
            SG_WARN("responses: %s", err.msg);
            if (!ledger_db_ok(db)) { ledger_db_close(db); db = NULL; }
        }
        if (j->done) loop_post(j->l, job_finish, j);
        else job_free(j);
    }
    ledger_db_close(db);
    return NULL;
}

/* Waits for a stopping worker to end its queue. */
static void join_stopped(void) {
    pthread_mutex_lock(&w.mu);
    bool joinable = w.running && w.stop;
    pthread_t th = w.th;
    pthread_mutex_unlock(&w.mu);
    if (!joinable) return;
    pthread_join(th, NULL);
    pthread_mutex_lock(&w.mu);
    w.running = false;
    w.stop = false;
    pthread_mutex_unlock(&w.mu);
}

void rstore_use_db(gw_ledger_kind kind, const char *target) {
    join_stopped();   /* back to the database while the last worker drains: rare, short */
    pthread_mutex_lock(&w.mu);
    bool same = w.running && w.kind == kind && ((!w.target && !target) || (w.target && target && !strcmp(w.target, target)));
    if (!same) {
        w.kind = kind;
        free(w.target);
        w.target = target ? sg_xstrdup(target) : NULL;
        w.gen++;
    }
    if (!w.running) {
        w.stop = false;
        if (pthread_create(&w.th, NULL, worker_main, NULL) == 0) w.running = true;
        else SG_ERROR("responses: cannot start the database worker; stored responses stay in memory");
    }
    pthread_mutex_unlock(&w.mu);
}

void rstore_use_memory(void) {
    pthread_mutex_lock(&w.mu);
    if (w.running) {
        w.stop = true;
        pthread_cond_signal(&w.cv);
    }
    pthread_mutex_unlock(&w.mu);
}

void rstore_shutdown(void) {
    rstore_use_memory();
    join_stopped();
    pthread_mutex_lock(&w.mu);
    free(w.target);
    w.target = NULL;
    pthread_mutex_unlock(&w.mu);
}

bool rstore_uses_db(void) {
    pthread_mutex_lock(&w.mu);
    bool r = w.running && !w.stop;
    pthread_mutex_unlock(&w.mu);
    return r;
}

/* Queues j; false when the queue is full or the backend is memory (j untouched). */
static bool job_submit(rs_job *j) {
    pthread_mutex_lock(&w.mu);
    bool ok = w.running && !w.stop && w.queued < RSTORE_QUEUE_MAX;
    if (ok) {
        if (w.tail) w.tail->next = j;
        else w.head = j;
        w.tail = j;
        w.queued++;
        pthread_cond_signal(&w.cv);
    }
    pthread_mutex_unlock(&w.mu);
    return ok;
}

static rs_job *job_new(job_op op, loop *l, const rstore_who *who, rstore_fetch_fn done, void *arg) {
    rs_job *j = sg_xcalloc(1, sizeof *j);
    j->op = op;
    j->l = l;
    j->done = done;
    j->arg = arg;
    j->owner = sg_xstrdup(who && who->owner ? who->owner : "");
    j->admin = who && who->admin;
    return j;
}

/* ---- the calls: memory or database -------------------------------------------------------- */

void rstore_put(const char *id, const char *owner, int64_t now, const char *response, const char *messages,
                const char *input_items) {
    if (!owner) owner = "";
    if (!input_items) input_items = "[]";
    if (!rstore_uses_db()) { mem_put(id, owner, now, response, messages, input_items); return; }
    rstore_who who = {owner, false};
    rs_job *j = job_new(JOB_PUT, NULL, &who, NULL, NULL);
    j->ids[0] = sg_xstrdup(id);
    j->n = 1;
    j->response = sg_xstrdup(response);
    j->messages = sg_xstrdup(messages);
    j->input_items = sg_xstrdup(input_items);
    j->created_ms = wall_ms();
    if (!job_submit(j)) {
        SG_WARN("responses: too many database calls waiting; response %s is not stored", id);
        job_free(j);
    }
}

void rstore_fetch_async(loop *l, const char *const *ids, size_t n, const rstore_who *who, rstore_fetch_fn done, void *arg) {
    if (n > RSTORE_MAX_FETCH) n = RSTORE_MAX_FETCH;
    rs_job *j = job_new(JOB_FETCH, l, who, done, arg);
    j->n = n;
    for (size_t i = 0; i < n; i++) j->ids[i] = sg_xstrdup(ids[i]);
    if (rstore_uses_db()) {
        if (job_submit(j)) return;
        j->status = RSTORE_UNAVAILABLE;
    } else {
        int64_t now = (int64_t)time(NULL);
        for (size_t i = 0; i < n; i++) mem_get(ids[i], who, now, &j->entries[i]);
        j->status = RSTORE_OK;
    }
    job_finish(l, j);
}

void rstore_delete_async(loop *l, const char *id, const rstore_who *who, rstore_fetch_fn done, void *arg) {
    rs_job *j = job_new(JOB_DELETE, l, who, done, arg);
    if (rstore_uses_db()) {
        j->ids[0] = sg_xstrdup(id);
        j->n = 1;
        if (job_submit(j)) return;
        j->status = RSTORE_UNAVAILABLE;
    } else {
        j->status = rstore_delete(id, who, (int64_t)time(NULL)) ? RSTORE_NOT_FOUND : RSTORE_OK;
    }
    job_finish(l, j);
}

/* What the last fetch lent to this thread's parse. */
static _Thread_local const char *const *la_ids;
static _Thread_local const rstore_entry *la_entries;
static _Thread_local size_t la_n;

void rstore_lookaside(const char *const *ids, const rstore_entry *entries, size_t n) {
    la_ids = ids;
    la_entries = entries;
    la_n = n;
}

int rstore_get(const char *id, const rstore_who *who, int64_t now, rstore_entry *e) {
    *e = (rstore_entry){0};
    if (!rstore_uses_db()) return mem_get(id, who, now, e);
    for (size_t i = 0; i < la_n; i++) {   /* the fetch already applied who and the age */
        const rstore_entry *x = &la_entries[i];
        if (strcmp(la_ids[i], id) || !x->response) continue;
        e->response = sg_xstrdup(x->response);
        e->messages = sg_xstrdup(x->messages);
        e->input_items = sg_xstrdup(x->input_items);
        e->created = x->created;
        return 0;
    }
    return -1;
}
