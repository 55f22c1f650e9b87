/* speculate.c: prompt-lookup drafting and its adaptive length (speculate.h). */
#include "engine/speculate.h"

#include <string.h>

int spec_lookup(void *ctx, const int32_t *hist, size_t n, int k, int32_t *out) {
    (void)ctx;
    if (k <= 0) return 0;
    for (size_t g = SPEC_NGRAM_MAX; g >= 1; g--) {
        if (n < g + 1) continue;
        const int32_t *suffix = hist + n - g;
        /* latest earlier occurrence first: in a quoted passage or a loop, the nearest
         * copy is the one the answer is following */
        for (size_t i = n - g; i-- > 0;) {
            if (hist[i] != suffix[0] || memcmp(hist + i, suffix, g * sizeof *hist) != 0) continue;
            /* what followed it; past the end of the history, the draft's own tokens (a
             * loop of period n - from - g .. runs on for all k) */
            size_t from = i + g;
            for (int j = 0; j < k; j++) out[j] = from + j < n ? hist[from + j] : out[from + j - n];
            return k;
        }
    }
    return 0;
}

void spec_init(sg_spec *s, int max_draft) {
    memset(s, 0, sizeof *s);
    s->max_draft = max_draft < 0 ? 0 : max_draft > SPEC_MAX_DRAFT ? SPEC_MAX_DRAFT : max_draft;
    /* start short: a first guess costs little when wrong, and doubles when right */
    s->k = s->max_draft < 2 ? s->max_draft : 2;
    s->pause_next = SPEC_FIRST_PAUSE;
    s->source = spec_lookup;
}

int spec_draft(sg_spec *s, const int32_t *hist, size_t n, int limit, int32_t *out) {
    if (s->max_draft <= 0 || limit <= 0) return 0;
    if (s->pause > 0) { s->pause--; return 0; }
    int k = s->k < limit ? s->k : limit;
    int m = s->source(s->source_ctx, hist, n, k, out);
    return m < 0 ? 0 : m > k ? k : m;
}

void spec_update(sg_spec *s, int drafted, int accepted) {
    if (drafted <= 0) return;
    s->rounds++;
    s->drafted += drafted;
    s->accepted += accepted;
    if (accepted == drafted) s->k = 2 * s->k < s->max_draft ? 2 * s->k : s->max_draft;
    else s->k = accepted + 1;
    if (accepted > 0) {
        s->misses = 0;
        s->probing = false;
        s->pause_next = SPEC_FIRST_PAUSE;
        return;
    }
    /* twice nothing (once, for the probe after a pause): this text is not being quoted;
     * wait, longer each time it is still not */
    if (!s->probing && ++s->misses < 2) return;
    s->misses = 0;
    s->probing = true;
    s->pause = s->pause_next;
    s->pause_next = 2 * s->pause_next < SPEC_MAX_PAUSE ? 2 * s->pause_next : SPEC_MAX_PAUSE;
}
