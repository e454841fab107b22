// ggml's CPU product of one activation row against weight rows, as llama.cpp's CPU
// backend computes a matrix product (the activations rounded by the type's vec_dot_type
// from_float, then the type's vec_dot per row): the reference for quantbench's own
// kernels (tests/llama_cpp_engine.rs builds it against the engine's own llama.cpp).
//
//   ggml_vec_dot TYPE ROWS K W.bin X.f32
//
// W holds ROWS rows of K weights in ggml type TYPE (ggml.h's id), X K little-endian
// f32; prints each row's result as the hex of its f32 bits, one a line.
#include "ggml.h"
#include "ggml-cpu.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *read_all(const char *path, size_t want) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    void *buf = malloc(want);
    if (fread(buf, 1, want, f) != want) { fprintf(stderr, "%s: short read\n", path); exit(2); }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s TYPE ROWS K W.bin X.f32\n", argv[0]);
        return 2;
    }
    ggml_cpu_init();
    enum ggml_type type = (enum ggml_type) atoi(argv[1]);
    int64_t rows = atoll(argv[2]), k = atoll(argv[3]);
    size_t row_size = ggml_row_size(type, k);
    char *w = read_all(argv[4], row_size * (size_t) rows);
    float *x = read_all(argv[5], (size_t) k * sizeof(float));
    const struct ggml_type_traits_cpu *t = ggml_get_type_traits_cpu(type);
    enum ggml_type vt = t->vec_dot_type;
    void *xq = malloc(ggml_row_size(vt, k));
    ggml_get_type_traits_cpu(vt)->from_float(x, xq, k);
    for (int64_t r = 0; r < rows; r++) {
        float s = 0;
        t->vec_dot((int) k, &s, 0, w + (size_t) r * row_size, 0, xq, 0, 1);
        unsigned bits;
        memcpy(&bits, &s, 4);
        printf("%08x\n", bits);
    }
    return 0;
}
