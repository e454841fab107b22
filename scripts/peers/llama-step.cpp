// One llama-bench test, one repetition per request: llama.cpp's side of quantbench's
// lockstep comparison (`examples/lockstep.rs`, run by scripts/peers/lockstep.sh), which
// alternates a repetition of quantbench with one of this on the same GGUF bytes, so
// that the VM's swings between minutes reach both engines alike.
//
//   llama-step MODEL.gguf PROMPT GEN DEPTH THREADS
//
// Set up as llama-bench sets up a test (tools/llama-bench/llama-bench.cpp): default
// model parameters (mmap, the CPU backend's repacked buffers), n_ctx = PROMPT + GEN +
// DEPTH, n_batch 2048, n_ubatch 512, f16 KV cache, flash attention on auto, its own
// threadpool (poll 50) attached, one warm-up (the prompt, or one generated token). A
// repetition is llama-bench's: the cache cleared, DEPTH tokens restored from a saved
// state (filled once, untimed), then, timed, the prompt in n_batch chunks and GEN tokens
// one llama_decode each, every one synchronised (llama-bench calls llama_process with
// LLAMA_PROCESS_TYPE_DECODE, which is the same context's decode of the same batch).
//
// Protocol: prints "ready" after the warm-up; then for each line read on stdin runs one
// repetition and prints its seconds. EOF ends it.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ggml-cpu.h"
#include "llama.h"

static double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

static void quiet(enum ggml_log_level, const char *, void *) {}

// llama-bench's test_prompt: random ids in n_batch chunks, BOS first where the vocab adds it.
static bool prompt(llama_context * ctx, int n, int n_batch) {
    const llama_vocab * vocab = llama_model_get_vocab(llama_get_model(ctx));
    const int n_vocab = llama_vocab_n_tokens(vocab);
    std::vector<llama_token> tokens(n_batch);
    for (int done = 0; done < n;) {
        int take = std::min(n - done, n_batch);
        tokens[0] = done == 0 && llama_vocab_get_add_bos(vocab) ? llama_vocab_bos(vocab) : std::rand() % n_vocab;
        for (int i = 1; i < take; i++) tokens[i] = std::rand() % n_vocab;
        if (llama_decode(ctx, llama_batch_get_one(tokens.data(), take)) != 0) return false;
        done += take;
    }
    llama_synchronize(ctx);
    return true;
}

// llama-bench's test_gen: one token a decode, synchronised after each.
static bool generate(llama_context * ctx, int n) {
    const llama_vocab * vocab = llama_model_get_vocab(llama_get_model(ctx));
    const int n_vocab = llama_vocab_n_tokens(vocab);
    llama_token token = llama_vocab_get_add_bos(vocab) ? llama_vocab_bos(vocab) : std::rand() % n_vocab;
    for (int i = 0; i < n; i++) {
        if (llama_decode(ctx, llama_batch_get_one(&token, 1)) != 0) return false;
        llama_synchronize(ctx);
        token = std::rand() % n_vocab;
    }
    return true;
}

int main(int argc, char ** argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT GEN DEPTH THREADS\n", argv[0]);
        return 2;
    }
    const int n_prompt = atoi(argv[2]), n_gen = atoi(argv[3]), n_depth = atoi(argv[4]);
    const int threads = atoi(argv[5]);
    if (n_prompt < 0 || n_gen < 0 || n_depth < 0 || n_prompt + n_gen == 0 || threads <= 0) {
        fprintf(stderr, "prompt %s, gen %s, depth %s, threads %s: counts >= 0, a prompt or tokens to generate, threads > 0\n",
                argv[2], argv[3], argv[4], argv[5]);
        return 2;
    }
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model_params mparams = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(argv[1], mparams);
    if (!model) {
        fprintf(stderr, "%s: llama.cpp could not load it\n", argv[1]);
        return 2;
    }
    llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = n_prompt + n_gen + n_depth;
    cparams.n_batch = 2048;
    cparams.n_ubatch = 512;
    cparams.type_k = GGML_TYPE_F16;
    cparams.type_v = GGML_TYPE_F16;
    cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO;
    cparams.n_threads = threads;
    cparams.n_threads_batch = threads;
    llama_context * ctx = llama_init_from_model(model, cparams);
    if (!ctx) {
        fprintf(stderr, "%s: no context\n", argv[1]);
        return 1;
    }
    ggml_threadpool_params tpp = ggml_threadpool_params_default(threads);
    tpp.poll = 50;
    ggml_threadpool * pool = ggml_threadpool_new(&tpp);
    llama_attach_threadpool(ctx, pool, nullptr);

    llama_memory_clear(llama_get_memory(ctx), false);
    bool ok = n_prompt > 0 ? prompt(ctx, n_prompt, cparams.n_batch) : true;
    ok = ok && (n_gen > 0 ? generate(ctx, 1) : true);
    std::vector<uint8_t> depth_state;
    if (ok && n_depth > 0) {
        llama_memory_clear(llama_get_memory(ctx), false);
        ok = prompt(ctx, n_depth, cparams.n_batch);
        depth_state.resize(llama_state_seq_get_size(ctx, 0));
        llama_state_seq_get_data(ctx, depth_state.data(), depth_state.size(), 0);
    }
    if (!ok) {
        fprintf(stderr, "warm-up failed\n");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);

    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        llama_memory_clear(llama_get_memory(ctx), false);
        if (n_depth > 0 &&
            llama_state_seq_set_data(ctx, depth_state.data(), depth_state.size(), 0) == 0) {
            fprintf(stderr, "restoring the depth's state failed\n");
            return 1;
        }
        auto t = std::chrono::steady_clock::now();
        if ((n_prompt > 0 && !prompt(ctx, n_prompt, cparams.n_batch)) || (n_gen > 0 && !generate(ctx, n_gen))) {
            fprintf(stderr, "decode failed\n");
            return 1;
        }
        printf("%.9f\n", seconds_since(t));
        fflush(stdout);
    }
    llama_free(ctx);
    ggml_threadpool_free(pool);
    llama_model_free(model);
    return 0;
}
