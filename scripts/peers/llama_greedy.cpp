// llama.cpp's own tokenizer and greedy generation, as token ids, for quantbench's
// real-model fixtures (scripts/make_real_reference.py builds and runs it).
//
//   llama_greedy MODEL.gguf N_NEW KV_TYPE [deployed|bos] < texts.jsonl > out.jsonl
//
// Each input line is a JSON string (the text). For each, one output line:
//   {"ids": [...], "new": [...]}
// `ids` are the text's tokens (no BOS/EOS added, special tokens parsed, as quantbench's
// own tokenizer encodes; with `deployed`, as llama-cli and llama-perplexity tokenize a
// text: BOS first where the model asks for one, special tokens not parsed, which is what
// quantbench's llama.cpp engine does; with `bos`, BOS first where the model asks for one
// and special tokens parsed, as quantbench's own engine encodes a prompt of a model
// that asks for BOS); `new` the N_NEW greedy tokens after them (empty
// when N_NEW is 0; generation does not stop at end-of-generation tokens, as quantbench's
// exact-N generation does not). KV_TYPE is the KV cache's type: f32 (what quantbench's
// own engine keeps) or f16 (llama.cpp's default). Flash attention is off.
// Based on llama.cpp's examples/simple/simple.cpp (MIT).
#include "llama.h"
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

static void batch_set_tokens(llama_batch_ext * batch, const llama_token * tokens, int32_t n_tokens, llama_pos pos_0) {
    llama_batch_ext_clear(batch);
    for (int32_t i = 0; i < n_tokens; ++i) {
        const int32_t idx = llama_batch_ext_add_token(batch, 0, tokens[i]);
        const llama_pos pos = pos_0 + i;
        llama_batch_ext_set_pos(batch, idx, &pos);
    }
    llama_batch_ext_set_output_logits(batch, n_tokens - 1, true);
}

// The one JSON string on a line, unescaped (\", \\, \n, \t, \r, \/, \uXXXX).
static bool parse_json_string(const std::string & line, std::string & out) {
    size_t i = line.find('"');
    if (i == std::string::npos) return false;
    out.clear();
    for (++i; i < line.size(); ++i) {
        char c = line[i];
        if (c == '"') return true;
        if (c != '\\') { out += c; continue; }
        if (++i >= line.size()) return false;
        switch (line[i]) {
            case 'n': out += '\n'; break;
            case 't': out += '\t'; break;
            case 'r': out += '\r'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'u': {
                if (i + 4 >= line.size()) return false;
                unsigned cp = std::stoul(line.substr(i + 1, 4), nullptr, 16);
                i += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF && line.compare(i + 1, 2, "\\u") == 0) {
                    unsigned lo = std::stoul(line.substr(i + 3, 4), nullptr, 16);
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
                if (cp < 0x80) out += (char) cp;
                else if (cp < 0x800) { out += (char) (0xC0 | (cp >> 6)); out += (char) (0x80 | (cp & 0x3F)); }
                else if (cp < 0x10000) { out += (char) (0xE0 | (cp >> 12)); out += (char) (0x80 | ((cp >> 6) & 0x3F)); out += (char) (0x80 | (cp & 0x3F)); }
                else { out += (char) (0xF0 | (cp >> 18)); out += (char) (0x80 | ((cp >> 12) & 0x3F)); out += (char) (0x80 | ((cp >> 6) & 0x3F)); out += (char) (0x80 | (cp & 0x3F)); }
                break;
            }
            default: out += line[i];
        }
    }
    return false;
}

static void print_ids(const char * key, const std::vector<llama_token> & ids) {
    printf("\"%s\": [", key);
    for (size_t i = 0; i < ids.size(); ++i) printf(i ? ", %d" : "%d", ids[i]);
    printf("]");
}

int main(int argc, char ** argv) {
    if (argc != 4 && !(argc == 5 && (strcmp(argv[4], "deployed") == 0 || strcmp(argv[4], "bos") == 0))) {
        fprintf(stderr, "usage: %s MODEL.gguf N_NEW f32|f16 [deployed|bos] < texts.jsonl\n", argv[0]);
        return 2;
    }
    const bool add_bos = argc == 5;
    const bool parse_special = argc == 4 || strcmp(argv[4], "bos") == 0;
    const std::string model_path = argv[1];
    const int n_new = std::stoi(argv[2]);
    const ggml_type kv = strcmp(argv[3], "f16") == 0 ? GGML_TYPE_F16 : GGML_TYPE_F32;

    llama_backend_init();
    llama_model_params model_params = llama_model_default_params();
    model_params.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), model_params);
    if (model == NULL) {
        fprintf(stderr, "error: unable to load %s\n", model_path.c_str());
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);

    std::string line, text;
    while (std::getline(std::cin, line)) {
        if (!parse_json_string(line, text)) continue;
        const int n = -llama_tokenize(vocab, text.c_str(), text.size(), NULL, 0, add_bos, parse_special);
        std::vector<llama_token> ids(n);
        if (llama_tokenize(vocab, text.c_str(), text.size(), ids.data(), ids.size(), add_bos, parse_special) < 0) {
            fprintf(stderr, "error: failed to tokenize\n");
            return 1;
        }
        std::vector<llama_token> out;
        if (n_new > 0 && n > 0) {
            llama_context_params ctx_params = llama_context_default_params();
            ctx_params.n_ctx = n + n_new;
            ctx_params.n_batch = n;
            ctx_params.type_k = kv;
            ctx_params.type_v = kv;
            ctx_params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
            llama_context * ctx = llama_init_from_model(model, ctx_params);
            if (ctx == NULL) {
                fprintf(stderr, "error: failed to create the context\n");
                return 1;
            }
            auto sparams = llama_sampler_chain_default_params();
            llama_sampler * smpl = llama_sampler_chain_init(sparams);
            llama_sampler_chain_add(smpl, llama_sampler_init_greedy());
            llama_batch_ext * batch = llama_batch_ext_init(ctx);
            batch_set_tokens(batch, ids.data(), n, 0);
            int pos = 0, n_tokens = n;
            while ((int) out.size() < n_new) {
                if (llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch)) {
                    fprintf(stderr, "error: failed to eval\n");
                    return 1;
                }
                pos += n_tokens;
                llama_token t = llama_sampler_sample(smpl, ctx, -1);
                out.push_back(t);
                batch_set_tokens(batch, &t, 1, pos);
                n_tokens = 1;
            }
            llama_batch_ext_free(batch);
            llama_sampler_free(smpl);
            llama_free(ctx);
        }
        printf("{");
        print_ids("ids", ids);
        printf(", ");
        print_ids("new", out);
        printf("}\n");
        fflush(stdout);
    }
    llama_model_free(model);
    return 0;
}
