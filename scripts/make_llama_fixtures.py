#!/usr/bin/env python3
"""Fixtures for the llama.cpp engine: tiny random models of architectures quantbench's
own engine does not run, converted by llama.cpp's own converter and quantized by
llama.cpp's own quantizer to types it has no kernel for.

  tests/fixtures/llama-engine/gemma3-tiny-IQ4_XS.gguf
      Gemma3ForCausalLM made by transformers (2 layers: one sliding-window, one global;
      hidden 256 so that IQ4_XS's 256-element blocks fit its rows), converted to F32 by
      convert_hf_to_gguf.py, quantized to IQ4_XS (llama_ftype 30)
  tests/fixtures/llama-engine/qwen3moe-tiny-MXFP4_MOE.gguf
      Qwen3MoeForCausalLM (4 experts, 2 routed per token), converted to F32, quantized
      to MXFP4_MOE (llama_ftype 38: MXFP4 experts, Q8_0 elsewhere)
  tests/fixtures/llama-engine/manifest.json
      each file's sha256, the models' configs, the converter's and quantizer's versions

Both use the byte-level BPE tokenizer of tests/fixtures/llama-family/qwen3-qknorm (512
tokens, trained by scripts/make_reference.py on the project's essay). Its pre-tokenizer
is GPT-2's regex, which the converter cannot recognise by its hash (it knows published
tokenizers only), so the converter is told its name ("gpt-2"): the one change made to
its run.

The converter is llama-cpp-python's sdist's llama.cpp (PyPI; LLAMA_CPP_PYTHON, default
0.3.36); the quantizer is scripts/peers/llama_quantize_type.cpp linked against the
llama.cpp that quantbench's llama-cpp feature built (llama-cpp-sys-2's, found under
target/), i.e. the engine's own. The tests (tests/llama_cpp_engine.rs) compare the
engine's greedy tokens with llama.cpp's own (scripts/peers/llama_greedy.cpp, built the
same way at test time), so no token is committed here.

Needs: pip install torch transformers safetensors numpy sentencepiece; a build with
`cargo build --features llama-cpp`; g++.
"""
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "llama-engine")
TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "llama-family", "qwen3-qknorm", "tokenizer.json")
CACHE = os.environ.get("QB_PEERS_CACHE", os.path.expanduser("~/.cache/quantbench-peers"))
VERSION = os.environ.get("LLAMA_CPP_PYTHON", "0.3.36")


def llama_lib():
    """The newest llama.cpp install that llama-cpp-sys-2's build left under target/."""
    libs = glob.glob(os.path.join(ROOT, "target", "*", "build", "llama-cpp-sys-2-*", "out", "lib", "libllama.a"))
    if not libs:
        sys.exit("no llama.cpp build under target/: run cargo build --features llama-cpp first")
    return os.path.dirname(os.path.dirname(max(libs, key=os.path.getmtime)))


def build_tool(source, out_dir):
    root = llama_lib()
    exe = os.path.join(out_dir, os.path.splitext(os.path.basename(source))[0])
    lib = os.path.join(root, "lib")
    subprocess.run(["g++", "-O2", "-std=c++17", "-I", os.path.join(root, "include"), source,
                    os.path.join(lib, "libllama.a"), os.path.join(lib, "libggml.a"),
                    os.path.join(lib, "libggml-cpu.a"), os.path.join(lib, "libggml-base.a"),
                    "-fopenmp", "-lpthread", "-ldl", "-o", exe], check=True)
    return exe


def converter():
    """llama.cpp's convert_hf_to_gguf.py from llama-cpp-python's sdist (unpacked once)."""
    src = os.path.join(CACHE, "sdist", f"llama_cpp_python-{VERSION}", "vendor", "llama.cpp")
    if not os.path.exists(os.path.join(src, "convert_hf_to_gguf.py")):
        tar = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "peers", "fetch_sdist.py"),
                              "llama-cpp-python", VERSION, os.path.join(CACHE, "sdist")],
                             check=True, capture_output=True, text=True).stdout.strip()
        shutil.unpack_archive(tar, os.path.join(CACHE, "sdist"))
    return src


def convert(src, model_dir, out_path):
    """convert_hf_to_gguf.py --outtype f32, told the tokenizer's pre-tokenizer name."""
    code = (
        "import sys; sys.path[:0] = [{src!r}, {gguf!r}]\n"
        "import conversion.base as base\n"
        "base.TextModel.get_vocab_base_pre = lambda self, tokenizer: 'gpt-2'\n"
        "sys.argv = ['convert_hf_to_gguf.py', {model!r}, '--outtype', 'f32', '--outfile', {out!r}]\n"
        "import runpy; runpy.run_path({script!r}, run_name='__main__')\n"
    ).format(src=src, gguf=os.path.join(src, "gguf-py"), model=model_dir, out=out_path,
             script=os.path.join(src, "convert_hf_to_gguf.py"))
    subprocess.run([sys.executable, "-c", code], check=True)


def save(model, path):
    import torch  # noqa: F401  (transformers needs it)
    model.save_pretrained(path, safe_serialization=True)
    shutil.copy(TOKENIZER, os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>",
                   "eos_token": "<|endoftext|>"}, f)


def gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    cfg = Gemma3TextConfig(vocab_size=512, hidden_size=256, intermediate_size=512,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=64, sliding_window=8, max_position_embeddings=256,
                           query_pre_attn_scalar=64,
                           layer_types=["sliding_attention", "full_attention"],
                           bos_token_id=0, eos_token_id=0, pad_token_id=0,
                           tie_word_embeddings=False)
    return Gemma3ForCausalLM(cfg), cfg


def qwen3moe():
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
    cfg = Qwen3MoeConfig(vocab_size=512, hidden_size=256, intermediate_size=512,
                         moe_intermediate_size=128, num_experts=4, num_experts_per_tok=2,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=64, max_position_embeddings=256, decoder_sparse_step=1,
                         norm_topk_prob=True, bos_token_id=0, eos_token_id=0,
                         tie_word_embeddings=False)
    return Qwen3MoeForCausalLM(cfg), cfg


def scale_up(model, std):
    """Random init at transformers' 0.02 gives near-uniform logits, whose greedy token
    flips with any rounding; a wider init makes the tiny models decisive (too wide, and
    one token wins everywhere: Gemma scales its embeddings by sqrt(width))."""
    import torch
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def main():
    import torch
    import transformers
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    src = converter()
    work = tempfile.mkdtemp(prefix="qb-llama-fixtures-")
    quantize = build_tool(os.path.join(ROOT, "scripts", "peers", "llama_quantize_type.cpp"), work)
    manifest = {"converter": f"llama-cpp-python {VERSION} sdist's convert_hf_to_gguf.py",
                "quantizer": "llama_model_quantize of llama-cpp-sys-2's llama.cpp "
                             "(scripts/peers/llama_quantize_type.cpp)",
                "transformers": transformers.__version__, "torch": torch.__version__,
                "files": {}}
    for name, make, std, ftype, label in [("gemma3-tiny", gemma3, 0.08, 30, "IQ4_XS"),
                                          ("qwen3moe-tiny", qwen3moe, 0.08, 38, "MXFP4_MOE")]:
        model, cfg = make()
        scale_up(model, std)
        model_dir = os.path.join(work, name)
        save(model, model_dir)
        f32 = os.path.join(work, f"{name}-F32.gguf")
        convert(src, model_dir, f32)
        out = os.path.join(OUT, f"{name}-{label}.gguf")
        subprocess.run([quantize, f32, out, str(ftype)], check=True)
        with open(out, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        manifest["files"][os.path.basename(out)] = {
            "sha256": sha, "init_std": std, "bytes": os.path.getsize(out), "llama_ftype": ftype,
            "architecture": cfg.architectures[0] if cfg.architectures else type(model).__name__,
            "config": {k: v for k, v in cfg.to_dict().items()
                       if isinstance(v, (int, float, str, list)) and k != "architectures"},
        }
        print(f"{out}: {os.path.getsize(out)} bytes")
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
