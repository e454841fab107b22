#!/usr/bin/env python3
"""Writes harness/format/ggml_tables.rs: the lookup tables of ggml's i-quants
(ggml-common.h's ksigns_iq2xs, iq2xxs_grid, iq2xs_grid, iq2s_grid, iq3xxs_grid,
iq3s_grid, iq1s_grid) and the packed grids its quantizers search (ggml-quants.c's
kgrid_2bit_256, kgrid_2bit_512, kgrid_1bit_2048, kgrid_2bit_1024 in iq2xs_init_impl and
kgrid_256, kgrid_512 in iq3xs_init_impl), copied value for value from the llama.cpp source
the peers script fetched (scripts/peers/llama_cpp.sh). ggml is MIT-licensed (its notice is
kept in the generated file).

    python3 scripts/gen_ggml_tables.py [LLAMA_CPP_DIR]
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LLAMA_CPP = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/quantbench-peers/llama.cpp")
TABLES = [
    ("uint8_t", "ksigns_iq2xs", "KSIGNS_IQ2XS", "u8"),
    ("uint64_t", "iq2xxs_grid", "IQ2XXS_GRID", "u64"),
    ("uint64_t", "iq2xs_grid", "IQ2XS_GRID", "u64"),
    ("uint64_t", "iq2s_grid", "IQ2S_GRID", "u64"),
    ("uint32_t", "iq3xxs_grid", "IQ3XXS_GRID", "u32"),
    ("uint32_t", "iq3s_grid", "IQ3S_GRID", "u32"),
    ("uint64_t", "iq1s_grid", "IQ1S_GRID", "u64"),
]
# The quantizers' packed grids (ggml-quants.c): 2 bits a coordinate (8 of them) for the
# IQ2 / IQ1 types, 3 bits a coordinate (4) for the IQ3 types.
KGRIDS = [
    ("kgrid_2bit_256", "KGRID_2BIT_256"),
    ("kgrid_2bit_512", "KGRID_2BIT_512"),
    ("kgrid_1bit_2048", "KGRID_1BIT_2048"),
    ("kgrid_2bit_1024", "KGRID_2BIT_1024"),
    ("kgrid_256", "KGRID_3BIT_256"),
    ("kgrid_512", "KGRID_3BIT_512"),
]


def emit(out, cname, rname, rtype, nums, origin):
    out.append(f"/// `{cname}` ({origin}, {len(nums)} entries).")
    out.append(f"pub static {rname}: [{rtype}; {len(nums)}] = [")
    width = {"u8": 16, "u16": 16, "u32": 8, "u64": 4}[rtype]
    hexw = {"u8": 0, "u16": 0, "u32": 8, "u64": 16}[rtype]
    for i in range(0, len(nums), width):
        row = nums[i:i + width]
        if hexw:
            out.append("    " + " ".join(f"0x{v:0{hexw}x}," for v in row))
        else:
            out.append("    " + " ".join(f"{v}," for v in row))
    out.append("];")
    out.append("")


def numbers(text):
    vals = [v for v in re.split(r"[\s,]+", text.strip()) if v]
    return [int(v, 16) if v.lower().startswith("0x") else int(v) for v in vals]


def main():
    src = open(os.path.join(LLAMA_CPP, "ggml", "src", "ggml-common.h")).read()
    commit = os.path.basename(os.path.realpath(LLAMA_CPP))
    out = [
        "//! ggml's i-quant lookup tables (ggml-common.h) and its quantizers' packed grids",
        "//! (ggml-quants.c), copied value for value by",
        "//! `scripts/gen_ggml_tables.py` from llama.cpp's source; do not edit by hand.",
        "//! ggml: MIT License, Copyright (c) 2023-2024 The ggml authors.",
        "",
    ]
    for ctype, cname, rname, rtype in TABLES:
        m = re.search(r"GGML_TABLE_BEGIN\(%s, %s, (\w+)\)(.*?)GGML_TABLE_END\(\)" % (ctype, cname), src, re.S)
        if not m:
            sys.exit(f"{cname} not found in ggml-common.h")
        emit(out, cname, rname, rtype, numbers(m.group(2)), "ggml-common.h")
    quants = open(os.path.join(LLAMA_CPP, "ggml", "src", "ggml-quants.c")).read()
    for cname, rname in KGRIDS:
        m = re.search(r"static const uint16_t %s\[\w+\] = \{(.*?)\};" % cname, quants, re.S)
        if not m:
            sys.exit(f"{cname} not found in ggml-quants.c")
        emit(out, cname, rname, "u16", numbers(m.group(1)), "ggml-quants.c")
    path = os.path.join(ROOT, "harness", "format", "ggml_tables.rs")
    with open(path, "w") as f:
        f.write("\n".join(out))
    print(f"{path}: {len(TABLES) + len(KGRIDS)} tables from {commit}")


if __name__ == "__main__":
    main()
