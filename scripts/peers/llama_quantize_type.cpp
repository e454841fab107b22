// llama-quantize's core for the fixtures: llama_model_quantize with llama-quantize's
// default parameters (its mixes, output tensor quantized, no importance matrix), linked
// against the same llama.cpp as quantbench's llama.cpp engine.
//
//   llama_quantize_type IN.gguf OUT.gguf FTYPE      (FTYPE: llama.h's llama_ftype number)
#include "llama.h"
#include <cstdio>
#include <string>

int main(int argc, char ** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s IN.gguf OUT.gguf FTYPE\n", argv[0]);
        return 2;
    }
    llama_backend_init();
    llama_model_quantize_params params = llama_model_quantize_default_params();
    params.ftype = (llama_ftype) std::stoi(argv[3]);
    if (llama_model_quantize(argv[1], argv[2], &params) != 0) {
        fprintf(stderr, "error: failed to quantize %s\n", argv[1]);
        return 1;
    }
    llama_backend_free();
    return 0;
}
