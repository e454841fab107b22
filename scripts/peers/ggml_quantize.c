// ggml's quantizers as llama-quantize calls them (ggml_quantize_chunk, from the very
// libggml-base the peers script builds), on raw f32 rows: the reference bytes for
// quantbench's own quantizers (scripts/make_reference.py --only quantizers).
//
//   ggml_quantize TYPE ROWS COLS IN.f32 OUT.bin [IMATRIX.f32|-] [BACK.f32]
//
// TYPE is ggml.h's type id (12 = Q4_K ...); IN holds ROWS x COLS little-endian f32;
// IMATRIX, when given (not "-"), COLS f32 importance weights (what llama-imatrix writes
// per tensor), passed as ggml_quantize_chunk's quant_weights; BACK, when given, receives
// the blocks dequantized by the type's own to_float (ggml's dequantize_row_*).
#include "ggml.h"
#include <stdio.h>
#include <stdlib.h>

static void *read_all(const char *path, size_t want) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    void *buf = malloc(want);
    if (fread(buf, 1, want, f) != want) { fprintf(stderr, "%s: short read\n", path); exit(2); }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 6 || argc > 8) {
        fprintf(stderr, "usage: %s TYPE ROWS COLS IN.f32 OUT.bin [IMATRIX.f32|-] [BACK.f32]\n", argv[0]);
        return 2;
    }
    enum ggml_type type = (enum ggml_type) atoi(argv[1]);
    int64_t rows = atoll(argv[2]), cols = atoll(argv[3]);
    float *src = read_all(argv[4], (size_t) (rows * cols) * sizeof(float));
    float *imatrix = argc >= 7 && argv[6][0] != '-' ? read_all(argv[6], (size_t) cols * sizeof(float)) : NULL;
    size_t bytes = ggml_row_size(type, cols) * (size_t) rows;
    void *dst = calloc(1, bytes);
    size_t written = ggml_quantize_chunk(type, src, dst, 0, rows, cols, imatrix);
    if (written != bytes) { fprintf(stderr, "wrote %zu of %zu bytes\n", written, bytes); return 1; }
    FILE *out = fopen(argv[5], "wb");
    if (!out || fwrite(dst, 1, bytes, out) != bytes) { perror(argv[5]); return 1; }
    fclose(out);
    if (argc == 8) {
        size_t n = (size_t) (rows * cols);
        float *back = malloc(n * sizeof(float));
        ggml_get_type_traits(type)->to_float(dst, back, (int64_t) n);
        FILE *bf = fopen(argv[7], "wb");
        if (!bf || fwrite(back, sizeof(float), n, bf) != n) { perror(argv[7]); return 1; }
        fclose(bf);
    }
    ggml_quantize_free();
    return 0;
}
