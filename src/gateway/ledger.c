/* ledger.c: see ledger.h. The spool (segments, lock files, checkpoints), the append path,
 * and the writer thread that delivers batches to the database.
 *
 * Files in spool_dir, for a process whose prefix is P ("sg-<unix s>-<pid>-<random>"):
 *   P.lock            flock()ed while P lives (created as P.lock.tmp, locked, then renamed,
 *                     so nobody can see it unlocked)
 *   P-000001.seg      records, one binary frame each (formats 2 and 3, ledger_frame.h),
 *                     appended by ledger_append
 *   P-000001.spool    format 1 (one JSON line a record): left by an older smolgate, only
 *                     read (adopted and delivered like any other segment)
 *   P-000001.done     the byte offset delivered so far (20 digits and '\n', rewritten in
 *                     place after each committed batch)
 * A segment is sealed when the appender moves to the next one (past segment_bytes, or
 * after a failed write); sealed and fully delivered, it is deleted with its checkpoint.
 * When every segment of a dead process is gone, its lock file goes too. */
#include "gateway/ledger.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "gateway/ledger_db.h"
#include "gateway/ledger_frame.h"
#include "gateway/ledger_usage.h"

#define READ_CHUNK (4u << 20)        /* bytes of a segment held in memory, at most: a whole
                                        segment (segment_bytes), so that a batch of batch_max
                                        (5000 records of about 250 bytes) is not cut short */
#define REFILL (READ_CHUNK / 2)      /* read more when fewer unread bytes are held: more
                                        than any record takes, so one always fits */

typedef struct group group;

typedef struct segment {
    struct segment *next;
    char *path, *ckpt_path;
    int rfd;                         /* read side (writer thread) */
    int ckfd;                        /* checkpoint file, opened on first use; -1 */
    uint64_t end;                    /* bytes of whole records: the appender's count for an
                                        own segment (under mu), the file size for adopted */
    uint64_t delivered;              /* writer only */
    uint64_t synced;                 /* fdatasync()ed up to here (writer only) */
    bool sealed;                     /* no more appends (under mu) */
    bool own;
    int format;                      /* >= 2: binary frames (.seg); 1: JSON lines (.spool) */
    group *grp;                      /* adopted: the dead process's lock */
} segment;

struct group {                       /* the segments of one dead process, adopted */
    group *next;
    char *prefix, *lock_path;
    int lock_fd;
    int live;                        /* its segments not yet removed */
};

/* A batch being delivered (writer thread; reused from batch to batch). Records point into
 * the read buffer (format 2) or their JSON trees (format 1); their attempts sit in one
 * pool, linked once the batch is parsed (the pool may move while it grows). */
typedef struct batch {
    ledger_record *recs;
    json_t **roots;          /* format 1: recs[i]'s tree; NULL for a frame */
    size_t *att_first;       /* recs[i]'s attempts start at atts[att_first[i]] */
    size_t n, cap;
    ledger_attempt *atts;
    size_t n_atts, cap_atts;
} batch;

struct ledger {
    ledger_opts o;                   /* strings owned (copies) */
    char *prefix;
    char *lock_path;
    int lock_fd;

    /* the append side (append_mu) */
    pthread_mutex_t append_mu;
    sg_buf deferred;                 /* frames not written yet (ledger_append_deferred's) */
    uint64_t n_deferred;
    int wfd;
    segment *cur;
    unsigned seq;

    /* shared (mu) */
    pthread_mutex_t mu;
    pthread_cond_t wake;             /* the writer: work, flush, stop */
    pthread_cond_t done;             /* flush waiters */
    segment *segs;                   /* in delivery order: adopted first, then own by seq */
    group *groups;
    uint64_t appended, delivered_own;
    int flush_waiters;
    bool stopping;
    int64_t close_deadline_ms;
    ledger_stats st;
    uint64_t lost_unlogged;          /* spool write losses not yet in a log line */
    int64_t loss_logged_ms;          /* when the last loss line was written; 0 = never */
    int loss_errno;                  /* the last loss's cause (0: a short write) */

    /* writer thread only */
    pthread_t writer;
    bool writer_started;
    ledger_db *db;
    uint32_t backoff_ms;
    int64_t next_retry_ms, last_delivery_ms, next_adopt_ms, last_fail_log_ms;
    sg_buf rbuf;                     /* bytes of rseg from offset rbase, kept between
                                        batches so that each byte is read once */
    segment *rseg;
    uint64_t rbase;
    batch b;
};

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void deadline_ts(struct timespec *ts, int64_t mono_deadline_ms) {
    /* the condition variables run on CLOCK_MONOTONIC (pthread_condattr_setclock) */
    ts->tv_sec = mono_deadline_ms / 1000;
    ts->tv_nsec = (mono_deadline_ms % 1000) * 1000000;
}

void ledger_opts_defaults(ledger_opts *o) {
    memset(o, 0, sizeof *o);
    o->kind = GW_LEDGER_SQLITE;
    o->sqlite_path = "smolgate.db";
    o->spool_dir = "smolgate-spool";
    o->flush_ms = 1000;
    o->batch_max = 5000;
    o->segment_bytes = 4u << 20;
    o->retry_min_ms = 100;
    o->retry_max_ms = 30000;
    o->adopt_every_ms = 30000;
    o->loss_log_ms = 10000;
}

void ledger_opts_from_config(ledger_opts *o, const gw_config *cfg) {
    ledger_opts_defaults(o);
    const gw_ledger *g = &cfg->ledger;
    o->kind = g->kind;
    if (g->sqlite_path) o->sqlite_path = g->sqlite_path;
    o->postgres_url = g->postgres_url;
    if (g->spool_dir) o->spool_dir = g->spool_dir;
    if (g->flush_ms) o->flush_ms = g->flush_ms;
    if (g->batch_max) o->batch_max = g->batch_max;
}

/* ---- segments ---------------------------------------------------------------------------- */

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = sg_xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static segment *segment_new(const char *dir, const char *prefix, unsigned seq, int format) {
    char name[256];
    segment *s = sg_xcalloc(1, sizeof *s);
    snprintf(name, sizeof name, "%s-%06u.%s", prefix, seq, format == 1 ? "spool" : "seg");
    s->format = format;
    s->path = path_join(dir, name);
    snprintf(name, sizeof name, "%s-%06u.done", prefix, seq);
    s->ckpt_path = path_join(dir, name);
    s->rfd = -1;
    s->ckfd = -1;
    return s;
}

static void segment_free(segment *s) {
    if (s->rfd >= 0) close(s->rfd);
    if (s->ckfd >= 0) close(s->ckfd);
    free(s->path);
    free(s->ckpt_path);
    free(s);
}

/* Appends s to the delivery list (under mu). */
static void segs_push(ledger *l, segment *s) {
    segment **pp = &l->segs;
    while (*pp) pp = &(*pp)->next;
    *pp = s;
}

/* Opens the next own segment for writing and reading; the old one is sealed. Appender side
 * (append_mu held). -1 when the file cannot be created (the old one stays in use). */
static int rotate(ledger *l, sg_error *err) {
    segment *s = segment_new(l->o.spool_dir, l->prefix, l->seq + 1, LEDGER_FRAME_VERSION);
    int wfd = open(s->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (wfd >= 0) s->rfd = open(s->path, O_RDONLY | O_CLOEXEC);
    if (wfd < 0 || s->rfd < 0) {
        sg_fail(err, "ledger spool: %s: %s", s->path, strerror(errno));
        if (wfd >= 0) { close(wfd); unlink(s->path); }
        segment_free(s);
        return -1;
    }
    s->own = true;
    pthread_mutex_lock(&l->mu);
    if (l->cur) l->cur->sealed = true;
    segs_push(l, s);
    pthread_mutex_unlock(&l->mu);
    if (l->wfd >= 0) close(l->wfd);
    l->wfd = wfd;
    l->cur = s;
    l->seq++;
    return 0;
}

/* Spool write losses, logged without a flood: the first one at once, then at most one line
 * per loss_log_ms with the count since the last line. Under mu: true (and the count in
 * *n, the total in *total) when a line is due now; force: whenever any is unlogged. */
static bool take_loss_report(ledger *l, int64_t now, bool force, uint64_t *n, uint64_t *total) {
    if (!l->lost_unlogged) return false;
    if (!force && l->loss_logged_ms && now - l->loss_logged_ms < (int64_t)l->o.loss_log_ms) return false;
    *n = l->lost_unlogged;
    *total = l->st.append_failures;
    l->lost_unlogged = 0;
    l->loss_logged_ms = now;
    return true;
}

/* A summary of losses nobody reported yet (the writer thread, ledger_close). */
static void log_losses_since(ledger *l, uint64_t n, uint64_t total) {
    SG_ERROR("ledger spool: %" PRIu64 " more record(s) lost to write errors (last: %s); %" PRIu64 " lost since start",
             n, l->loss_errno ? strerror(l->loss_errno) : "short write", total);
}

/* Writes n bytes of count whole frames to the current segment (append_mu held), rotating
 * first when they would overflow it. On a write error the frames are lost, counted and
 * logged (first_id names the record when it is one), and the segment is sealed at its last
 * whole frame. */
static int write_frames(ledger *l, const char *data, size_t n, uint64_t count, const char *first_id, sg_error *err) {
    if (l->cur->end > 0 && l->cur->end + n > l->o.segment_bytes) {
        sg_error e2;
        if (rotate(l, &e2)) SG_WARN("%s (still appending to the current segment)", e2.msg);
    }
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(l->wfd, data + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    if (off == n) {
        pthread_mutex_lock(&l->mu);
        l->cur->end += n;
        uint64_t before = l->appended - l->delivered_own;
        l->appended += count;
        uint64_t pending = l->appended - l->delivered_own;
        l->st.appended += count;
        /* a batch is full, or the first record after idle: the writer (asleep until its
         * next orphan sweep) starts its flush_ms countdown now */
        if (before == 0 || before / l->o.batch_max != pending / l->o.batch_max) pthread_cond_signal(&l->wake);
        pthread_mutex_unlock(&l->mu);
        return 0;
    }
    int e = errno;
    uint64_t lost = 0, total = 0;
    int64_t now = mono_ms(), since = 0;
    pthread_mutex_lock(&l->mu);
    l->st.append_failures += count;
    l->lost_unlogged += count;
    l->loss_errno = e;
    since = l->loss_logged_ms;
    bool report = take_loss_report(l, now, false, &lost, &total);
    if (report) pthread_cond_signal(&l->wake);   /* the writer reports what follows, if it stops */
    pthread_mutex_unlock(&l->mu);
    /* A partial frame may now follow the segment's last whole record: seal it there (the
     * reader stops at `end`) and go on in a fresh segment. */
    sg_error e2;
    if (off > 0 && rotate(l, &e2) && report) SG_ERROR("%s", e2.msg);
    const char *path = l->cur->path;
    if (report && lost == 1 && first_id)
        SG_ERROR("ledger spool: writing %s: %s: record %s lost (%" PRIu64 " since start; further losses are "
                 "summarised every %u ms)", path, e ? strerror(e) : "short write", first_id, total,
                 l->o.loss_log_ms);
    else if (report)
        SG_ERROR("ledger spool: writing %s: %s: %" PRIu64 " records lost in the last %" PRId64 " ms (%" PRIu64
                 " since start)", path, e ? strerror(e) : "short write", lost, now - since, total);
    return sg_fail(err, "ledger spool: %s", e ? strerror(e) : "short write");
}

/* The frames waiting in `deferred` out in one write (append_mu held); only_id: the
 * record's id when the frames are that one record's (for a loss's log line). */
static int flush_deferred_locked(ledger *l, const char *only_id, sg_error *err) {
    if (!l->n_deferred) return 0;
    int rc = write_frames(l, l->deferred.data, l->deferred.len, l->n_deferred, l->n_deferred == 1 ? only_id : NULL, err);
    l->n_deferred = 0;
    sg_buf_reset(&l->deferred);
    return rc;
}

int ledger_append(ledger *l, const ledger_record *r, sg_error *err) {
    if (!r->request_id || !*r->request_id) return sg_fail(err, "ledger: a record without a request id");
    pthread_mutex_lock(&l->append_mu);
    ledger_frame_encode(r, &l->deferred);   /* after any deferred ones: the spool keeps the order */
    l->n_deferred++;
    int rc = flush_deferred_locked(l, r->request_id, err);
    pthread_mutex_unlock(&l->append_mu);
    return rc;
}

void ledger_append_deferred(ledger *l, const ledger_record *r) {
    if (!r->request_id || !*r->request_id) {
        SG_ERROR("ledger: a record without a request id");
        return;
    }
    pthread_mutex_lock(&l->append_mu);
    ledger_frame_encode(r, &l->deferred);
    l->n_deferred++;
    sg_error err;
    if (l->deferred.len >= LEDGER_DEFER_BYTES) flush_deferred_locked(l, NULL, &err);   /* a loss is logged there */
    pthread_mutex_unlock(&l->append_mu);
}

int ledger_flush_appends(ledger *l, sg_error *err) {
    if (!l) return 0;
    pthread_mutex_lock(&l->append_mu);
    int rc = flush_deferred_locked(l, NULL, err);
    pthread_mutex_unlock(&l->append_mu);
    return rc;
}

/* ---- the writer thread ----------------------------------------------------------------- */

static void write_checkpoint(segment *s) {
    if (s->ckfd < 0) s->ckfd = open(s->ckpt_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->ckfd < 0) return;   /* re-delivery after a crash is harmless: the key dedupes */
    char b[24];
    snprintf(b, sizeof b, "%020" PRIu64 "\n", s->delivered);
    if (pwrite(s->ckfd, b, 21, 0) != 21) { /* same: at worst a re-delivery */ }
}

static uint64_t read_checkpoint(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char b[32] = {0};
    ssize_t n = read(fd, b, sizeof b - 1);
    close(fd);
    if (n != 21 || b[20] != '\n') return 0;   /* torn or foreign: deliver from the start */
    return strtoull(b, NULL, 10);
}

/* Removes a sealed, delivered segment (mu held), and its group's lock when it was the last. */
static void segment_remove(ledger *l, segment *s) {
    segment **pp = &l->segs;
    while (*pp && *pp != s) pp = &(*pp)->next;
    if (*pp) *pp = s->next;
    unlink(s->path);
    unlink(s->ckpt_path);
    group *g = s->grp;
    if (l->rseg == s) l->rseg = NULL;   /* its bytes in rbuf are stale now */
    segment_free(s);
    if (g && --g->live == 0) {
        unlink(g->lock_path);
        close(g->lock_fd);
        group **gp = &l->groups;
        while (*gp && *gp != g) gp = &(*gp)->next;
        if (*gp) *gp = g->next;
        SG_INFO("ledger: delivered everything a previous process (%s) left in the spool", g->prefix);
        free(g->prefix);
        free(g->lock_path);
        free(g);
    }
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A segment's file name, "P-NNNNNN.seg" (format 2) or "P-NNNNNN.spool" (format 1): the
 * length of P, the sequence number and the format; 0 when name is not one. */
static int seg_name(const char *name, size_t *prefix_len, unsigned *seq) {
    size_t len = strlen(name), tail;
    int format;
    if (len > 4 && !strcmp(name + len - 4, ".seg")) { tail = 11; format = 2; }
    else if (len > 6 && !strcmp(name + len - 6, ".spool")) { tail = 13; format = 1; }
    else return 0;
    if (len <= tail || name[len - tail] != '-') return 0;
    for (size_t i = len - tail + 1; i < len - tail + 7; i++)
        if (name[i] < '0' || name[i] > '9') return 0;
    *prefix_len = len - tail;
    *seq = (unsigned)strtoul(name + len - tail + 1, NULL, 10);
    return format;
}

/* Adopts the segments of spool prefixes whose owner is gone (writer thread; takes mu to
 * publish them). */
static void adopt_orphans(ledger *l) {
    DIR *d = opendir(l->o.spool_dir);
    if (!d) return;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name), pl;
        unsigned seq;
        if (len < 7 || strncmp(e->d_name, "sg-", 3)) continue;
        if (!(len > 5 && !strcmp(e->d_name + len - 5, ".lock")) && !seg_name(e->d_name, &pl, &seq)) continue;
        if (n == cap) { cap = cap ? cap * 2 : 32; names = sg_xrealloc(names, cap * sizeof *names); }
        names[n++] = sg_xstrdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        /* the prefix: "P.lock" or "P-NNNNNN.spool" */
        char prefix[256];
        size_t len = strlen(names[i]), pl;
        unsigned seq;
        if (!strcmp(names[i] + len - 5, ".lock")) snprintf(prefix, sizeof prefix, "%.*s", (int)(len - 5), names[i]);
        else if (seg_name(names[i], &pl, &seq)) snprintf(prefix, sizeof prefix, "%.*s", (int)pl, names[i]);
        else continue;
        if (!strcmp(prefix, l->prefix) || (i > 0 && !strncmp(names[i - 1], prefix, strlen(prefix)) &&
                                           (names[i - 1][strlen(prefix)] == '-' || names[i - 1][strlen(prefix)] == '.')))
            continue;   /* ours, or this prefix was seen on the previous name */
        bool known = false;
        pthread_mutex_lock(&l->mu);
        for (group *g = l->groups; g && !known; g = g->next) known = !strcmp(g->prefix, prefix);
        pthread_mutex_unlock(&l->mu);
        if (known) continue;
        char lname[300];
        snprintf(lname, sizeof lname, "%s.lock", prefix);
        char *lock_path = path_join(l->o.spool_dir, lname);
        int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) {   /* alive (or being adopted) */
            if (fd >= 0) close(fd);
            free(lock_path);
            continue;
        }
        group *g = sg_xcalloc(1, sizeof *g);
        g->prefix = sg_xstrdup(prefix);
        g->lock_path = lock_path;
        g->lock_fd = fd;
        uint64_t bytes = 0;
        segment *list = NULL, **tail = &list;
        for (size_t k = 0; k < n; k++) {
            size_t kpl;
            unsigned kseq;
            int format = seg_name(names[k], &kpl, &kseq);
            if (!format || kpl != strlen(prefix) || strncmp(names[k], prefix, kpl)) continue;
            segment *s = segment_new(l->o.spool_dir, prefix, kseq, format);
            struct stat st;
            s->rfd = open(s->path, O_RDONLY | O_CLOEXEC);
            if (s->rfd < 0 || fstat(s->rfd, &st)) { segment_free(s); continue; }
            s->end = (uint64_t)st.st_size;
            s->delivered = read_checkpoint(s->ckpt_path);
            if (s->delivered > s->end) s->delivered = 0;
            s->sealed = true;
            s->grp = g;
            s->synced = s->end;
            bytes += s->end - s->delivered;
            g->live++;
            *tail = s;
            tail = &s->next;
        }
        if (!g->live) {   /* a lock without segments: an interrupted clean exit */
            unlink(g->lock_path);
            close(g->lock_fd);
            free(g->prefix);
            free(g->lock_path);
            free(g);
            continue;
        }
        pthread_mutex_lock(&l->mu);
        g->next = l->groups;
        l->groups = g;
        *tail = l->segs;   /* adopted segments go before our own: older records first */
        l->segs = list;
        pthread_mutex_unlock(&l->mu);
        SG_INFO("ledger: a previous process (%s) left %" PRIu64 " undelivered bytes in the spool: delivering them",
                prefix, bytes);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

static void db_down(ledger *l, const char *why) {
    int64_t now = mono_ms();
    if (l->db && !ledger_db_ok(l->db)) { ledger_db_close(l->db); l->db = NULL; }
    l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : l->o.retry_min_ms;
    if (l->backoff_ms > l->o.retry_max_ms) l->backoff_ms = l->o.retry_max_ms;
    l->next_retry_ms = now + l->backoff_ms;
    pthread_mutex_lock(&l->mu);
    l->st.db_failures++;
    l->st.db_connected = l->db != NULL;
    pthread_mutex_unlock(&l->mu);
    if (now - l->last_fail_log_ms >= 10000 || l->backoff_ms == l->o.retry_min_ms) {
        SG_WARN("ledger: %s; records stay in the spool, retrying in %u ms", why, l->backoff_ms);
        l->last_fail_log_ms = now;
    }
}

static bool db_ready(ledger *l) {
    if (l->db) return true;
    sg_error err;
    const char *target = l->o.kind == GW_LEDGER_POSTGRES ? l->o.postgres_url : l->o.sqlite_path;
    l->db = ledger_db_open(l->o.kind, target, false, &err);
    if (!l->db) { db_down(l, err.msg); return false; }
    if (l->backoff_ms) SG_INFO("ledger: the database answers again; delivering the spool");
    l->backoff_ms = 0;
    pthread_mutex_lock(&l->mu);
    l->st.db_connected = true;
    pthread_mutex_unlock(&l->mu);
    return true;
}

/* The first segment with bytes to deliver, and its end (mu held). */
static segment *next_work(ledger *l, uint64_t *end, bool *sealed) {
    for (segment *s = l->segs; s; s = s->next) {
        if (s->delivered < s->end || s->sealed) {   /* sealed and delivered: to remove */
            *end = s->end;
            *sealed = s->sealed;
            return s;
        }
    }
    return NULL;
}

/* A batch the database refuses because of its data (never expected: records are made by
 * ledger_append): inserts the records one by one and moves those refused on their own to
 * spool_dir/rejected.jsonl (as JSON lines, ledger_record_json), so that one bad record
 * cannot hold up the ledger. Returns the records added, or -1 when the database itself
 * fails meanwhile. */
static int64_t isolate(ledger *l, segment *s, size_t n, sg_error *err) {
    int64_t added = 0;
    sg_buf line;
    sg_buf_init(&line);
    for (size_t i = 0; i < n; i++) {
        int64_t k = ledger_db_insert(l->db, &l->b.recs[i], 1, err);
        if (k >= 0) { added += k; continue; }
        if (!ledger_db_failure_is_data(l->db)) { added = -1; break; }
        char *path = path_join(l->o.spool_dir, "rejected.jsonl");
        sg_buf_reset(&line);
        ledger_record_json(&l->b.recs[i], &line);
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        bool kept = fd >= 0 && write(fd, line.data, line.len) == (ssize_t)line.len;
        if (fd >= 0) close(fd);
        SG_ERROR("ledger: the database refuses record %s from %s (%s); %s %s", l->b.recs[i].request_id, s->path, err->msg,
                 kept ? "kept in" : "COULD NOT BE KEPT in", path);
        free(path);
        pthread_mutex_lock(&l->mu);
        l->st.rejected++;
        pthread_mutex_unlock(&l->mu);
    }
    sg_buf_free(&line);
    return added;
}

/* Room in the batch for one more record and its attempts. */
static void batch_room(batch *b) {
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->recs = sg_xrealloc(b->recs, b->cap * sizeof *b->recs);
        b->roots = sg_xrealloc(b->roots, b->cap * sizeof *b->roots);
        b->att_first = sg_xrealloc(b->att_first, b->cap * sizeof *b->att_first);
    }
    if (b->n_atts + LEDGER_MAX_ATTEMPTS > b->cap_atts) {
        b->cap_atts = b->cap_atts ? b->cap_atts * 2 : 1024;
        b->atts = sg_xrealloc(b->atts, b->cap_atts * sizeof *b->atts);
    }
}

/* s's bytes from s->delivered (up to end, READ_CHUNK at most) in rbuf: what the last batch
 * left unread is kept, and the file is read again only when fewer than REFILL bytes of it
 * are held, so each byte is read (and moved) about once. -1 when the file cannot be read. */
static int fill(ledger *l, segment *s, uint64_t end, const char **buf, size_t *len) {
    uint64_t off = s->delivered;
    if (l->rseg != s || off < l->rbase || off > l->rbase + l->rbuf.len) {
        l->rseg = s;
        l->rbase = off;
        l->rbuf.len = 0;
    }
    uint64_t have_end = l->rbase + l->rbuf.len;
    uint64_t want_end = end - off > READ_CHUNK ? off + READ_CHUNK : end;
    if (have_end < want_end && have_end - off < REFILL) {
        size_t keep = (size_t)(have_end - off);
        if (off > l->rbase) memmove(l->rbuf.data, l->rbuf.data + (off - l->rbase), keep);
        l->rbase = off;
        l->rbuf.len = keep;
        size_t want = (size_t)(want_end - have_end);
        sg_buf_reserve(&l->rbuf, want);
        ssize_t got = pread(s->rfd, l->rbuf.data + keep, want, (off_t)have_end);
        if (got <= 0 && keep == 0) {
            if (got == 0) errno = ENODATA;   /* shorter than it was */
            l->rseg = NULL;
            return -1;
        }
        if (got > 0) l->rbuf.len += (size_t)got;
    }
    *buf = l->rbuf.data + (off - l->rbase);
    *len = (size_t)(l->rbase + l->rbuf.len - off);
    return 0;
}

/* Format 1: whole JSON lines of buf into the batch. Returns the bytes consumed; counts
 * lines (*lines) and those that did not parse (*malformed). */
static size_t parse_lines(ledger *l, const char *buf, size_t len, bool at_end, size_t *lines, size_t *malformed) {
    batch *b = &l->b;
    size_t pos = 0;
    while (pos < len && b->n < l->o.batch_max) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl) {
            if (pos == 0 && len >= REFILL) {   /* no newline where a whole record would fit */
                pos = len;
                (*malformed)++;
                (*lines)++;
            }
            break;
        }
        size_t ll = (size_t)(nl - (buf + pos));
        batch_room(b);
        json_t *root = NULL;
        if (ledger_frame_parse_json(buf + pos, ll, &root, &b->recs[b->n], b->atts + b->n_atts) == 0) {
            b->roots[b->n] = root;
            b->att_first[b->n] = b->n_atts;
            b->n_atts += b->recs[b->n].n_attempts;
            b->n++;
        } else {
            json_decref(root);
            (*malformed)++;
        }
        (*lines)++;
        pos += ll + 1;
    }
    if (at_end && b->n < l->o.batch_max && pos < len && !memchr(buf + pos, '\n', len - pos)) {
        pos = len;   /* the torn tail of a sealed segment */
        (*malformed)++;
    }
    return pos;
}

/* Format 2: whole frames of buf into the batch (records point into buf). more: bytes of
 * the segment follow buf; at_end: buf ends the sealed segment (a frame cut there is
 * torn). Returns the bytes consumed; counts records and damaged stretches as above. */
static size_t parse_frames(ledger *l, const char *buf, size_t len, bool more, bool at_end, size_t *recs,
                           size_t *malformed) {
    batch *b = &l->b;
    size_t pos = 0;
    while (pos < len && b->n < l->o.batch_max) {
        batch_room(b);
        size_t used = 0;
        int rc = ledger_frame_decode(buf + pos, len - pos, &b->recs[b->n], b->atts + b->n_atts, &used);
        if (rc > 0) {
            b->roots[b->n] = NULL;
            b->att_first[b->n] = b->n_atts;
            b->n_atts += b->recs[b->n].n_attempts;
            b->n++;
            (*recs)++;
            pos += used;
            continue;
        }
        if (rc == 0) {   /* a frame not whole in buf */
            if (!more && at_end) {
                pos = len;   /* torn: the writer died (or the disk filled) mid-record */
                (*malformed)++;
                (*recs)++;
            }
            break;
        }
        pos += ledger_frame_resync(buf + pos, len - pos);   /* damaged: skip to the next good frame */
        (*malformed)++;
        (*recs)++;
    }
    return pos;
}

/* Delivers up to batch_max records of s from s->delivered. 1 when something was
 * delivered or skipped, 0 when nothing to do, -1 on a database failure. */
static int deliver(ledger *l, segment *s, uint64_t end, bool sealed) {
    if (s->delivered >= end) {
        if (sealed) { pthread_mutex_lock(&l->mu); segment_remove(l, s); pthread_mutex_unlock(&l->mu); return 1; }
        return 0;
    }
    const char *buf;
    size_t len;
    if (fill(l, s, end, &buf, &len)) {
        SG_ERROR("ledger spool: reading %s: %s; skipping the segment", s->path, strerror(errno));
        s->delivered = end;
        return 1;
    }
    bool more = s->delivered + len < end;
    size_t n = 0, malformed = 0, counted = 0;
    batch *b = &l->b;
    b->n = b->n_atts = 0;
    size_t pos = s->format == 1 ? parse_lines(l, buf, len, sealed && !more, &counted, &malformed)
                                : parse_frames(l, buf, len, more, sealed, &counted, &malformed);
    n = b->n;
    for (size_t i = 0; i < n; i++) b->recs[i].attempts = b->atts + b->att_first[i];
    int rc = 1;
    if (n) {
        sg_error err;
        int64_t added = ledger_db_insert(l->db, b->recs, n, &err);
        if (added < 0 && ledger_db_failure_is_data(l->db)) added = isolate(l, s, n, &err);
        if (added < 0) {
            /* these records now wait in the spool: make them survive a power loss too */
            if (s->synced < end) { fdatasync(s->rfd); s->synced = end; }
            db_down(l, err.msg);
            rc = -1;
        } else {
            pthread_mutex_lock(&l->mu);
            l->st.delivered += n;
            l->st.duplicates += n - (uint64_t)added;
            l->st.batches++;
            pthread_mutex_unlock(&l->mu);
        }
    }
    if (rc == 1) {
        s->delivered += pos;
        write_checkpoint(s);
        l->last_delivery_ms = mono_ms();
        pthread_mutex_lock(&l->mu);
        l->st.malformed += malformed;
        if (s->own) {
            l->delivered_own += counted;
            pthread_cond_broadcast(&l->done);
        }
        pthread_mutex_unlock(&l->mu);
        if (malformed) SG_WARN("ledger spool: %zu damaged record(s) in %s skipped", malformed, s->path);
    }
    for (size_t i = 0; i < n; i++)
        if (b->roots[i]) json_decref(b->roots[i]);
    return rc;
}

static void *writer_main(void *arg) {
    ledger *l = arg;
    l->next_adopt_ms = 0;
    l->last_delivery_ms = mono_ms();
    pthread_mutex_lock(&l->mu);
    for (;;) {
        int64_t now = mono_ms();
        if (now >= l->next_adopt_ms && !l->stopping) {
            l->next_adopt_ms = now + l->o.adopt_every_ms;
            pthread_mutex_unlock(&l->mu);
            adopt_orphans(l);
            pthread_mutex_lock(&l->mu);
            continue;
        }
        uint64_t end = 0;
        bool sealed = false;
        segment *s = next_work(l, &end, &sealed);
        if (l->stopping && (!s || now >= l->close_deadline_ms)) break;
        int64_t wake_at = l->next_adopt_ms;
        if (s) {
            bool urgent = l->stopping || l->flush_waiters > 0 || sealed ||
                          l->appended - l->delivered_own >= l->o.batch_max;
            int64_t due = urgent ? now : l->last_delivery_ms + l->o.flush_ms;
            if (!l->db && l->next_retry_ms > due) due = l->next_retry_ms;
            if (l->stopping && due > l->close_deadline_ms) due = l->close_deadline_ms;
            if (due <= now) {
                pthread_mutex_unlock(&l->mu);
                if (db_ready(l)) {
                    if (deliver(l, s, end, sealed) == 0) l->last_delivery_ms = mono_ms();
                } else if (l->stopping && l->next_retry_ms > l->close_deadline_ms) {
                    pthread_mutex_lock(&l->mu);
                    break;   /* the database will not be back in time: leave it spooled */
                }
                pthread_mutex_lock(&l->mu);
                continue;
            }
            if (due < wake_at) wake_at = due;
        } else {
            l->last_delivery_ms = now;   /* idle: the next record waits at most flush_ms */
        }
        if (l->stopping && l->close_deadline_ms < wake_at) wake_at = l->close_deadline_ms;
        if (l->lost_unlogged) {   /* losses since the last line: summarised once the interval is over */
            uint64_t n, total;
            if (take_loss_report(l, now, false, &n, &total)) {
                pthread_mutex_unlock(&l->mu);
                log_losses_since(l, n, total);
                pthread_mutex_lock(&l->mu);
                continue;
            }
            int64_t due = l->loss_logged_ms + (int64_t)l->o.loss_log_ms;
            if (due < wake_at) wake_at = due;
        }
        struct timespec ts;
        deadline_ts(&ts, wake_at);
        pthread_cond_timedwait(&l->wake, &l->mu, &ts);
    }
    pthread_mutex_unlock(&l->mu);
    ledger_db_close(l->db);
    l->db = NULL;
    return NULL;
}

/* ---- open, flush, close ------------------------------------------------------------------ */

static int make_dir(const char *path, sg_error *err) {
    if (mkdir(path, 0755) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
        return sg_fail(err, "ledger spool: %s is not a folder", path);
    }
    return sg_fail(err, "ledger spool: cannot create %s: %s", path, strerror(errno));
}

ledger *ledger_open(const ledger_opts *o, sg_error *err) {
    ledger *l = sg_xcalloc(1, sizeof *l);
    ledger_opts d;
    ledger_opts_defaults(&d);
    l->o = *o;
    if (!l->o.sqlite_path) l->o.sqlite_path = d.sqlite_path;
    if (!l->o.spool_dir) l->o.spool_dir = d.spool_dir;
    if (!l->o.flush_ms) l->o.flush_ms = d.flush_ms;
    if (!l->o.batch_max) l->o.batch_max = d.batch_max;
    if (!l->o.loss_log_ms) l->o.loss_log_ms = d.loss_log_ms;
    if (!l->o.segment_bytes) l->o.segment_bytes = d.segment_bytes;
    if (!l->o.retry_min_ms) l->o.retry_min_ms = d.retry_min_ms;
    if (!l->o.retry_max_ms) l->o.retry_max_ms = d.retry_max_ms;
    if (!l->o.adopt_every_ms) l->o.adopt_every_ms = d.adopt_every_ms;
    l->o.sqlite_path = sg_xstrdup(l->o.sqlite_path);
    l->o.spool_dir = sg_xstrdup(l->o.spool_dir);
    l->o.postgres_url = o->postgres_url ? sg_xstrdup(o->postgres_url) : NULL;
    l->lock_fd = -1;
    l->wfd = -1;
    pthread_mutex_init(&l->append_mu, NULL);
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->wake, &ca);
    pthread_cond_init(&l->done, &ca);
    pthread_condattr_destroy(&ca);
    sg_buf_init(&l->deferred);
    sg_buf_init(&l->rbuf);

    if (l->o.kind == GW_LEDGER_POSTGRES && !l->o.postgres_url) { sg_fail(err, "ledger: postgres without a URL"); goto fail; }
    if (make_dir(l->o.spool_dir, err)) goto fail;
    if (l->o.kind == GW_LEDGER_SQLITE) {   /* a wrong path fails now, not in the background */
        l->db = ledger_db_open(GW_LEDGER_SQLITE, l->o.sqlite_path, false, err);
        if (!l->db) goto fail;
        l->st.db_connected = true;
    }
    /* this process's prefix and lock */
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) rnd = (uint32_t)wall_ms() ^ (uint32_t)(uintptr_t)l;
    char prefix[96], tmp[128];
    snprintf(prefix, sizeof prefix, "sg-%" PRId64 "-%d-%08x", wall_ms() / 1000, (int)getpid(), rnd);
    l->prefix = sg_xstrdup(prefix);
    snprintf(tmp, sizeof tmp, "%s.lock", prefix);
    l->lock_path = path_join(l->o.spool_dir, tmp);
    snprintf(tmp, sizeof tmp, "%s.lock.tmp", prefix);
    char *tmp_path = path_join(l->o.spool_dir, tmp);
    l->lock_fd = open(tmp_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (l->lock_fd < 0 || flock(l->lock_fd, LOCK_EX | LOCK_NB) || rename(tmp_path, l->lock_path)) {
        sg_fail(err, "ledger spool: %s: %s", tmp_path, strerror(errno));
        unlink(tmp_path);
        free(tmp_path);
        goto fail;
    }
    free(tmp_path);
    if (rotate(l, err)) goto fail;
    if (pthread_create(&l->writer, NULL, writer_main, l)) { sg_fail(err, "ledger: cannot start the writer thread"); goto fail; }
    l->writer_started = true;
    return l;
fail:
    ledger_close(l, 0);
    return NULL;
}

int ledger_flush(ledger *l, uint32_t timeout_ms) {
    sg_error err;
    ledger_flush_appends(l, &err);   /* a loss is counted and logged there */
    int64_t deadline = mono_ms() + timeout_ms;
    struct timespec ts;
    deadline_ts(&ts, deadline);
    pthread_mutex_lock(&l->mu);
    uint64_t target = l->appended;
    l->flush_waiters++;
    pthread_cond_signal(&l->wake);
    int rc = 0;
    while (l->delivered_own < target) {
        if (pthread_cond_timedwait(&l->done, &l->mu, &ts) == ETIMEDOUT && l->delivered_own < target) { rc = -1; break; }
    }
    l->flush_waiters--;
    pthread_mutex_unlock(&l->mu);
    return rc;
}

void ledger_close(ledger *l, uint32_t timeout_ms) {
    if (!l) return;
    sg_error err;
    ledger_flush_appends(l, &err);
    if (l->writer_started) {
        pthread_mutex_lock(&l->mu);
        l->stopping = true;
        l->close_deadline_ms = mono_ms() + timeout_ms;
        pthread_cond_signal(&l->wake);
        pthread_mutex_unlock(&l->mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);   /* pthread_timedjoin_np takes CLOCK_REALTIME */
        ts.tv_sec += (timeout_ms + 5000) / 1000;
        if (pthread_timedjoin_np(l->writer, NULL, &ts) != 0) {
            /* stuck in a database call: leave it (the process is exiting); the spool keeps
             * every record for the next start */
            SG_ERROR("ledger: the writer did not stop within %u ms; undelivered records stay in the spool", timeout_ms + 5000);
            pthread_detach(l->writer);
            return;
        }
    }
    uint64_t pending = l->appended - l->delivered_own;
    uint64_t lost, lost_total;
    if (take_loss_report(l, mono_ms(), true, &lost, &lost_total)) log_losses_since(l, lost, lost_total);
    if (l->wfd >= 0) close(l->wfd);
    /* own segments: removed when delivered; else left for the next start */
    bool all = true;
    for (segment *s = l->segs, *next; s; s = next) {
        next = s->next;
        if (s->own && s->delivered >= s->end) { unlink(s->path); unlink(s->ckpt_path); }
        else all = false;
        segment_free(s);
    }
    for (group *g = l->groups, *next; g; g = next) {
        next = g->next;
        close(g->lock_fd);
        free(g->prefix);
        free(g->lock_path);
        free(g);
    }
    if (l->lock_fd >= 0) {
        if (all && l->lock_path) unlink(l->lock_path);
        close(l->lock_fd);
    }
    if (pending && l->writer_started)
        SG_WARN("ledger: %" PRIu64 " record(s) not delivered at exit stay in %s for the next start", pending, l->o.spool_dir);
    ledger_db_close(l->db);
    sg_buf_free(&l->deferred);
    sg_buf_free(&l->rbuf);
    free(l->b.recs);
    free(l->b.roots);
    free(l->b.att_first);
    free(l->b.atts);
    pthread_mutex_destroy(&l->append_mu);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->wake);
    pthread_cond_destroy(&l->done);
    free((char *)l->o.sqlite_path);
    free((char *)l->o.spool_dir);
    if (l->o.postgres_url) {   /* a secret: wiped */
        volatile char *p = (volatile char *)l->o.postgres_url;
        while (*p) *p++ = 0;
        free((char *)l->o.postgres_url);
    }
    free(l->prefix);
    free(l->lock_path);
    free(l);
}

void ledger_get_stats(ledger *l, ledger_stats *s) {
    pthread_mutex_lock(&l->mu);
    *s = l->st;
    s->pending = l->appended - l->delivered_own;
    pthread_mutex_unlock(&l->mu);
}

/* ---- usage queries on worker threads ------------------------------------------------------ */

static atomic_int g_usage_running;

typedef struct usage_job {
    gw_ledger_kind kind;
    char *target;
    char *query;
    char *only_key;                  /* NULL: every key */
    ledger_usage_fn done;
    void *arg;
} usage_job;

static void *usage_main(void *arg) {
    usage_job *j = arg;
    sg_buf body;
    sg_buf_init(&body);
    int status = usage_http(j->kind, j->target, j->query, j->only_key, &body);
    j->done(j->arg, status, body.data ? body.data : "", body.len);
    sg_buf_free(&body);
    if (j->target) { volatile char *p = (volatile char *)j->target; while (*p) *p++ = 0; }
    free(j->target);
    free(j->query);
    free(j->only_key);
    free(j);
    atomic_fetch_sub(&g_usage_running, 1);
    return NULL;
}

int ledger_usage_async(ledger *l, const char *query, const char *only_key, ledger_usage_fn done, void *arg) {
    if (atomic_fetch_add(&g_usage_running, 1) >= 4) { atomic_fetch_sub(&g_usage_running, 1); return -1; }
    usage_job *j = sg_xcalloc(1, sizeof *j);
    j->kind = l->o.kind;
    const char *t = l->o.kind == GW_LEDGER_POSTGRES ? l->o.postgres_url : l->o.sqlite_path;
    j->target = t ? sg_xstrdup(t) : NULL;
    j->query = sg_xstrdup(query ? query : "");
    j->only_key = only_key ? sg_xstrdup(only_key) : NULL;
    j->done = done;
    j->arg = arg;
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &at, usage_main, j);
    pthread_attr_destroy(&at);
    if (rc) {
        free(j->target);
        free(j->query);
        free(j->only_key);
        free(j);
        atomic_fetch_sub(&g_usage_running, 1);
        return -1;
    }
    return 0;
}
