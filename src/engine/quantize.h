/* quantize.h: `smolgate quantize`: a model (GGUF file or Hugging Face folder) to a
 * quantized GGUF that llama.cpp and Ollama load unchanged.
 *
 * Each tensor's type follows llama.cpp's recipes (llama_tensor_get_type in its
 * src/llama-quant.cpp), so a Q4_K_M from smolgate is laid out like one from
 * llama-quantize: the output matrix (and the token embedding when it is tied to it) in
 * Q6_K (Q8_0 in Q8_0 files); for _M, attn_v and ffn_down in Q6_K in the layers
 * use_more_bits picks (the first and last eighth, and every third one between); norms
 * and other 1-D tensors untouched; a row length that is not a whole number of blocks
 * falls back as llama.cpp does (Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0, then F16).
 * The block quantizers are quant.c's, of ggml's reference quality.
 *
 * From a GGUF, every metadata key and tensor is carried over in the same order (only
 * general.file_type and general.quantization_version change), as llama-quantize does;
 * quantized inputs are dequantized first (llama-quantize's --allow-requantize). From a
 * Hugging Face folder, the file is laid out as `smolgate convert` writes GGUF. */
#ifndef SG_QUANTIZE_H
#define SG_QUANTIZE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "engine/dtype.h"

/* File types, numbered as llama.cpp's llama_ftype (general.file_type). */
typedef enum quantize_ftype {
    QUANTIZE_Q4_0 = 2,
    QUANTIZE_Q8_0 = 7,
    QUANTIZE_Q4_K_M = 15,
    QUANTIZE_Q5_K_M = 17,
    QUANTIZE_Q6_K = 18,
} quantize_ftype;

/* "Q4_K_M" (any case) to its file type; -1 when not one of the five above. */
int quantize_ftype_from_name(const char *name);
const char *quantize_ftype_name(quantize_ftype ft);

/* What the recipe needs to know about the model. */
typedef struct quantize_model_info {
    int n_layers;
    bool tied_embeddings;    /* no output.weight: token_embd.weight is the output matrix too */
} quantize_model_info;

/* The type llama.cpp's recipe gives tensor `name` (its GGUF name) of n_dims dimensions
 * with rows of `cols`; `current` is returned for tensors that are not quantized (1-D
 * tensors, norms, names not ending in "weight"). */
sg_dtype quantize_tensor_type(quantize_ftype ft, const quantize_model_info *mi, const char *name, int n_dims,
                              int64_t cols, sg_dtype current);

typedef struct quantize_params {
    quantize_ftype ftype;
    int n_threads;           /* 0: all CPUs */
    bool verbose;            /* print each tensor's type choice to stderr */
} quantize_params;

/* Quantizes the model at `in` (a .gguf file or a Hugging Face folder) into the GGUF file
 * `out` (written to a temporary name and renamed, so a failure leaves nothing). */
int quantize_model(const char *in, const char *out, const quantize_params *p, sg_error *err);

#endif
