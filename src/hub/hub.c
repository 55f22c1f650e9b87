/* hub.c: model names, the GGUF choice, and finding, listing and removing pulled models
 * (hub.h). Downloads are in hub_pull.c. */
#include "hub/hub.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "hub/hub_store.h"

/* ---- names ---------------------------------------------------------------------------- */

/* A path segment of a repository or tag: letters, digits, '-', '_', '.', never "." or "..". */
static int segment_ok(const char *s, size_t n) {
    if (n == 0 || n > 96 || (s[0] == '.' && (n == 1 || (n == 2 && s[1] == '.')))) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("-_.", s[i])) return 0;
    return 1;
}

static int bad_name(const char *name, sg_error *err) {
    return sg_fail(err, "\"%s\" is not a model name: use %s, OWNER/REPO[:QUANT] or ollama:NAME[:TAG]",
                   name, HUB_DEFAULT_ALIAS);
}

int hub_ref_parse(const char *name, hub_ref *out, sg_error *err) {
    memset(out, 0, sizeof *out);
    const char *s = name;
    if (!strcasecmp(s, HUB_DEFAULT_ALIAS)) {
        out->kind = HUB_HF;
        snprintf(out->repo, sizeof out->repo, "%s", HUB_DEFAULT_REPO);
        snprintf(out->tag, sizeof out->tag, "%s", HUB_DEFAULT_QUANT);
        return 0;
    }
    int ollama = !strncmp(s, "ollama:", 7);
    if (ollama) s += 7;
    else if (!strncmp(s, "hf.co/", 6)) s += 6;               /* Ollama's and llama.cpp's spelling */
    else if (!strncmp(s, "huggingface.co/", 15)) s += 15;
    const char *colon = strchr(s, ':');
    size_t rlen = colon ? (size_t)(colon - s) : strlen(s);
    const char *slash = memchr(s, '/', rlen);
    if (colon && !segment_ok(colon + 1, strlen(colon + 1))) return bad_name(name, err);
    if (slash) {
        size_t a = (size_t)(slash - s);
        if (!segment_ok(s, a) || !segment_ok(slash + 1, rlen - a - 1)) return bad_name(name, err);
    } else if (!ollama || !segment_ok(s, rlen)) {
        return bad_name(name, err);
    }
    if (rlen >= sizeof out->repo - 8) return bad_name(name, err);
    out->kind = ollama ? HUB_OLLAMA : HUB_HF;
    snprintf(out->repo, sizeof out->repo, "%s%.*s", ollama && !slash ? "library/" : "", (int)rlen, s);
    snprintf(out->tag, sizeof out->tag, "%s", colon ? colon + 1 : ollama ? "latest" : "");
    return 0;
}

char *hub_ref_name(const hub_ref *ref) {
    sg_buf b;
    sg_buf_init(&b);
    if (ref->kind == HUB_HF) {
        sg_buf_puts(&b, ref->repo);
        if (ref->tag[0]) sg_buf_printf(&b, ":%s", ref->tag);
    } else {
        const char *r = !strncmp(ref->repo, "library/", 8) ? ref->repo + 8 : ref->repo;
        sg_buf_printf(&b, "ollama:%s:%s", r, ref->tag);
    }
    return sg_buf_steal(&b);
}

/* ---- where ---------------------------------------------------------------------------- */

static char *env_path(const char *var, const char *suffix) {
    const char *v = getenv(var);
    if (!v || !*v) return NULL;
    sg_buf b;
    sg_buf_init(&b);
    sg_buf_printf(&b, "%s%s", v, suffix);
    return sg_buf_steal(&b);
}

char *hub_hf_cache_dir(void) {
    char *p;
    if ((p = env_path("HF_HUB_CACHE", ""))) return p;
    if ((p = env_path("HF_HOME", "/hub"))) return p;
    if ((p = env_path("XDG_CACHE_HOME", "/huggingface/hub"))) return p;
    if ((p = env_path("HOME", "/.cache/huggingface/hub"))) return p;
    return sg_xstrdup(".cache/huggingface/hub");
}

char *hub_ollama_dir(void) {
    char *p;
    if ((p = env_path("OLLAMA_MODELS", ""))) return p;
    if ((p = env_path("HOME", "/.ollama/models"))) return p;
    return sg_xstrdup(".ollama/models");
}

char *hub_hf_repo_dir(const char *repo) {
    char *cache = hub_hf_cache_dir();
    sg_buf b;
    sg_buf_init(&b);
    sg_buf_printf(&b, "%s/models--", cache);
    for (const char *s = repo; *s; s++) {
        if (*s == '/') sg_buf_puts(&b, "--");
        else sg_buf_putc(&b, *s);
    }
    free(cache);
    return sg_buf_steal(&b);
}

/* ---- which GGUF ----------------------------------------------------------------------- */

static int ends_with_ci(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcasecmp(s + n - m, suffix);
}

static const char *base_of(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static int is_model_gguf(const char *name) {
    return ends_with_ci(name, ".gguf") && !strcasestr(base_of(name), "mmproj");
}

/* Where "-00001-of-00003.gguf" starts in name, with the shard number and count; NULL if not a shard. */
static const char *shard_suffix(const char *name, int *index, int *count) {
    size_t n = strlen(name);
    if (n < 20) return NULL;
    const char *s = name + n - 20;   /* "-NNNNN-of-NNNNN.gguf" */
    if (s[0] != '-' || strncmp(s + 6, "-of-", 4) || strcasecmp(s + 15, ".gguf")) return NULL;
    for (int i = 1; i < 15; i++)
        if (i < 6 || i > 9) { if (!isdigit((unsigned char)s[i])) return NULL; }
    *index = atoi(s + 1);
    *count = atoi(s + 10);
    return *count >= 1 && *index >= 1 && *index <= *count ? s : NULL;
}

/* The quant appears in the file name as a whole token: followed by '.' or '-'. */
static int has_quant_token(const char *name, const char *quant) {
    const char *b = base_of(name);
    size_t q = strlen(quant);
    for (const char *s = b; (s = strcasestr(s, quant)); s++) {
        char before = s == b ? '-' : s[-1], after = s[q];
        if (!isalnum((unsigned char)before) && (after == '.' || after == '-')) return 1;
    }
    return 0;
}

static int pick_one(const char **c, size_t n, const char *quant) {
    for (size_t i = 0; i < n; i++) if (has_quant_token(c[i], quant)) return (int)i;
    for (size_t i = 0; i < n; i++) if (strcasestr(base_of(c[i]), quant)) return (int)i;
    return -1;
}

static int cmp_cstr(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

int hub_gguf_pick(char *const *names, size_t n, const char *quant, const char ***out,
                  size_t *n_out, sg_error *err) {
    *out = NULL;
    *n_out = 0;
    const char **c = sg_xcalloc(n + 1, sizeof *c);
    size_t nc = 0;
    for (size_t i = 0; i < n; i++)
        if (is_model_gguf(names[i])) c[nc++] = names[i];
    qsort(c, nc, sizeof *c, cmp_cstr);
    if (nc == 0) { free(c); return sg_fail(err, "no .gguf file"); }
    int k = quant && *quant ? pick_one(c, nc, quant) : pick_one(c, nc, HUB_DEFAULT_QUANT);
    if (k < 0 && !(quant && *quant)) k = 0;
    if (k < 0) {
        sg_buf have;
        sg_buf_init(&have);
        for (size_t i = 0; i < nc; i++) {
            char *q = hub_gguf_quant_of(c[i]);
            if (!strstr(have.data ? have.data : "", q ? q : base_of(c[i])))
                sg_buf_printf(&have, "%s%s", have.len ? ", " : "", q ? q : base_of(c[i]));
            free(q);
        }
        sg_fail(err, "no .gguf file matching \"%s\" (there are: %s)", quant, have.data);
        sg_buf_free(&have);
        free(c);
        return -1;
    }
    int idx, count;
    const char *sfx = shard_suffix(c[k], &idx, &count);
    if (!sfx) {
        const char **one = sg_xcalloc(1, sizeof *one);
        one[0] = c[k];
        *out = one;
        *n_out = 1;
        free(c);
        return 0;
    }
    /* a split model: every shard, in order */
    const char **all = sg_xcalloc((size_t)count, sizeof *all);
    size_t plen = (size_t)(sfx - c[k]);
    for (int s = 1; s <= count; s++) {
        char want[32];
        snprintf(want, sizeof want, "-%05d-of-%05d.gguf", s, count);
        for (size_t i = 0; i < nc && !all[s - 1]; i++)
            if (!strncmp(c[i], c[k], plen) && !strcasecmp(c[i] + plen, want)) all[s - 1] = c[i];
        if (!all[s - 1]) {
            sg_fail(err, "%.*s%s is missing (a split model needs all %d shards)", (int)plen, c[k], want, count);
            free(all);
            free(c);
            return -1;
        }
    }
    *out = all;
    *n_out = (size_t)count;
    free(c);
    return 0;
}

static int quant_like(const char *t) {
    static const char *plain[] = {"F16", "F32", "BF16", "F64", "MXFP4"};
    for (size_t i = 0; i < sizeof plain / sizeof *plain; i++)
        if (!strcasecmp(t, plain[i])) return 1;
    if ((t[0] == 'Q' || t[0] == 'q') && isdigit((unsigned char)t[1])) return 1;
    if ((!strncasecmp(t, "IQ", 2) || !strncasecmp(t, "TQ", 2)) && isdigit((unsigned char)t[2])) return 1;
    return 0;
}

char *hub_gguf_quant_of(const char *filename) {
    const char *b = base_of(filename);
    size_t n = strlen(b);
    int idx, count;
    const char *sfx = shard_suffix(b, &idx, &count);
    if (sfx) n = (size_t)(sfx - b);
    else if (ends_with_ci(b, ".gguf")) n -= 5;
    char *s = sg_xstrndup(b, n);
    char *found = NULL;
    for (char *tok = strtok(s, "-."); tok; tok = strtok(NULL, "-."))
        if (quant_like(tok)) found = tok;   /* the last one: "Llama-3-8B-Q4_K_M" */
    char *q = NULL;
    if (found) {
        q = sg_xstrdup(found);
        for (char *c = q; *c; c++) *c = (char)toupper((unsigned char)*c);
    }
    free(s);
    return q;
}

/* ---- resolve -------------------------------------------------------------------------- */

static int is_safetensors_snapshot(const hub_strv *files) {
    if (!hub_strv_has(files, "config.json")) return 0;
    for (size_t i = 0; i < files->n; i++)
        if (ends_with_ci(files->v[i], ".safetensors")) return 1;
    return 0;
}

static char *join(const char *a, const char *b) {
    sg_buf p;
    sg_buf_init(&p);
    sg_buf_printf(&p, "%s/%s", a, b);
    return sg_buf_steal(&p);
}

static char *resolve_hf(const hub_ref *ref, sg_error *err) {
    char *repo_dir = hub_hf_repo_dir(ref->repo);
    char *snap = hub_store_snapshot(repo_dir);
    char *path = NULL;
    if (snap) {
        hub_strv files = {0}, all = {0};
        hub_store_files(snap, 1, &files);
        hub_store_files(snap, 0, &all);
        const char **pick = NULL;
        size_t np = 0;
        if (hub_gguf_pick(files.v, files.n, ref->tag, &pick, &np, NULL) == 0) {
            path = join(snap, pick[0]);
        } else if (!ref->tag[0] && is_safetensors_snapshot(&files) && files.n == all.n) {
            path = sg_xstrdup(snap);   /* every file of the snapshot is there */
        }
        free(pick);
        hub_strv_free(&files);
        hub_strv_free(&all);
    }
    free(snap);
    free(repo_dir);
    if (!path) {
        char *name = hub_ref_name(ref);
        sg_fail(err, "%s is not pulled (smolgate pull %s)", name, name);
        free(name);
    }
    return path;
}

/* The model layer's blob of a manifest, NULL when absent or malformed. */
static char *ollama_model_blob(const char *root, json_t *manifest) {
    json_t *layers = json_object_get(manifest, "layers");
    size_t i;
    json_t *l;
    json_array_foreach(layers, i, l) {
        const char *mt = json_string_value(json_object_get(l, "mediaType"));
        const char *dg = json_string_value(json_object_get(l, "digest"));
        if (mt && dg && !strcmp(mt, HUB_OLLAMA_MODEL_TYPE)) return hub_store_ollama_blob(root, dg);
    }
    return NULL;
}

static json_t *load_json(const char *path) {
    size_t len;
    char *text = hub_store_read(path, &len);
    if (!text) return NULL;
    json_t *j = json_loadb(text, len, 0, NULL);
    free(text);
    return j;
}

static char *resolve_ollama(const hub_ref *ref, sg_error *err) {
    char *root = hub_ollama_dir();
    char *mpath = hub_store_ollama_manifest(root, ref->repo, ref->tag);
    json_t *m = load_json(mpath);
    char *blob = m ? ollama_model_blob(root, m) : NULL;
    struct stat st;
    if (blob && stat(blob, &st) != 0) { free(blob); blob = NULL; }
    json_decref(m);
    free(mpath);
    free(root);
    if (!blob) {
        char *name = hub_ref_name(ref);
        sg_fail(err, "%s is not pulled (smolgate pull %s)", name, name);
        free(name);
    }
    return blob;
}

char *hub_resolve(const char *name, sg_error *err) {
    hub_ref ref;
    if (hub_ref_parse(name, &ref, err)) return NULL;
    return ref.kind == HUB_HF ? resolve_hf(&ref, err) : resolve_ollama(&ref, err);
}

/* ---- list ----------------------------------------------------------------------------- */

typedef struct model_vec {
    hub_model *v;
    size_t n, cap;
} model_vec;

static void add_model(model_vec *mv, const char *name, const char *format, const char *quant,
                      const char *path, uint64_t size) {
    if (mv->n == mv->cap) {
        mv->cap = mv->cap ? 2 * mv->cap : 16;
        mv->v = sg_xrealloc(mv->v, mv->cap * sizeof *mv->v);
    }
    mv->v[mv->n++] = (hub_model){sg_xstrdup(name), sg_xstrdup(format), sg_xstrdup(quant ? quant : "?"),
                                 sg_xstrdup(path), size};
}

/* BF16 / F16 / F32 from config.json's torch_dtype (or dtype, its newer name). */
static char *dtype_of_config(const char *snap) {
    char *p = join(snap, "config.json");
    json_t *c = load_json(p);
    free(p);
    const char *d = json_string_value(json_object_get(c, "torch_dtype"));
    if (!d) d = json_string_value(json_object_get(c, "dtype"));
    const char *q = !d ? NULL : !strcmp(d, "bfloat16") ? "BF16" : !strcmp(d, "float16") ? "F16"
                  : !strcmp(d, "float32") ? "F32" : d;
    char *out = q ? sg_xstrdup(q) : NULL;
    json_decref(c);
    return out;
}

static void list_hf_repo(const char *repo_dir, const char *repo, model_vec *mv) {
    char *snap = hub_store_snapshot(repo_dir);
    if (!snap) return;
    hub_strv files = {0};
    hub_store_files(snap, 1, &files);
    for (size_t i = 0; i < files.n; i++) {
        const char *f = files.v[i];
        int idx, count;
        if (!is_model_gguf(f)) continue;
        const char *sfx = shard_suffix(f, &idx, &count);
        if (sfx && idx != 1) continue;   /* a split model is listed once, by its first shard */
        char *path = join(snap, f);
        uint64_t size = 0;
        if (sfx) {
            size_t plen = (size_t)(sfx - f);
            for (size_t j = 0; j < files.n; j++)
                if (!strncmp(files.v[j], f, plen) && shard_suffix(files.v[j], &idx, &count)) {
                    char *sp = join(snap, files.v[j]);
                    size += hub_store_size(sp);
                    free(sp);
                }
        } else {
            size = hub_store_size(path);
        }
        char *quant = hub_gguf_quant_of(f);
        sg_buf name;
        sg_buf_init(&name);
        sg_buf_printf(&name, "%s:%s", repo, quant ? quant : base_of(f));
        add_model(mv, name.data, "gguf", quant, path, size);
        sg_buf_free(&name);
        free(quant);
        free(path);
    }
    if (is_safetensors_snapshot(&files)) {
        uint64_t size = 0;
        for (size_t i = 0; i < files.n; i++) {
            char *p = join(snap, files.v[i]);
            size += hub_store_size(p);
            free(p);
        }
        char *dtype = dtype_of_config(snap);
        add_model(mv, repo, "safetensors", dtype, snap, size);
        free(dtype);
    }
    hub_strv_free(&files);
    free(snap);
}

static void list_hf(model_vec *mv) {
    char *cache = hub_hf_cache_dir();
    DIR *d = opendir(cache);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strncmp(e->d_name, "models--", 8)) continue;
            const char *owner = e->d_name + 8;
            const char *sep = strstr(owner, "--");
            if (!sep) continue;
            sg_buf repo;
            sg_buf_init(&repo);
            sg_buf_printf(&repo, "%.*s/%s", (int)(sep - owner), owner, sep + 2);
            char *dir = join(cache, e->d_name);
            list_hf_repo(dir, repo.data, mv);
            free(dir);
            sg_buf_free(&repo);
        }
        closedir(d);
    }
    free(cache);
}

/* Calls fn for each manifest of Ollama's registry: repo "NS/NAME", tag. */
static void each_ollama_manifest(const char *root, void (*fn)(void *, const char *repo, const char *tag,
                                                              const char *path), void *ctx) {
    sg_buf base;
    sg_buf_init(&base);
    sg_buf_printf(&base, "%s/manifests/%s", root, HUB_OLLAMA_HOST);
    hub_strv files = {0};
    hub_store_files(base.data, 0, &files);
    for (size_t i = 0; i < files.n; i++) {
        const char *f = files.v[i];
        const char *s1 = strchr(f, '/'), *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
        if (!s2 || strchr(s2 + 1, '/') || strstr(s2 + 1, ".tmp.")) continue;   /* NS/NAME/TAG only */
        char *repo = sg_xstrndup(f, (size_t)(s2 - f));
        char *path = join(base.data, f);
        fn(ctx, repo, s2 + 1, path);
        free(path);
        free(repo);
    }
    hub_strv_free(&files);
    sg_buf_free(&base);
}

typedef struct list_ctx {
    const char *root;
    model_vec *mv;
} list_ctx;

static void list_ollama_one(void *ctx, const char *repo, const char *tag, const char *path) {
    list_ctx *lc = ctx;
    json_t *m = load_json(path);
    char *blob = m ? ollama_model_blob(lc->root, m) : NULL;
    if (blob && hub_store_size(blob) > 0) {
        uint64_t size = 0;
        size_t i;
        json_t *l;
        json_array_foreach(json_object_get(m, "layers"), i, l) size += (uint64_t)json_integer_value(json_object_get(l, "size"));
        /* the quant is in the config blob ("file_type") */
        char *quant = NULL;
        const char *cdigest = json_string_value(json_object_get(json_object_get(m, "config"), "digest"));
        char *cpath = cdigest ? hub_store_ollama_blob(lc->root, cdigest) : NULL;
        json_t *cfg = cpath ? load_json(cpath) : NULL;
        const char *ft = json_string_value(json_object_get(cfg, "file_type"));
        if (ft) quant = sg_xstrdup(ft);
        hub_ref ref = {.kind = HUB_OLLAMA};
        snprintf(ref.repo, sizeof ref.repo, "%s", repo);
        snprintf(ref.tag, sizeof ref.tag, "%s", tag);
        char *name = hub_ref_name(&ref);
        add_model(lc->mv, name, "gguf", quant, blob, size);
        free(name);
        free(quant);
        json_decref(cfg);
        free(cpath);
    }
    free(blob);
    json_decref(m);
}

static int cmp_model(const void *a, const void *b) {
    const hub_model *x = a, *y = b;
    int ox = !strncmp(x->name, "ollama:", 7), oy = !strncmp(y->name, "ollama:", 7);
    return ox != oy ? ox - oy : strcmp(x->name, y->name);
}

int hub_list(hub_model **out, size_t *n, sg_error *err) {
    (void)err;
    model_vec mv = {0};
    list_hf(&mv);
    char *root = hub_ollama_dir();
    list_ctx lc = {root, &mv};
    each_ollama_manifest(root, list_ollama_one, &lc);
    free(root);
    if (mv.n) qsort(mv.v, mv.n, sizeof *mv.v, cmp_model);
    *out = mv.v;
    *n = mv.n;
    return 0;
}

void hub_models_free(hub_model *m, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(m[i].name); free(m[i].format); free(m[i].quant); free(m[i].path);
    }
    free(m);
}

/* ---- remove --------------------------------------------------------------------------- */

/* Deletes the blobs of repo_dir no snapshot links to (in-progress downloads and lock files
 * stay: another process may be writing them). Returns how many model files remain. */
static size_t gc_hf_repo(const char *repo_dir, uint64_t *freed) {
    hub_strv used = {0}, blobs = {0};
    size_t models = 0;
    char *snaps = join(repo_dir, "snapshots");
    hub_strv links = {0};
    hub_store_files(snaps, 0, &links);
    for (size_t i = 0; i < links.n; i++) {
        char *p = join(snaps, links.v[i]);
        char target[4096];
        ssize_t t = readlink(p, target, sizeof target - 1);
        if (t > 0) {
            target[t] = 0;
            hub_strv_push(&used, base_of(target));
        }
        if (is_model_gguf(links.v[i]) || ends_with_ci(links.v[i], ".safetensors")) models++;
        free(p);
    }
    char *bdir = join(repo_dir, "blobs");
    hub_store_files(bdir, 0, &blobs);
    for (size_t i = 0; i < blobs.n; i++) {
        const char *b = blobs.v[i];
        if (hub_strv_has(&used, b) || ends_with_ci(b, ".incomplete") || ends_with_ci(b, ".lock")) continue;
        char *p = join(bdir, b);
        uint64_t sz = hub_store_size(p);
        if (unlink(p) == 0) *freed += sz;
        free(p);
    }
    free(bdir);
    free(snaps);
    hub_strv_free(&links);
    hub_strv_free(&used);
    hub_strv_free(&blobs);
    return models;
}

static void remove_hf_locks(const char *repo_dir) {
    char *cache = hub_hf_cache_dir();
    sg_buf p;
    sg_buf_init(&p);
    sg_buf_printf(&p, "%s/.locks/%s", cache, base_of(repo_dir));
    hub_store_remove_tree(p.data, NULL);
    sg_buf_free(&p);
    free(cache);
}

static int remove_hf(const hub_ref *ref, const char *name, uint64_t *freed, sg_error *err) {
    char *repo_dir = hub_hf_repo_dir(ref->repo);
    struct stat st;
    int rc = 0;
    if (stat(repo_dir, &st) != 0) {
        rc = sg_fail(err, "%s is not pulled (nothing at %s)", name, repo_dir);
    } else if (!ref->tag[0]) {
        hub_store_remove_tree(repo_dir, freed);
        remove_hf_locks(repo_dir);
    } else {
        /* only the chosen quant's files, in every snapshot */
        char *snaps = join(repo_dir, "snapshots");
        DIR *d = opendir(snaps);
        int removed = 0;
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char *snap = join(snaps, e->d_name);
            hub_strv files = {0};
            hub_store_files(snap, 0, &files);
            const char **pick = NULL;
            size_t np = 0;
            /* the quant must be in the name: no fallback to another file */
            if (hub_gguf_pick(files.v, files.n, ref->tag, &pick, &np, NULL) == 0) {
                for (size_t i = 0; i < np; i++) {
                    char *p = join(snap, pick[i]);
                    if (unlink(p) == 0) removed++;
                    free(p);
                }
            }
            free(pick);
            hub_strv_free(&files);
            free(snap);
        }
        if (d) closedir(d);
        free(snaps);
        if (!removed) rc = sg_fail(err, "%s is not pulled (no %s file in %s)", name, ref->tag, repo_dir);
        else if (gc_hf_repo(repo_dir, freed) == 0) {
            hub_store_remove_tree(repo_dir, freed);
            remove_hf_locks(repo_dir);
        }
    }
    free(repo_dir);
    return rc;
}

typedef struct used_ctx {
    hub_strv *digests;
} used_ctx;

static void collect_digests(json_t *m, hub_strv *out) {
    const char *c = json_string_value(json_object_get(json_object_get(m, "config"), "digest"));
    if (c) hub_strv_push(out, c);
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(m, "layers"), i, l) {
        const char *d = json_string_value(json_object_get(l, "digest"));
        if (d) hub_strv_push(out, d);
    }
}

static void used_one(void *ctx, const char *repo, const char *tag, const char *path) {
    (void)repo; (void)tag;
    json_t *m = load_json(path);
    if (m) collect_digests(m, ((used_ctx *)ctx)->digests);
    json_decref(m);
}

static int remove_ollama(const hub_ref *ref, const char *name, uint64_t *freed, sg_error *err) {
    char *root = hub_ollama_dir();
    char *mpath = hub_store_ollama_manifest(root, ref->repo, ref->tag);
    json_t *m = load_json(mpath);
    int rc = 0;
    if (!m) {
        rc = sg_fail(err, "%s is not pulled (no manifest %s)", name, mpath);
    } else if (unlink(mpath)) {
        rc = sg_fail(err, "removing %s: %s", mpath, strerror(errno));
    } else {
        /* empty NAME (and NS) folders go too, as ollama rm leaves it */
        char *dir = sg_xstrdup(mpath);
        for (int up = 0; up < 2; up++) {
            *strrchr(dir, '/') = 0;
            if (rmdir(dir)) break;
        }
        free(dir);
        hub_strv mine = {0}, used = {0};
        collect_digests(m, &mine);
        used_ctx uc = {&used};
        each_ollama_manifest(root, used_one, &uc);
        for (size_t i = 0; i < mine.n; i++) {
            if (hub_strv_has(&used, mine.v[i])) continue;
            char *b = hub_store_ollama_blob(root, mine.v[i]);
            if (!b) continue;
            uint64_t sz = hub_store_size(b);
            if (unlink(b) == 0) *freed += sz;
            free(b);
        }
        hub_strv_free(&mine);
        hub_strv_free(&used);
    }
    json_decref(m);
    free(mpath);
    free(root);
    return rc;
}

int hub_remove(const char *name, uint64_t *freed, sg_error *err) {
    hub_ref ref;
    uint64_t local = 0;
    if (!freed) freed = &local;
    *freed = 0;
    if (hub_ref_parse(name, &ref, err)) return -1;
    char *canon = hub_ref_name(&ref);
    int rc = ref.kind == HUB_HF ? remove_hf(&ref, canon, freed, err) : remove_ollama(&ref, canon, freed, err);
    free(canon);
    return rc;
}
