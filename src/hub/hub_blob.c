/* hub_blob.c: one verified, resumable, atomic download (hub_blob.h). */
#include "hub/hub_blob.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "hub/hub_progress.h"

#define RETRIES 5                   /* resumed attempts after a dropped connection */
#define WRITEBACK_EVERY (32 << 20)  /* bytes: start writing to disk as we go, so the final
                                       fsync has little left to wait for */

hub_digest hub_digest_of_etag(const char *e) {
    size_t n = strlen(e);
    if (n != 64 && n != 40) return HUB_DIGEST_NONE;
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdef", e[i])) return HUB_DIGEST_NONE;
    return n == 64 ? HUB_DIGEST_SHA256 : HUB_DIGEST_GIT_SHA1;
}

int hub_mkdirs(const char *dir, sg_error *err) {
    char *p = sg_xstrdup(dir);
    for (char *s = p + 1;; s++) {
        if (*s == '/' || !*s) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0755) && errno != EEXIST) {
                int e = errno;
                free(p);
                return sg_fail(err, "mkdir %s: %s", dir, strerror(e));
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    return 0;
}

/* The state of one attempt, shared with the HTTP sink. */
typedef struct dl {
    const hub_blob_req *q;
    int fd;
    EVP_MD_CTX *md;
    int64_t have;        /* bytes in the .incomplete file */
    int64_t size;        /* expected total, -1 unknown */
    hub_progress prog;
    int restarted;       /* the server ignored Range: started over */
    int64_t fetched;     /* bytes received by this process */
    int64_t synced;      /* writeback started up to here */
    sg_error *err;
} dl;

static void digest_begin(dl *d, int64_t size) {
    EVP_DigestInit_ex(d->md, d->q->digest == HUB_DIGEST_GIT_SHA1 ? EVP_sha1() : EVP_sha256(), NULL);
    if (d->q->digest == HUB_DIGEST_GIT_SHA1) {   /* git hashes a header with the size first */
        char hdr[40];
        int n = snprintf(hdr, sizeof hdr, "blob %lld", (long long)size);
        EVP_DigestUpdate(d->md, hdr, (size_t)n + 1);
    }
}

static int write_all(dl *d, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = write(d->fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return sg_fail(d->err, "writing %s.incomplete: %s", d->q->path, strerror(errno));
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Hashes the bytes a previous attempt left, so that the digest covers the whole file. */
static int hash_prefix(dl *d) {
    static char buf[1 << 20];
    if (lseek(d->fd, 0, SEEK_SET) < 0) return sg_fail(d->err, "seek: %s", strerror(errno));
    int64_t left = d->have;
    while (left > 0) {
        ssize_t r = read(d->fd, buf, left < (int64_t)sizeof buf ? (size_t)left : sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return sg_fail(d->err, "reading %s.incomplete: %s", d->q->path, r ? strerror(errno) : "short");
        EVP_DigestUpdate(d->md, buf, (size_t)r);
        left -= r;
    }
    return 0;
}

static int truncate_to_zero(dl *d) {
    if (ftruncate(d->fd, 0) || lseek(d->fd, 0, SEEK_SET) < 0)
        return sg_fail(d->err, "truncating %s.incomplete: %s", d->q->path, strerror(errno));
    d->have = d->synced = 0;
    return 0;
}

static int sink_start(void *ctx, const hub_http_resp *r) {
    dl *d = ctx;
    if (d->size < 0 && r->length >= 0) d->size = (r->status == 206 ? r->range_start : 0) + r->length;
    if (r->status == 206 && r->range_start == d->have) return 0;   /* resumed where we were */
    if (r->status == 206) return sg_fail(d->err, "%s: server resumed at byte %lld, not %lld",
                                         d->q->label, (long long)r->range_start, (long long)d->have);
    /* 200: the whole file from byte 0, whether or not we asked for a range */
    if (d->have > 0) { d->restarted = 1; hub_progress_restart(&d->prog); }
    if (truncate_to_zero(d)) return -1;
    if (d->size < 0 && d->q->digest == HUB_DIGEST_GIT_SHA1)
        return sg_fail(d->err, "%s: no Content-Length to check the git digest against", d->q->label);
    digest_begin(d, d->size);
    return 0;
}

static int sink_data(void *ctx, const void *p, size_t n) {
    dl *d = ctx;
    if (d->size >= 0 && d->have + (int64_t)n > d->size)
        return sg_fail(d->err, "%s: server sent more than the announced %lld bytes", d->q->label, (long long)d->size);
    if (write_all(d, p, n)) return -1;
    EVP_DigestUpdate(d->md, p, n);
    d->have += (int64_t)n;
    d->fetched += (int64_t)n;
    if (d->have - d->synced >= WRITEBACK_EVERY) {
        sync_file_range(d->fd, d->synced, d->have - d->synced, SYNC_FILE_RANGE_WRITE);
        d->synced = d->have;
    }
    hub_progress_add(&d->prog, n);
    return 0;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static int fsync_dir_of(const char *path) {
    char *p = sg_xstrdup(path);
    int fd = open(dirname(p), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(p);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Downloads into the open .incomplete file, retrying dropped connections with Range. */
static int download(dl *d) {
    const hub_blob_req *q = d->q;
    hub_http_sink sink = {sink_start, sink_data, d};
    int fresh_retry_left = 1;   /* a resumed file that fails its digest gets one clean try */
    for (int attempt = 0;; attempt++) {
        struct stat st;
        if (fstat(d->fd, &st)) return sg_fail(d->err, "stat: %s", strerror(errno));
        d->have = d->synced = st.st_size;
        d->restarted = 0;
        if (d->size >= 0 && d->have > d->size) { if (truncate_to_zero(d)) return -1; }
        /* a git digest starts with the size: resume only when it is known */
        if (d->have > 0 && d->size < 0 && q->digest == HUB_DIGEST_GIT_SHA1) { if (truncate_to_zero(d)) return -1; }
        int64_t resumed = d->have;
        digest_begin(d, d->size);
        if (hash_prefix(d)) return -1;
        if (attempt == 0) hub_progress_begin(&d->prog, q->progress, q->tty, q->label, d->size, d->have);
        else d->prog.done = d->have;

        int rc = 0;
        if (d->size < 0 || d->have < d->size) {
            hub_http_resp r = {0};
            sg_error herr = {{0}};
            rc = hub_http_download(q->url, q->auth, d->have, &sink, &r, &herr);
            long status = r.status;
            int transport = r.transport;
            hub_http_resp_free(&r);
            if (rc && d->err->msg[0] == 0) *d->err = herr;
            if (rc && status == 416 && d->have > 0) {   /* our partial file is not a prefix of theirs */
                if (truncate_to_zero(d)) return -1;
                d->err->msg[0] = 0;
                continue;
            }
            if (rc && (transport || status >= 500) && attempt < RETRIES) {
                double wait = 0.5 * (1 << attempt);
                if (q->progress) {
                    if (q->tty) fputc('\n', q->progress);
                    const char *why = strrchr(herr.msg, ':');   /* curl's reason, after the URL */
                    char at[32];
                    hub_format_bytes((double)d->have, at, sizeof at);
                    fprintf(q->progress, "  %s: connection lost at %s (%s); resuming in %.1f s\n", q->label, at,
                            why ? why + 2 : herr.msg, wait);
                }
                d->err->msg[0] = 0;
                sleep_s(wait);
                continue;
            }
            if (rc) { hub_progress_end(&d->prog, 0); return -1; }
        }
        if (d->size >= 0 && d->have != d->size) {
            hub_progress_end(&d->prog, 0);
            return sg_fail(d->err, "%s: got %lld bytes, expected %lld", q->label, (long long)d->have, (long long)d->size);
        }
        if (q->digest != HUB_DIGEST_NONE) {
            unsigned char md[EVP_MAX_MD_SIZE];
            unsigned mdlen = 0;
            EVP_DigestFinal_ex(d->md, md, &mdlen);
            char hex[2 * EVP_MAX_MD_SIZE + 1];
            for (unsigned i = 0; i < mdlen; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
            if (strcmp(hex, q->hex)) {
                if (truncate_to_zero(d)) return -1;
                if (resumed > 0 && !d->restarted && fresh_retry_left--) continue;
                hub_progress_end(&d->prog, 0);
                return sg_fail(d->err, "%s: checksum mismatch (expected %s %s, got %s); the download was deleted",
                               q->label, q->digest == HUB_DIGEST_SHA256 ? "sha256" : "git sha1", q->hex, hex);
            }
        }
        hub_progress_end(&d->prog, 1);
        return 0;
    }
}

int hub_blob_fetch(const hub_blob_req *q, int64_t *fetched, sg_error *err) {
    *fetched = 0;
    char *ldir = sg_xstrdup(q->lock_path), *bdir = sg_xstrdup(q->path);
    int rc = hub_mkdirs(dirname(ldir), err) || hub_mkdirs(dirname(bdir), err) ? -1 : 0;
    free(ldir);
    free(bdir);
    if (rc) return -1;
    int lock = open(q->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock < 0) return sg_fail(err, "%s: %s", q->lock_path, strerror(errno));
    if (flock(lock, LOCK_EX | LOCK_NB)) {
        if (q->progress) { fprintf(q->progress, "  %s: another pull is fetching it; waiting\n", q->label); fflush(q->progress); }
        while (flock(lock, LOCK_EX) && errno == EINTR) {}
    }
    struct stat st;
    if (stat(q->path, &st) == 0) {   /* done by an earlier pull, or by the one we waited for */
        close(lock);
        return 0;
    }

    sg_buf inc;
    sg_buf_init(&inc);
    sg_buf_printf(&inc, "%s.incomplete", q->path);
    sg_error local = {{0}};
    dl d = {.q = q, .size = q->size, .err = err ? err : &local};
    d.err->msg[0] = 0;
    d.fd = open(inc.data, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (d.fd < 0) {
        rc = sg_fail(err, "%s: %s", inc.data, strerror(errno));
        goto out;
    }
    d.md = EVP_MD_CTX_new();
    rc = download(&d);
    *fetched = d.fetched;
    if (rc == 0 && fsync(d.fd)) rc = sg_fail(err, "fsync %s: %s", inc.data, strerror(errno));
    close(d.fd);
    EVP_MD_CTX_free(d.md);
    if (rc == 0) {
        if (rename(inc.data, q->path)) rc = sg_fail(err, "rename %s: %s", inc.data, strerror(errno));
        else fsync_dir_of(q->path);
    } else {
        /* keep a partial download to resume, but never bytes that failed verification */
        struct stat s2;
        if (stat(inc.data, &s2) == 0 && s2.st_size == 0) unlink(inc.data);
    }
out:
    sg_buf_free(&inc);
    close(lock);
    return rc;
}
