/* hub.h: models fetched from the Hugging Face hub or Ollama's registry, kept where those
 * tools keep them, and found again by name.
 *
 * Names:  "smollm3"              the default model, ggml-org/SmolLM3-3B-GGUF:Q4_K_M
 *         "OWNER/REPO[:QUANT]"   a Hugging Face repository (GGUF or safetensors)
 *         "ollama:NAME[:TAG]"    a model of Ollama's registry (NAME may be "ns/name")
 *
 * Storage is the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else
 * ~/.cache/huggingface/hub: models--OWNER--REPO/{blobs,snapshots/COMMIT,refs/main}) and
 * Ollama's store ($OLLAMA_MODELS, else ~/.ollama/models: manifests/registry.ollama.ai/NS/
 * NAME/TAG and blobs/sha256-HEX), so files that huggingface-cli or ollama fetched are
 * used as they are, and theirs can use ours.
 *
 * Nothing here touches the network except hub_pull(). Every function is safe to call from
 * any thread (no shared state); strings returned are the caller's to free(). */
#ifndef SG_HUB_H
#define SG_HUB_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define HUB_DEFAULT_ALIAS "smollm3"
#define HUB_DEFAULT_REPO  "ggml-org/SmolLM3-3B-GGUF"
#define HUB_DEFAULT_QUANT "Q4_K_M"

typedef enum { HUB_HF, HUB_OLLAMA } hub_kind;

/* A parsed model name. */
typedef struct hub_ref {
    hub_kind kind;
    char repo[256];   /* HF "OWNER/REPO"; Ollama "NS/NAME" ("library/NAME" by default) */
    char tag[128];    /* HF: the quant, "" for the default choice; Ollama: the tag ("latest") */
} hub_ref;

/* Parses a model name (above); refuses characters that could escape the cache folders. */
int hub_ref_parse(const char *name, hub_ref *out, sg_error *err);
/* The name as `list` prints it and `rm` / `pull` accept it. Caller frees. */
char *hub_ref_name(const hub_ref *ref);

/* Storage roots (not created). Caller frees. */
char *hub_hf_cache_dir(void);
char *hub_ollama_dir(void);
/* <cache>/models--OWNER--REPO for "OWNER/REPO". Caller frees. */
char *hub_hf_repo_dir(const char *repo);

/* The GGUF files to use among a repository's files, as llama.cpp's `-hf` picks them:
 * with a QUANT, the first file (sorted by name) whose name contains it case-insensitively
 * (a name where the quant ends at '.' or '-' wins over a longer quant such as Q4_K_M for
 * "Q4_K"); without one, Q4_K_M, else the first .gguf. mmproj files are never chosen. When
 * the choice is a shard NAME-00001-of-0000N.gguf, all N shards are returned, in order.
 * *out is an array of pointers into names (free only the array); returns -1 with a
 * message listing what the repository has when nothing matches. */
int hub_gguf_pick(char *const *names, size_t n, const char *quant, const char ***out,
                  size_t *n_out, sg_error *err);
/* The quant a GGUF file name states ("Q4_K_M", "F16", "IQ2_XXS"), or NULL. Caller frees. */
char *hub_gguf_quant_of(const char *filename);

/* The local path of a pulled model: a GGUF file (the first shard of a split model) or a
 * snapshot folder of safetensors. -1 with "not pulled (smolgate pull NAME)" when absent
 * or incomplete (a snapshot link without its blob counts as absent). */
char *hub_resolve(const char *name, sg_error *err);

/* One pulled model. */
typedef struct hub_model {
    char *name;      /* accepted by hub_resolve / hub_remove */
    char *format;    /* "gguf" or "safetensors" */
    char *quant;     /* "Q4_K_M", "BF16", ... or "?" */
    char *path;      /* what hub_resolve returns */
    uint64_t size;   /* bytes of all its files */
} hub_model;

/* Every model in both stores, HF first, sorted by name. */
int hub_list(hub_model **out, size_t *n, sg_error *err);
void hub_models_free(hub_model *models, size_t n);

/* Removes a pulled model: for "OWNER/REPO:QUANT" (and "smollm3") the chosen GGUF files'
 * snapshot links, for "OWNER/REPO" the whole repository folder; for "ollama:..." the
 * manifest. Then every blob no remaining snapshot or manifest uses. A repository left
 * without model files goes entirely (snapshots, refs, blobs). Sets *freed to the bytes
 * deleted. -1 when the model is not there. */
int hub_remove(const char *name, uint64_t *freed, sg_error *err);

/* Pull options. */
typedef struct hub_pull_opts {
    int quiet;       /* no progress lines */
    int tty;         /* progress as a redrawn bar (stderr is a terminal) instead of lines */
} hub_pull_opts;

/* Downloads a model (only the files not yet stored), verifying each file's digest, and
 * returns what hub_resolve returns. Resumes BLOB.incomplete files, serialises with other
 * processes fetching the same blob (flock on the same lock files huggingface_hub uses),
 * and makes each file visible only once complete. Honours HF_ENDPOINT, HF_TOKEN (sent
 * only to the hub's own host, not to the CDN it redirects to) and
 * SMOLGATE_OLLAMA_REGISTRY (default https://registry.ollama.ai). Progress on stderr. */
char *hub_pull(const char *name, const hub_pull_opts *opts, sg_error *err);

#endif
