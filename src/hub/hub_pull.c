/* hub_pull.c: `smolgate pull`: which files a model needs, from the Hugging Face hub or
 * Ollama's registry, fetched into the stores hub_store.h describes (hub.h: hub_pull).
 *
 * Hugging Face, as huggingface_hub does it: GET /api/models/REPO/revision/main gives the
 * commit ("sha") and the file list ("siblings"); a HEAD on /REPO/resolve/COMMIT/FILE,
 * without following the redirect, gives the blob's name and digest (X-Linked-Etag, the
 * LFS sha256, on the 302 to the CDN; ETag, git's sha1, for small files) and its size.
 * Ollama: GET /v2/NS/NAME/manifests/TAG, then each blob by digest. */
#include "hub/hub.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/buf.h"
#include "hub/hub_blob.h"
#include "hub/hub_http.h"
#include "hub/hub_progress.h"
#include "hub/hub_store.h"

#define HF_DEFAULT_ENDPOINT     "https://huggingface.co"
#define OLLAMA_DEFAULT_REGISTRY "https://registry.ollama.ai"
#define OLLAMA_MANIFEST_ACCEPT  "application/vnd.docker.distribution.manifest.v2+json"
#define HEAD_TRIES 3

/* The files of a safetensors repository a local engine needs, besides the weights. */
static const char *const hf_extra_files[] = {
    "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "generation_config.json", "chat_template.jinja", "model.safetensors.index.json",
};

typedef struct pull_ctx {
    const hub_pull_opts *opts;
    FILE *out;              /* progress, NULL when quiet */
    hub_http_auth auth;
    int files_fetched, files_present;
    int64_t bytes_fetched;
} pull_ctx;

static char *env_or(const char *var, const char *dflt) {
    const char *v = getenv(var);
    char *s = sg_xstrdup(v && *v ? v : dflt);
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/') s[--n] = 0;
    return s;
}

/* HF_TOKEN, else the token `huggingface-cli login` saved. */
static char *hf_token(void) {
    const char *v = getenv("HF_TOKEN");
    if (!v || !*v) v = getenv("HUGGING_FACE_HUB_TOKEN");
    if (v && *v) return sg_xstrdup(v);
    const char *home = getenv("HF_HOME"), *h = getenv("HOME");
    sg_buf p;
    sg_buf_init(&p);
    if (home && *home) sg_buf_printf(&p, "%s/token", home);
    else if (h) sg_buf_printf(&p, "%s/.cache/huggingface/token", h);
    char *t = p.len ? hub_store_read(p.data, NULL) : NULL;
    sg_buf_free(&p);
    if (t) {
        t[strcspn(t, " \r\n")] = 0;
        if (!*t) { free(t); t = NULL; }
    }
    return t;
}

/* Percent-encodes a repository path, keeping '/' between folders. */
static void put_path(sg_buf *b, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || strchr("-_.~/", c)) sg_buf_putc(b, (char)c);
        else sg_buf_printf(b, "%%%02X", c);
    }
}

/* A repository file name we are willing to write under the snapshot folder. */
static int rel_path_ok(const char *f) {
    if (!*f || f[0] == '/' || strlen(f) > 512) return 0;
    for (const char *s = f; *s;) {
        size_t n = strcspn(s, "/");
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return 0;
        s += n;
        if (*s) s++;
    }
    return 1;
}

static int etag_ok(const char *e) {
    if (!*e || strlen(e) > 128) return 0;
    for (; *e; e++)
        if (!isalnum((unsigned char)*e) && !strchr("-_", *e)) return 0;
    return 1;
}

/* The hub's answer as a message a user can act on. */
static int hf_status_error(const hub_http_resp *r, const char *endpoint, const char *repo,
                           const char *file, const pull_ctx *pc, sg_error *err) {
    const char *code = r->error_code ? r->error_code : "";
    long s = r->status;
    int has_token = pc->auth.token != NULL;
    if (!strcmp(code, "GatedRepo") || ((s == 401 || s == 403) && strcmp(code, "RepoNotFound"))) {
        if (has_token)
            return sg_fail(err, "%s refused access to %s (HTTP %ld): the repository is gated or private and "
                           "the token in HF_TOKEN has no access to it; accept its terms on the hub "
                           "with that account", endpoint, repo, s);
        return sg_fail(err, "%s is gated or private (HTTP %ld): accept its terms on the hub, then set "
                       "HF_TOKEN to an access token of that account", repo, s);
    }
    if (!strcmp(code, "RepoNotFound") || (s == 404 && !file))
        return sg_fail(err, "repository %s not found on %s (HTTP %ld)%s", repo, endpoint, s,
                       has_token ? "" : "; if it is private, set HF_TOKEN");
    if (s == 404 || !strcmp(code, "EntryNotFound"))
        return sg_fail(err, "%s not found in %s (HTTP %ld)", file ? file : "file", repo, s);
    json_t *j = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
    const char *msg = json_string_value(json_object_get(j, "error"));
    sg_fail(err, "%s: HTTP %ld%s%s", r->url, s, msg ? ": " : "", msg ? msg : "");
    json_decref(j);
    return -1;
}

/* HEAD on the resolve URL, following only same-host redirects (a renamed repository),
 * stopping at the one to the CDN, which carries the LFS headers. */
static int hf_head(const char *url, const pull_ctx *pc, hub_http_resp *r, sg_error *err) {
    char *cur = sg_xstrdup(url);
    int rc = -1;
    for (int hop = 0, tries = 0; hop < 5;) {
        rc = hub_http_fetch("HEAD", cur, NULL, &pc->auth, 0, r, err);
        if (rc && r->transport && ++tries < HEAD_TRIES) continue;
        if (rc || r->status < 300 || r->status >= 400 || r->linked_etag || !r->location) break;
        char *o = hub_http_origin(r->location);
        int same = !strcmp(o, pc->auth.origin);
        free(o);
        if (!same) break;
        free(cur);
        cur = sg_xstrdup(r->location);
        hop++;
    }
    free(cur);
    return rc;
}

static int hf_fetch_file(pull_ctx *pc, const char *endpoint, const char *repo, const char *commit,
                         const char *repo_dir, const char *snap, const char *file, sg_error *err) {
    sg_buf link, url;
    sg_buf_init(&link);
    sg_buf_init(&url);
    sg_buf_printf(&link, "%s/%s", snap, file);
    struct stat st;
    if (stat(link.data, &st) == 0 && S_ISREG(st.st_mode)) {   /* in this snapshot with its blob */
        pc->files_present++;
        if (pc->out) fprintf(pc->out, "  %s: already pulled\n", file);
        sg_buf_free(&link);
        sg_buf_free(&url);
        return 0;
    }
    sg_buf_printf(&url, "%s/", endpoint);
    put_path(&url, repo);
    sg_buf_printf(&url, "/resolve/%s/", commit);
    put_path(&url, file);

    hub_http_resp r = {0};
    int rc = hf_head(url.data, pc, &r, err);
    if (rc == 0 && (r.status < 200 || r.status >= 400)) rc = hf_status_error(&r, endpoint, repo, file, pc, err);
    const char *etag = r.linked_etag ? r.linked_etag : r.etag;
    if (rc == 0 && (!etag || !etag_ok(etag)))
        rc = sg_fail(err, "%s: the hub gave no usable ETag for %s", repo, file);
    if (rc == 0 && r.status >= 300 && !r.location)
        rc = sg_fail(err, "%s: HTTP %ld without a Location", url.data, r.status);
    if (rc == 0) {
        int64_t size = r.linked_size >= 0 ? r.linked_size : r.status < 300 ? r.length : -1;
        char *cache = hub_hf_cache_dir();
        sg_buf blob, lock;
        sg_buf_init(&blob);
        sg_buf_init(&lock);
        sg_buf_printf(&blob, "%s/blobs/%s", repo_dir, etag);
        sg_buf_printf(&lock, "%s/.locks/%s/%s.lock", cache, strrchr(repo_dir, '/') + 1, etag);
        hub_blob_req q = {
            .url = r.status >= 300 ? r.location : url.data,
            .auth = &pc->auth,
            .path = blob.data,
            .lock_path = lock.data,
            .digest = hub_digest_of_etag(etag),
            .hex = etag,
            .size = size,
            .label = file,
            .progress = pc->out,
            .tty = pc->opts->tty,
        };
        int64_t got = 0;
        rc = hub_blob_fetch(&q, &got, err);
        if (rc == 0) {
            if (got > 0) { pc->files_fetched++; pc->bytes_fetched += got; }
            else {
                pc->files_present++;
                if (pc->out) fprintf(pc->out, "  %s: blob already in the cache\n", file);
            }
            rc = hub_store_link(snap, file, etag, err);
        }
        sg_buf_free(&blob);
        sg_buf_free(&lock);
        free(cache);
    }
    hub_http_resp_free(&r);
    sg_buf_free(&link);
    sg_buf_free(&url);
    return rc;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* The files to fetch: the GGUF choice, else a safetensors model's weights and side files. */
static int hf_choose(const hub_ref *ref, const hub_strv *siblings, hub_strv *want, sg_error *err) {
    int any_gguf = 0, any_st = 0;
    for (size_t i = 0; i < siblings->n; i++) {
        const char *f = siblings->v[i];
        if (strlen(f) > 5 && !strcasecmp(f + strlen(f) - 5, ".gguf")) any_gguf = 1;
        if (!strchr(f, '/') && ends_with(f, ".safetensors")) any_st = 1;
    }
    if (any_gguf) {
        const char **pick;
        size_t n;
        if (hub_gguf_pick(siblings->v, siblings->n, ref->tag, &pick, &n, err))
            return sg_fail_wrap(err, "%s", ref->repo);
        for (size_t i = 0; i < n; i++) hub_strv_push(want, pick[i]);
        free(pick);
        return 0;
    }
    if (ref->tag[0])
        return sg_fail(err, "%s has no .gguf files (\":%s\" picks a GGUF quant)", ref->repo, ref->tag);
    if (!any_st || !hub_strv_has(siblings, "config.json"))
        return sg_fail(err, "%s has neither .gguf files nor config.json with .safetensors weights", ref->repo);
    for (size_t i = 0; i < sizeof hf_extra_files / sizeof *hf_extra_files; i++)
        if (hub_strv_has(siblings, hf_extra_files[i])) hub_strv_push(want, hf_extra_files[i]);
    for (size_t i = 0; i < siblings->n; i++)
        if (!strchr(siblings->v[i], '/') && ends_with(siblings->v[i], ".safetensors")) hub_strv_push(want, siblings->v[i]);
    return 0;
}

/* The hub cannot be reached but the model is here: use it rather than fail. */
static int offline_fallback(const hub_ref *ref, pull_ctx *pc, sg_error *err) {
    char *name = hub_ref_name(ref);
    char *path = hub_resolve(name, NULL);
    free(name);
    if (!path) return -1;
    if (pc->out) fprintf(pc->out, "warning: %s; using the copy already pulled\n", err ? err->msg : "offline");
    free(path);
    return 0;
}

static int pull_hf(const hub_ref *ref, pull_ctx *pc, sg_error *err) {
    char *endpoint = env_or("HF_ENDPOINT", HF_DEFAULT_ENDPOINT);
    char *origin = hub_http_origin(endpoint);
    char *token = hf_token();
    pc->auth = (hub_http_auth){token, origin};
    sg_buf url;
    sg_buf_init(&url);
    sg_buf_printf(&url, "%s/api/models/", endpoint);
    put_path(&url, ref->repo);
    sg_buf_puts(&url, "/revision/main");

    hub_strv siblings = {0}, want = {0};
    char *repo_dir = NULL, *snap = NULL;
    json_t *info = NULL;
    hub_http_resp r = {0};
    int rc = hub_http_fetch("GET", url.data, "application/json", &pc->auth, 5, &r, err);
    if (rc) {
        if (r.transport && offline_fallback(ref, pc, err) == 0) rc = 0;
        else sg_fail_wrap(err, "fetching the file list of %s", ref->repo);
        goto out;
    }
    if (r.status != 200) { rc = hf_status_error(&r, endpoint, ref->repo, NULL, pc, err); goto out; }
    info = json_loadb(r.body.data, r.body.len, 0, NULL);
    const char *commit = json_string_value(json_object_get(info, "sha"));
    if (!commit || !etag_ok(commit)) { rc = sg_fail(err, "%s: no commit (\"sha\") in the hub's answer", url.data); goto out; }
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(info, "siblings"), i, s) {
        const char *f = json_string_value(json_object_get(s, "rfilename"));
        if (f && rel_path_ok(f)) hub_strv_push(&siblings, f);
    }
    if ((rc = hf_choose(ref, &siblings, &want, err))) goto out;

    repo_dir = hub_hf_repo_dir(ref->repo);
    sg_buf sp;
    sg_buf_init(&sp);
    sg_buf_printf(&sp, "%s/snapshots/%s", repo_dir, commit);
    snap = sg_buf_steal(&sp);
    if (pc->out) fprintf(pc->out, "%s at %.12s: %zu file%s\n", ref->repo, commit, want.n, want.n == 1 ? "" : "s");
    for (i = 0; i < want.n && rc == 0; i++)
        rc = hf_fetch_file(pc, endpoint, ref->repo, commit, repo_dir, snap, want.v[i], err);
    if (rc == 0) {
        sg_buf refp;
        sg_buf_init(&refp);
        sg_buf_printf(&refp, "%s/refs/main", repo_dir);
        rc = hub_store_write(refp.data, commit, strlen(commit), err);
        sg_buf_free(&refp);
    }
out:
    json_decref(info);
    hub_http_resp_free(&r);
    hub_strv_free(&siblings);
    hub_strv_free(&want);
    sg_buf_free(&url);
    free(repo_dir);
    free(snap);
    free(endpoint);
    free(origin);
    free(token);
    pc->auth = (hub_http_auth){0};
    return rc;
}

static int pull_ollama(const hub_ref *ref, pull_ctx *pc, sg_error *err) {
    char *base = env_or("SMOLGATE_OLLAMA_REGISTRY", OLLAMA_DEFAULT_REGISTRY);
    char *root = hub_ollama_dir();
    char *name = hub_ref_name(ref);
    sg_buf url;
    sg_buf_init(&url);
    sg_buf_printf(&url, "%s/v2/%s/manifests/%s", base, ref->repo, ref->tag);
    hub_http_resp r = {0};
    json_t *m = NULL;
    hub_strv digests = {0};
    int rc = hub_http_fetch("GET", url.data, OLLAMA_MANIFEST_ACCEPT, NULL, 5, &r, err);
    if (rc) {
        if (r.transport && offline_fallback(ref, pc, err) == 0) rc = 0;
        else sg_fail_wrap(err, "fetching the manifest of %s", name);
        goto out;
    }
    if (r.status == 404) { rc = sg_fail(err, "%s not found in the registry %s (HTTP 404)", name, base); goto out; }
    if (r.status != 200) { rc = sg_fail(err, "%s: HTTP %ld", url.data, r.status); goto out; }
    m = json_loadb(r.body.data, r.body.len, 0, NULL);
    json_t *model = NULL, *l;
    size_t i;
    json_array_foreach(json_object_get(m, "layers"), i, l) {
        const char *mt = json_string_value(json_object_get(l, "mediaType"));
        if (mt && !strcmp(mt, HUB_OLLAMA_MODEL_TYPE)) model = l;
    }
    if (!model) { rc = sg_fail(err, "%s: the manifest has no %s layer", name, HUB_OLLAMA_MODEL_TYPE); goto out; }

    /* every blob (config, model, template, params...), so that ollama can run it too */
    json_t *blobs = json_array();
    if (json_object_get(m, "config")) json_array_append(blobs, json_object_get(m, "config"));
    json_array_foreach(json_object_get(m, "layers"), i, l) json_array_append(blobs, l);
    if (pc->out) fprintf(pc->out, "%s: %zu blob%s\n", name, json_array_size(blobs), json_array_size(blobs) == 1 ? "" : "s");
    json_array_foreach(blobs, i, l) {
        const char *digest = json_string_value(json_object_get(l, "digest"));
        const char *mt = json_string_value(json_object_get(l, "mediaType"));
        int64_t size = json_is_integer(json_object_get(l, "size")) ? json_integer_value(json_object_get(l, "size")) : -1;
        char *path = digest ? hub_store_ollama_blob(root, digest) : NULL;
        if (!path) { rc = sg_fail(err, "%s: malformed digest in the manifest", name); break; }
        const char *kind = mt && strrchr(mt, '.') ? strrchr(mt, '.') + 1 : "blob";
        if (mt && strstr(mt, "container.image")) kind = "config";
        sg_buf label, lock, burl;
        sg_buf_init(&label);
        sg_buf_init(&lock);
        sg_buf_init(&burl);
        sg_buf_printf(&label, "%s (%s)", name, kind);
        sg_buf_printf(&lock, "%s/.locks/sha256-%s.lock", root, digest + 7);
        sg_buf_printf(&burl, "%s/v2/%s/blobs/%s", base, ref->repo, digest);
        hub_blob_req q = {
            .url = burl.data, .auth = NULL, .path = path, .lock_path = lock.data,
            .digest = HUB_DIGEST_SHA256, .hex = digest + 7, .size = size, .label = label.data,
            .progress = pc->out, .tty = pc->opts->tty,
        };
        int64_t got = 0;
        rc = hub_blob_fetch(&q, &got, err);
        if (rc == 0 && got > 0) { pc->files_fetched++; pc->bytes_fetched += got; }
        else if (rc == 0) pc->files_present++;
        sg_buf_free(&label);
        sg_buf_free(&lock);
        sg_buf_free(&burl);
        free(path);
        if (rc) break;
    }
    json_decref(blobs);
    if (rc == 0) {   /* the manifest last: ollama sees the model only once every blob is in */
        char *mpath = hub_store_ollama_manifest(root, ref->repo, ref->tag);
        rc = hub_store_write(mpath, r.body.data, r.body.len, err);
        free(mpath);
    }
out:
    hub_strv_free(&digests);
    json_decref(m);
    hub_http_resp_free(&r);
    sg_buf_free(&url);
    free(name);
    free(root);
    free(base);
    return rc;
}

char *hub_pull(const char *name, const hub_pull_opts *opts, sg_error *err) {
    hub_ref ref;
    if (hub_ref_parse(name, &ref, err)) return NULL;
    pull_ctx pc = {.opts = opts, .out = opts->quiet ? NULL : stderr};
    int rc = ref.kind == HUB_HF ? pull_hf(&ref, &pc, err) : pull_ollama(&ref, &pc, err);
    if (rc) return NULL;
    char *canon = hub_ref_name(&ref);
    char *path = hub_resolve(canon, err);
    if (path && pc.out) {
        char b[32];
        hub_format_bytes((double)pc.bytes_fetched, b, sizeof b);
        fprintf(pc.out, "pulled %s: %d file%s downloaded (%s), %d already present\n", canon,
                pc.files_fetched, pc.files_fetched == 1 ? "" : "s", b, pc.files_present);
    }
    free(canon);
    return path;
}
