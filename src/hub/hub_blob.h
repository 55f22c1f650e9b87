/* hub_blob.h: one file of a model, downloaded into a content-addressed store so that a
 * reader never sees half of it: bytes go to PATH.incomplete (resumed with a Range request
 * when a previous attempt left one), are checked against the digest the hub or registry
 * announced, fsync'd, then renamed to PATH. An exclusive flock on LOCK serialises
 * processes fetching the same blob: the second waits, then finds PATH there. */
#ifndef SG_HUB_BLOB_H
#define SG_HUB_BLOB_H

#include <stdint.h>
#include <stdio.h>

#include "common/error.h"
#include "hub/hub_http.h"

typedef enum {
    HUB_DIGEST_NONE,      /* nothing to check against */
    HUB_DIGEST_SHA256,    /* LFS files and registry blobs: sha256 of the bytes */
    HUB_DIGEST_GIT_SHA1,  /* small files in a git repository: sha1("blob SIZE\0" + bytes) */
} hub_digest;

/* The digest a hub ETag denotes: 64 hex digits sha256, 40 git's sha1, else none. */
hub_digest hub_digest_of_etag(const char *etag);

typedef struct hub_blob_req {
    const char *url;             /* where the bytes are */
    const hub_http_auth *auth;
    const char *path;            /* the finished blob */
    const char *lock_path;       /* created with its folder when missing, kept afterwards */
    hub_digest digest;
    const char *hex;             /* expected digest, lower-case hex */
    int64_t size;                /* expected bytes, -1 unknown */
    const char *label;           /* what progress lines call it */
    FILE *progress;              /* NULL: silent */
    int tty;
} hub_blob_req;

/* Makes q->path hold the verified bytes. *fetched: bytes downloaded by this call (0 when
 * the blob was there already, or another process finished it while this one waited).
 * A connection that drops or stalls is resumed a few times; a digest mismatch deletes the
 * download and fails, naming both digests. */
int hub_blob_fetch(const hub_blob_req *q, int64_t *fetched, sg_error *err);

/* mkdir -p. */
int hub_mkdirs(const char *dir, sg_error *err);

#endif
