// llama.cpp's own memory accounting (llama_get_memory_breakdown, in its C++ staging
// header src/llama-ext.h, which llama-cpp-sys-2 neither installs nor binds) as a C
// function: one row per backend buffer type with the bytes it holds for the model's
// weights, the context (KV cache) and the compute buffers. The two declarations below
// are llama-ext.h's, unchanged: the struct's layout and the function's signature must
// match the llama.cpp this is linked against (llama-cpp-sys-2's, pinned in Cargo.toml).
#include "llama.h"
#include "ggml-backend.h"

#include <cstdint>
#include <cstring>
#include <map>

struct llama_memory_breakdown_data {
    size_t model   = 0;
    size_t context = 0;
    size_t compute = 0;
};

using llama_memory_breakdown = std::map<ggml_backend_buffer_type_t, llama_memory_breakdown_data>;

LLAMA_API llama_memory_breakdown llama_get_memory_breakdown(const struct llama_context * ctx);

// Writes up to `max_rows` rows: the buffer type's name into names[i * name_len ...]
// (NUL-terminated, cut to name_len - 1 bytes) and bytes[3 i + 0, 1, 2] = model,
// context, compute. Returns the number of rows there are (which may exceed max_rows),
// or -1 when llama.cpp threw.
extern "C" int qb_llama_memory_breakdown(const struct llama_context * ctx, char * names,
                                         size_t name_len, uint64_t * bytes, int max_rows) {
    try {
        const llama_memory_breakdown mb = llama_get_memory_breakdown(ctx);
        int i = 0;
        for (const auto & row : mb) {
            if (i < max_rows) {
                const char * name = ggml_backend_buft_name(row.first);
                std::strncpy(names + (size_t) i * name_len, name ? name : "?", name_len - 1);
                names[(size_t) i * name_len + name_len - 1] = '\0';
                bytes[3 * i + 0] = row.second.model;
                bytes[3 * i + 1] = row.second.context;
                bytes[3 * i + 2] = row.second.compute;
            }
            i++;
        }
        return i;
    } catch (...) {
        return -1;
    }
}
