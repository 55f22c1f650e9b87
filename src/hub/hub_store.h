/* hub_store.h: the two on-disk layouts a pull writes and `list` / `rm` / hub_resolve
 * read, and the file-system steps they share (inside the hub module only).
 *
 *   Hugging Face cache   models--OWNER--REPO/blobs/ETAG         the bytes (sha256 for LFS
 *                                                               files, git sha1 otherwise)
 *                        models--OWNER--REPO/snapshots/COMMIT/F relative link ../../blobs/ETAG
 *                        models--OWNER--REPO/refs/main          the commit, no newline
 *                        .locks/models--OWNER--REPO/ETAG.lock   huggingface_hub's lock files
 *   Ollama               manifests/registry.ollama.ai/NS/NAME/TAG  the manifest JSON
 *                        blobs/sha256-HEX                          config and layers */
#ifndef SG_HUB_STORE_H
#define SG_HUB_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define HUB_OLLAMA_HOST       "registry.ollama.ai"
#define HUB_OLLAMA_MODEL_TYPE "application/vnd.ollama.image.model"

/* A growable list of owned strings. */
typedef struct hub_strv {
    char **v;
    size_t n, cap;
} hub_strv;

void hub_strv_push(hub_strv *s, const char *str);
void hub_strv_free(hub_strv *s);
void hub_strv_sort(hub_strv *s);
int  hub_strv_has(const hub_strv *s, const char *str);

/* The snapshot folder a repository's name refers to: refs/main's commit, else the most
 * recently changed snapshot. NULL when there is none. Caller frees. */
char *hub_store_snapshot(const char *repo_dir);
/* Files under dir as relative paths ("a.gguf", "sub/b.gguf"), sorted; complete_only keeps
 * only those whose link reaches a regular file (a blob that is there). */
void hub_store_files(const char *dir, int complete_only, hub_strv *out);
/* Makes snapshot/rel a relative symbolic link to repo_dir/blobs/etag, replacing an old
 * link atomically (a new link, then rename over). */
int hub_store_link(const char *snapshot, const char *rel, const char *etag, sg_error *err);
/* Writes a small file atomically (PATH.tmp, fsync, rename). */
int hub_store_write(const char *path, const void *data, size_t n, sg_error *err);
/* Reads a small file (up to 64 MiB). NULL when absent. Caller frees. */
char *hub_store_read(const char *path, size_t *len);
/* rm -rf; adds the bytes of regular files removed to *freed when not NULL. */
int hub_store_remove_tree(const char *path, uint64_t *freed);
/* Size of a file following links, 0 when absent. */
uint64_t hub_store_size(const char *path);
/* Ollama: the manifest path of NS/NAME:TAG, and a blob's path from "sha256:HEX" (NULL when
 * the digest is malformed). Caller frees. */
char *hub_store_ollama_manifest(const char *root, const char *repo, const char *tag);
char *hub_store_ollama_blob(const char *root, const char *digest);

#endif
