/* fuzz_hf_config.c: libFuzzer target for the Hugging Face config.json reader
 * (model_config_from_hf): any bytes, parsed as JSON, must give a config or an error. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_t *j = json_loadb((const char *)data, size, 0, NULL);
    if (!j) return 0;
    sg_model_config cfg;
    sg_error err;
    if (model_config_from_hf(&cfg, j, &err) == 0) {
        for (int i = 0; i < cfg.n_layers; i++) (void)cfg.rope_layer[i];
        model_config_free(&cfg);
    }
    json_decref(j);
    return 0;
}
