/* hub_store.c: the cache layouts on disk (hub_store.h). */
#include "hub/hub_store.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "hub/hub_blob.h"

#define SMALL_FILE_MAX (64u << 20)

void hub_strv_push(hub_strv *s, const char *str) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->v = sg_xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = sg_xstrdup(str);
}

void hub_strv_free(hub_strv *s) {
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
void hub_strv_sort(hub_strv *s) { if (s->n) qsort(s->v, s->n, sizeof *s->v, cmp_str); }

int hub_strv_has(const hub_strv *s, const char *str) {
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->v[i], str)) return 1;
    return 0;
}

char *hub_store_snapshot(const char *repo_dir) {
    sg_buf p;
    sg_buf_init(&p);
    sg_buf_printf(&p, "%s/refs/main", repo_dir);
    char *commit = hub_store_read(p.data, NULL);
    if (commit) {
        commit[strcspn(commit, " \r\n")] = 0;
        int plain = *commit != 0;   /* a commit is hex; never a path */
        for (const char *c = commit; *c; c++)
            if (!isalnum((unsigned char)*c)) plain = 0;
        sg_buf_reset(&p);
        sg_buf_printf(&p, "%s/snapshots/%s", repo_dir, commit);
        free(commit);
        struct stat st;
        if (plain && stat(p.data, &st) == 0 && S_ISDIR(st.st_mode)) return sg_buf_steal(&p);
    }
    /* no usable ref (e.g. fetched at a pinned commit): the newest snapshot */
    sg_buf_reset(&p);
    sg_buf_printf(&p, "%s/snapshots", repo_dir);
    DIR *d = opendir(p.data);
    char *best = NULL;
    time_t best_t = 0;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char *full = sg_xstrdup(p.data);
            size_t n = strlen(full);
            full = sg_xrealloc(full, n + strlen(e->d_name) + 2);
            sprintf(full + n, "/%s", e->d_name);
            struct stat st;
            if (stat(full, &st) == 0 && S_ISDIR(st.st_mode) && (!best || st.st_mtime > best_t)) {
                free(best);
                best = full;
                best_t = st.st_mtime;
            } else {
                free(full);
            }
        }
        closedir(d);
    }
    sg_buf_free(&p);
    return best;
}

static void files_under(const char *root, const char *rel, int depth, int complete_only, hub_strv *out) {
    sg_buf dir;
    sg_buf_init(&dir);
    sg_buf_printf(&dir, "%s%s%s", root, *rel ? "/" : "", rel);
    DIR *d = opendir(dir.data);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2]))) continue;
            sg_buf r, full;
            sg_buf_init(&r);
            sg_buf_init(&full);
            sg_buf_printf(&r, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
            sg_buf_printf(&full, "%s/%s", dir.data, e->d_name);
            struct stat lst, st;
            if (lstat(full.data, &lst) == 0) {
                if (S_ISDIR(lst.st_mode)) {
                    if (depth < 4) files_under(root, r.data, depth + 1, complete_only, out);
                } else if (!complete_only || (stat(full.data, &st) == 0 && S_ISREG(st.st_mode))) {
                    hub_strv_push(out, r.data);
                }
            }
            sg_buf_free(&r);
            sg_buf_free(&full);
        }
        closedir(d);
    }
    sg_buf_free(&dir);
}

void hub_store_files(const char *dir, int complete_only, hub_strv *out) {
    files_under(dir, "", 0, complete_only, out);
    hub_strv_sort(out);
}

int hub_store_link(const char *snapshot, const char *rel, const char *etag, sg_error *err) {
    sg_buf link, target, tmp;
    sg_buf_init(&link);
    sg_buf_init(&target);
    sg_buf_init(&tmp);
    sg_buf_printf(&link, "%s/%s", snapshot, rel);
    /* snapshots/COMMIT/a/b.gguf -> ../../../blobs/ETAG: one ".." per folder level */
    sg_buf_puts(&target, "../../");
    for (const char *s = rel; *s; s++)
        if (*s == '/') sg_buf_puts(&target, "../");
    sg_buf_printf(&target, "blobs/%s", etag);
    sg_buf_printf(&tmp, "%s.tmp.%ld", link.data, (long)getpid());
    int rc = 0;
    char *dir = sg_xstrdup(link.data);
    *strrchr(dir, '/') = 0;
    if (hub_mkdirs(dir, err)) rc = -1;
    free(dir);
    if (!rc) {
        unlink(tmp.data);
        if (symlink(target.data, tmp.data) || rename(tmp.data, link.data)) {
            rc = sg_fail(err, "linking %s: %s", link.data, strerror(errno));
            unlink(tmp.data);
        }
    }
    sg_buf_free(&link);
    sg_buf_free(&target);
    sg_buf_free(&tmp);
    return rc;
}

int hub_store_write(const char *path, const void *data, size_t n, sg_error *err) {
    sg_buf tmp;
    sg_buf_init(&tmp);
    sg_buf_printf(&tmp, "%s.tmp.%ld", path, (long)getpid());
    char *dir = sg_xstrdup(path);
    *strrchr(dir, '/') = 0;
    int rc = hub_mkdirs(dir, err);
    free(dir);
    if (!rc) {
        int fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, data, n) != (ssize_t)n || fsync(fd) || close(fd) || rename(tmp.data, path)) {
            rc = sg_fail(err, "writing %s: %s", path, strerror(errno));
            if (fd >= 0) close(fd);
            unlink(tmp.data);
        }
    }
    sg_buf_free(&tmp);
    return rc;
}

char *hub_store_read(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    sg_buf b;
    sg_buf_init(&b);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len < SMALL_FILE_MAX) sg_buf_append(&b, chunk, n);
    fclose(f);
    if (len) *len = b.len;
    return sg_buf_steal(&b);
}

static uint64_t *freed_acc;   /* nftw has no user pointer; rm runs on one thread at a time */
static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)ftw;
    if (flag == FTW_DP) return rmdir(path) ? -1 : 0;
    if (freed_acc && S_ISREG(st->st_mode)) *freed_acc += (uint64_t)st->st_size;
    return unlink(path) ? -1 : 0;
}

int hub_store_remove_tree(const char *path, uint64_t *freed) {
    static uint64_t sink;
    sink = 0;
    freed_acc = &sink;
    int rc = nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    freed_acc = NULL;
    if (freed) *freed += sink;
    return rc;
}

uint64_t hub_store_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
}

char *hub_store_ollama_manifest(const char *root, const char *repo, const char *tag) {
    sg_buf b;
    sg_buf_init(&b);
    sg_buf_printf(&b, "%s/manifests/%s/%s/%s", root, HUB_OLLAMA_HOST, repo, tag);
    return sg_buf_steal(&b);
}

char *hub_store_ollama_blob(const char *root, const char *digest) {
    if (strncmp(digest, "sha256:", 7) || hub_digest_of_etag(digest + 7) != HUB_DIGEST_SHA256) return NULL;
    sg_buf b;
    sg_buf_init(&b);
    sg_buf_printf(&b, "%s/blobs/sha256-%s", root, digest + 7);
    return sg_buf_steal(&b);
}
