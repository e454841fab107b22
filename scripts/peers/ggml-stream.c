// ggml's one-row products (a decode step's) over the same shapes and bytes as
// quantbench's `examples/streaming`, driven pass by pass from that example so that the
// two engines read their weights in turn in one timeline (the VM's swings between
// minutes reach both alike). Built against the llama.cpp that cpu-speed.sh builds:
// scripts/peers/kernels.sh builds it and runs the pair.
//
//   ggml-stream FORMAT SHAPES THREADS PAGES
//     FORMAT  f32 | f16 | bf16   (ggml's CPU backend repacks block formats at load,
//                                 which plain graph tensors do not; dense only)
//     SHAPES  rows x cols pairs, e.g. 8192x2048,2048x8192
//     THREADS ggml's compute threads (llama-bench's -t)
//     PAGES   huge (one mapping, MADV_HUGEPAGE before it is written) | small (malloc)
//
// Protocol: prints "ready" once every matrix is written; then for each line "I" read on
// stdin runs one pass over shape I's matrices (about 1 GiB of distinct matrices, one
// graph of one mul_mat each, as a decode step's graph holds its layers' products) and
// prints the pass's seconds. EOF ends it.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "ggml-cpu.h"
#include "ggml.h"

#define PASS_BYTES (1ull << 30)
#define MAX_SHAPES 8

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

// Normal-ish values of scale 0.02 (sum of four uniforms), as the example's randn.
static uint64_t state = 0x9E3779B97F4A7C15ull;
static float next_value(void) {
    float s = 0.0f;
    for (int i = 0; i < 4; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        s += (float)((state >> 40) & 0xFFFFFF) / 16777216.0f - 0.5f;
    }
    return s * 0.02f * 1.732f;
}

int main(int argc, char ** argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s f32|f16|bf16 NxK[,NxK...] THREADS huge|small\n", argv[0]);
        return 2;
    }
    enum ggml_type type;
    size_t elem;
    if (!strcmp(argv[1], "f32")) {
        type = GGML_TYPE_F32, elem = 4;
    } else if (!strcmp(argv[1], "f16")) {
        type = GGML_TYPE_F16, elem = 2;
    } else if (!strcmp(argv[1], "bf16")) {
        type = GGML_TYPE_BF16, elem = 2;
    } else {
        fprintf(stderr, "format %s: use f32, f16 or bf16\n", argv[1]);
        return 2;
    }
    int64_t rows[MAX_SHAPES], cols[MAX_SHAPES], count[MAX_SHAPES];
    int shapes = 0;
    for (char * s = strtok(argv[2], ","); s && shapes < MAX_SHAPES; s = strtok(NULL, ",")) {
        long long n, k;
        if (sscanf(s, "%lldx%lld", &n, &k) != 2 || n <= 0 || k <= 0) {
            fprintf(stderr, "shape %s: use ROWSxCOLS\n", s);
            return 2;
        }
        rows[shapes] = n, cols[shapes] = k;
        size_t bytes = (size_t)n * (size_t)k * elem;
        count[shapes] = (int64_t)((PASS_BYTES + bytes - 1) / bytes);
        if (count[shapes] < 4) count[shapes] = 4;
        shapes++;
    }
    int threads = atoi(argv[3]);
    int huge = !strcmp(argv[4], "huge");
    if (threads <= 0 || (!huge && strcmp(argv[4], "small"))) {
        fprintf(stderr, "threads %s / pages %s: a positive count, huge or small\n", argv[3], argv[4]);
        return 2;
    }

    size_t total = 0, tensors = 0;
    for (int i = 0; i < shapes; i++) {
        total += (size_t)count[i] * ((size_t)rows[i] * cols[i] * elem + rows[i] * 4 + 64);
        total += (size_t)cols[i] * 4;
        tensors += 2 * (size_t)count[i] + 1;
    }
    size_t graph_nodes = 4096;
    size_t mem = total + tensors * ggml_tensor_overhead() +
                 (size_t)shapes * ggml_graph_overhead_custom(graph_nodes, false) + (64u << 20);
    void * buf;
    if (huge) {
        mem = (mem + (2u << 20) - 1) & ~((size_t)(2u << 20) - 1);
        buf = mmap(NULL, mem, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (buf == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        madvise(buf, mem, MADV_HUGEPAGE);
    } else {
        buf = malloc(mem);
        if (!buf) {
            perror("malloc");
            return 1;
        }
    }
    ggml_cpu_init();
    struct ggml_init_params params = {mem, buf, false};
    struct ggml_context * ctx = ggml_init(params);

    struct ggml_cgraph * graphs[MAX_SHAPES];
    for (int i = 0; i < shapes; i++) {
        int64_t n = rows[i], k = cols[i];
        float * src = malloc((size_t)n * k * sizeof(float));
        for (int64_t j = 0; j < n * k; j++) src[j] = next_value();
        struct ggml_tensor * x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, 1);
        for (int64_t j = 0; j < k; j++) ((float *)x->data)[j] = (float)((j % 7) - 3) * 0.1f;
        graphs[i] = ggml_new_graph_custom(ctx, graph_nodes, false);
        for (int64_t c = 0; c < count[i]; c++) {
            struct ggml_tensor * w = ggml_new_tensor_2d(ctx, type, k, n);
            if (type == GGML_TYPE_F32) {
                memcpy(w->data, src, (size_t)n * k * 4);
            } else if (type == GGML_TYPE_F16) {
                ggml_fp32_to_fp16_row(src, (ggml_fp16_t *)w->data, n * k);
            } else {
                ggml_fp32_to_bf16_row(src, (ggml_bf16_t *)w->data, n * k);
            }
            ggml_build_forward_expand(graphs[i], ggml_mul_mat(ctx, w, x));
        }
        free(src);
    }
    // One untimed pass over each shape, so the first timed one is not the first touch.
    for (int i = 0; i < shapes; i++) ggml_graph_compute_with_ctx(ctx, graphs[i], threads);
    printf("ready\n");
    fflush(stdout);

    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        int i = atoi(line);
        if (i < 0 || i >= shapes) {
            fprintf(stderr, "shape index %d of %d\n", i, shapes);
            return 2;
        }
        double t = now();
        if (ggml_graph_compute_with_ctx(ctx, graphs[i], threads) != GGML_STATUS_SUCCESS) {
            fprintf(stderr, "compute failed\n");
            return 1;
        }
        printf("%.9f\n", now() - t);
        fflush(stdout);
    }
    ggml_free(ctx);
    return 0;
}
