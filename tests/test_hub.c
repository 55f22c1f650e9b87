/* test_hub.c: model names, the GGUF choice (llama.cpp -hf's rule, mmproj skipped, split
 * models whole), quants read from file names, where the caches are, and hub_resolve /
 * hub_list / hub_remove on cache folders laid out by hand as huggingface_hub and ollama
 * lay them out. The network side (pull) is tests/e2e/pull.sh's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hub/hub.h"
#include "testutil.h"

static void test_ref_parse(void) {
    hub_ref r;
    CHECK(hub_ref_parse("smollm3", &r, NULL) == 0);
    CHECK(r.kind == HUB_HF);
    CHECK_EQ_STR(r.repo, "ggml-org/SmolLM3-3B-GGUF");
    CHECK_EQ_STR(r.tag, "Q4_K_M");
    CHECK(hub_ref_parse("bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0", &r, NULL) == 0);
    CHECK_EQ_STR(r.repo, "bartowski/Llama-3.2-1B-Instruct-GGUF");
    CHECK_EQ_STR(r.tag, "Q8_0");
    CHECK(hub_ref_parse("HuggingFaceTB/SmolLM3-3B", &r, NULL) == 0);
    CHECK_EQ_STR(r.tag, "");
    CHECK(hub_ref_parse("hf.co/unsloth/x-GGUF:IQ2_XXS", &r, NULL) == 0);
    CHECK_EQ_STR(r.repo, "unsloth/x-GGUF");
    CHECK(hub_ref_parse("ollama:smollm2", &r, NULL) == 0);
    CHECK(r.kind == HUB_OLLAMA);
    CHECK_EQ_STR(r.repo, "library/smollm2");
    CHECK_EQ_STR(r.tag, "latest");
    CHECK(hub_ref_parse("ollama:someone/model:q4_k_m", &r, NULL) == 0);
    CHECK_EQ_STR(r.repo, "someone/model");
    CHECK_EQ_STR(r.tag, "q4_k_m");
    char *n = hub_ref_name(&r);
    CHECK_EQ_STR(n, "ollama:someone/model:q4_k_m");
    free(n);
    CHECK(hub_ref_parse("ollama:smollm2", &r, NULL) == 0);
    n = hub_ref_name(&r);
    CHECK_EQ_STR(n, "ollama:smollm2:latest");
    free(n);

    /* names that could leave the cache folder, or are not names */
    sg_error err;
    const char *bad[] = {"", "noslash", "a/b/c", "../x", "a/..", "a/b:../../x", "a /b",
                         "a/b:", "ollama:", "ollama:a/b/c", "ollama:..", "/a/b"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = hub_ref_parse(bad[i], &r, &err);
        CHECK_MSG(rc == -1, "\"%s\" accepted", bad[i]);
        if (rc == -1) CHECK(strstr(err.msg, "not a model name") != NULL);
    }
}

static const char *pick1(char **names, size_t n, const char *quant) {
    static char out[256];
    const char **p;
    size_t np;
    if (hub_gguf_pick(names, n, quant, &p, &np, NULL)) return NULL;
    snprintf(out, sizeof out, "%s", p[0]);
    free(p);
    return out;
}

static void test_gguf_pick(void) {
    char *repo[] = {"README.md", "SmolLM3-f16.gguf", "SmolLM3-Q8_0.gguf", "SmolLM3-Q4_K_M.gguf",
                    "SmolLM3-Q4_K_S.gguf", "mmproj-SmolLM3-Q4_K_M.gguf", "SmolLM3-Q4_K.gguf"};
    size_t n = sizeof repo / sizeof *repo;
    CHECK_EQ_STR(pick1(repo, n, ""), "SmolLM3-Q4_K_M.gguf");        /* the default quant */
    CHECK_EQ_STR(pick1(repo, n, NULL), "SmolLM3-Q4_K_M.gguf");
    CHECK_EQ_STR(pick1(repo, n, "q8_0"), "SmolLM3-Q8_0.gguf");      /* case-insensitive */
    CHECK_EQ_STR(pick1(repo, n, "F16"), "SmolLM3-f16.gguf");
    CHECK_EQ_STR(pick1(repo, n, "Q4_K"), "SmolLM3-Q4_K.gguf");      /* a whole token wins */
    CHECK_EQ_STR(pick1(repo, n, "Q4_K_S"), "SmolLM3-Q4_K_S.gguf");
    sg_error err;
    const char **p;
    size_t np;
    CHECK(hub_gguf_pick(repo, n, "Q2_K", &p, &np, &err) == -1);
    CHECK(strstr(err.msg, "Q2_K") && strstr(err.msg, "Q8_0") && strstr(err.msg, "F16"));

    /* without Q4_K_M: the first .gguf by name; never an mmproj file */
    char *other[] = {"mmproj-a-Q4_K_M.gguf", "z-Q8_0.gguf", "b-Q6_K.gguf"};
    CHECK_EQ_STR(pick1(other, 3, ""), "b-Q6_K.gguf");
    char *only_mmproj[] = {"mmproj-f16.gguf", "config.json"};
    CHECK(pick1(only_mmproj, 2, "") == NULL);

    /* a split model: every shard, in order, whichever shard matched */
    char *split[] = {"m-Q4_K_M-00003-of-00003.gguf", "m-Q4_K_M-00001-of-00003.gguf",
                     "m-Q4_K_M-00002-of-00003.gguf", "m-Q8_0.gguf"};
    CHECK(hub_gguf_pick(split, 4, "", &p, &np, NULL) == 0);
    CHECK_EQ_INT(np, 3);
    if (np == 3) {
        CHECK_EQ_STR(p[0], "m-Q4_K_M-00001-of-00003.gguf");
        CHECK_EQ_STR(p[2], "m-Q4_K_M-00003-of-00003.gguf");
    }
    free(p);
    char *missing[] = {"m-Q4_K_M-00001-of-00002.gguf"};
    CHECK(hub_gguf_pick(missing, 1, "", &p, &np, &err) == -1);
    CHECK(strstr(err.msg, "00002-of-00002") != NULL);

    /* quants in subfolders (one folder per quant, as some repositories do) */
    char *sub[] = {"Q8_0/m-Q8_0.gguf", "Q4_K_M/m-Q4_K_M-00001-of-00002.gguf", "Q4_K_M/m-Q4_K_M-00002-of-00002.gguf"};
    CHECK(hub_gguf_pick(sub, 3, "q4_k_m", &p, &np, NULL) == 0);
    CHECK_EQ_INT(np, 2);
    free(p);
}

static void test_quant_of(void) {
    const char *cases[][2] = {
        {"SmolLM3-Q4_K_M.gguf", "Q4_K_M"}, {"llama-2-7b.Q5_K_S.gguf", "Q5_K_S"},
        {"SmolLM3-f16.gguf", "F16"}, {"model-bf16-00001-of-00002.gguf", "BF16"},
        {"x-UD-IQ2_XXS.gguf", "IQ2_XXS"}, {"dir/Qwen3-8B-Q8_0.gguf", "Q8_0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *q = hub_gguf_quant_of(cases[i][0]);
        CHECK_EQ_STR(q, cases[i][1]);
        free(q);
    }
    CHECK(hub_gguf_quant_of("model.gguf") == NULL);
}

static void test_cache_dirs(void) {
    setenv("HF_HUB_CACHE", "/x/hub", 1);
    char *d = hub_hf_cache_dir();
    CHECK_EQ_STR(d, "/x/hub");
    free(d);
    unsetenv("HF_HUB_CACHE");
    setenv("HF_HOME", "/y", 1);
    d = hub_hf_cache_dir();
    CHECK_EQ_STR(d, "/y/hub");
    free(d);
    d = hub_hf_repo_dir("ggml-org/SmolLM3-3B-GGUF");
    CHECK_EQ_STR(d, "/y/hub/models--ggml-org--SmolLM3-3B-GGUF");
    free(d);
    setenv("OLLAMA_MODELS", "/z", 1);
    d = hub_ollama_dir();
    CHECK_EQ_STR(d, "/z");
    free(d);
}

static void mk(const char *path, const char *content) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    for (char *s = dir + 1; *s; s++)
        if (*s == '/') { *s = 0; mkdir(dir, 0755); *s = '/'; }
    if (content) CHECK(tu_write(path, content, strlen(content)) == 0);
}

/* Caches written by hand: what huggingface-cli and ollama leave, read by resolve/list/rm. */
static void test_resolve_list_remove(void) {
    const char *t = tu_tmpdir();
    setenv("HF_HOME", tu_path("%s/hf", t), 1);
    setenv("OLLAMA_MODELS", tu_path("%s/ollama", t), 1);
    char repo[1024], snap[1100], ol[1024];   /* copies: tu_path's buffers are reused */
    snprintf(repo, sizeof repo, "%s/hf/hub/models--o--r-GGUF", t);
    snprintf(snap, sizeof snap, "%s/snapshots/c0ffee", repo);
    mk(tu_path("%s/blobs/aaa", repo), "q4 bytes");
    mk(tu_path("%s/blobs/bbb", repo), "q8 bytes!");
    mk(tu_path("%s/refs/main", repo), "c0ffee");
    mk(tu_path("%s/x", snap), NULL);
    CHECK(symlink("../../blobs/aaa", tu_path("%s/m-Q4_K_M.gguf", snap)) == 0);
    CHECK(symlink("../../blobs/bbb", tu_path("%s/m-Q8_0.gguf", snap)) == 0);
    CHECK(symlink("../../blobs/missing", tu_path("%s/m-Q6_K.gguf", snap)) == 0);   /* no blob */

    sg_error err;
    char *p = hub_resolve("o/r-GGUF", &err);
    CHECK_EQ_STR(p, tu_path("%s/m-Q4_K_M.gguf", snap));
    free(p);
    p = hub_resolve("o/r-GGUF:q8_0", &err);
    CHECK_EQ_STR(p, tu_path("%s/m-Q8_0.gguf", snap));
    free(p);
    p = hub_resolve("o/r-GGUF:Q6_K", &err);   /* a link without its blob is not pulled */
    CHECK(p == NULL);
    CHECK(strstr(err.msg, "not pulled") && strstr(err.msg, "smolgate pull o/r-GGUF:Q6_K"));
    free(p);
    CHECK(hub_resolve("o/absent", &err) == NULL);

    /* an Ollama model */
    snprintf(ol, sizeof ol, "%s/ollama", t);
    const char *dg = "1111111111111111111111111111111111111111111111111111111111111111";
    const char *dc = "2222222222222222222222222222222222222222222222222222222222222222";
    mk(tu_path("%s/blobs/sha256-%s", ol, dg), "gguf bytes");
    mk(tu_path("%s/blobs/sha256-%s", ol, dc), "{\"file_type\":\"Q4_0\"}");
    char manifest[1024];
    snprintf(manifest, sizeof manifest,
             "{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:%s\",\"size\":20},\"layers\":"
             "[{\"mediaType\":\"application/vnd.ollama.image.model\",\"digest\":\"sha256:%s\",\"size\":10}]}",
             dc, dg);
    mk(tu_path("%s/manifests/registry.ollama.ai/library/tiny/latest", ol), manifest);
    p = hub_resolve("ollama:tiny", &err);
    CHECK_EQ_STR(p, tu_path("%s/blobs/sha256-%s", ol, dg));
    free(p);

    hub_model *m;
    size_t n;
    CHECK(hub_list(&m, &n, &err) == 0);
    CHECK_EQ_INT(n, 3);
    if (n == 3) {
        CHECK_EQ_STR(m[0].name, "o/r-GGUF:Q4_K_M");
        CHECK_EQ_INT(m[0].size, 8);
        CHECK_EQ_STR(m[1].name, "o/r-GGUF:Q8_0");
        CHECK_EQ_STR(m[2].name, "ollama:tiny:latest");
        CHECK_EQ_STR(m[2].quant, "Q4_0");
    }
    hub_models_free(m, n);

    uint64_t freed = 0;
    CHECK(hub_remove("o/r-GGUF:Q8_0", &freed, &err) == 0);
    CHECK_EQ_INT(freed, 9);
    CHECK(access(tu_path("%s/blobs/bbb", repo), F_OK) != 0);
    CHECK(access(tu_path("%s/blobs/aaa", repo), F_OK) == 0);
    CHECK(hub_remove("o/r-GGUF:Q8_0", &freed, &err) == -1);
    CHECK(hub_remove("o/r-GGUF:Q4_K_M", &freed, &err) == 0);
    /* m-Q6_K.gguf's dangling link remains, but no model does: the repository goes */
    CHECK(hub_remove("o/r-GGUF:Q6_K", &freed, &err) == 0);
    CHECK(access(repo, F_OK) != 0);
    CHECK(hub_remove("ollama:tiny", &freed, &err) == 0);
    CHECK(access(tu_path("%s/blobs/sha256-%s", ol, dg), F_OK) != 0);
    CHECK(hub_list(&m, &n, &err) == 0);
    CHECK_EQ_INT(n, 0);
    hub_models_free(m, n);
}

int main(void) {
    RUN(test_ref_parse);
    RUN(test_gguf_pick);
    RUN(test_quant_of);
    RUN(test_cache_dirs);
    RUN(test_resolve_list_remove);
    return tu_finish("test_hub");
}
