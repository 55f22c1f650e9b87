/* main.c: the smolgate command line. One binary: the inference engine's commands
 * (run, chat, eval, tokenize, convert, quantize, make-model, info, perplexity, bench) and the
 * gateway (serve, usage), and the models they use (pull, list, rm). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "common/log.h"
#include "common/version.h"
#include "engine/kernels.h"

static void usage(FILE *f) {
    fputs("usage: smolgate COMMAND [options]\n"
          "\n"
          "engine:\n"
          "  run MODEL -p TEXT | --ids 1,2,3   generate a completion (streams to stdout)\n"
          "  chat MODEL                         interactive chat\n"
          "  eval MODEL --ids 1,2,3 --logits F  write every position's logits (float32)\n"
          "  tokenize MODEL|tokenizer.json      text on stdin -> ids (JSON array)\n"
          "  convert HF_FOLDER OUT.gguf [TYPE]  Hugging Face folder -> GGUF (F32 F16 BF16 Q8_0)\n"
          "  quantize MODEL OUT.gguf TYPE       quantize as llama.cpp's recipes do (Q8_0 Q4_0\n"
          "                                     Q4_K_M Q5_K_M Q6_K)\n"
          "  make-model OUT [options]           write a random-weight model (GGUF or HF)\n"
          "  info MODEL                         print a model's configuration\n"
          "  perplexity MODEL FILE              perplexity over a text; KL divergence from a\n"
          "                                     reference model (--save-logits, --kl-base)\n"
          "  bench MODEL                        prompt / generation tokens/s, memory bandwidth,\n"
          "                                     decode roofline, concurrent sequences\n"
          "\n"
          "models:\n"
          "  pull MODEL                         download smollm3, OWNER/REPO[:QUANT] (Hugging Face)\n"
          "                                     or ollama:NAME[:TAG] into the usual caches\n"
          "  list                               pulled models: name, size, quant, path\n"
          "  rm MODEL                           remove a pulled model\n"
          "\n"
          "gateway:\n"
          "  serve [--config FILE] [--listen HOST:PORT] [--model PATH]...\n"
          "                                     the AI gateway (OpenAI and Anthropic APIs)\n"
          "  usage [--db PATH | --postgres URL | --config FILE] [--from T] [--to T]\n"
          "        [--key|--route|--provider|--model X] [--group-by LIST] [--format table|csv|json]\n"
          "                                     requests, tokens and cost from the ledger\n"
          "\n"
          "  --version                          the version and the kernels this CPU runs\n"
          "\n"
          "MODEL is a .gguf file or a Hugging Face folder. `smolgate COMMAND --help` lists\n"
          "a command's options; docs/engine.md documents them all.\n", f);
}

int main(int argc, char **argv) {
    sg_log_init_from_env();
    kern_select(NULL);
    if (argc < 2) { usage(stderr); return 2; }
    const char *cmd = argv[1];
    static const struct { const char *name; int (*fn)(int, char **); } cmds[] = {
        {"run", cli_run}, {"chat", cli_chat}, {"eval", cli_eval}, {"tokenize", cli_tokenize},
        {"convert", cli_convert}, {"make-model", cli_make_model}, {"info", cli_info}, {"serve", cli_serve},
        {"perplexity", cli_perplexity}, {"bench", cli_bench}, {"quantize", cli_quantize},
        {"usage", cli_usage}, {"pull", cli_pull}, {"list", cli_list}, {"rm", cli_rm},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(cmd, cmds[i].name)) return cmds[i].fn(argc - 2, argv + 2);
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) { usage(stdout); return 0; }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("smolgate %s (kernels: %s, matrix-matrix: %s)\n", SMOLGATE_VERSION, kern_active()->name,
               kern_active()->gemm_name ? kern_active()->gemm_name : "none");
        return 0;
    }
    char names[512] = "";
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        strncat(names, cmds[i].name, sizeof names - strlen(names) - 2);
        strcat(names, " ");
    }
    const char *near = cli_did_you_mean(cmd, names);
    if (near) fprintf(stderr, "smolgate: unknown command \"%s\" (did you mean \"%s\"?)\n", cmd, near);
    else fprintf(stderr, "smolgate: unknown command \"%s\"\n", cmd);
    fputs("run `smolgate --help` for the commands\n", stderr);
    return 2;
}
