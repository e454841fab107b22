#!/usr/bin/env python3
"""Write a GGUF file with chosen faults, for scripts/adversarial.sh: the header taken
apart (metadata in order, the tensor directory with each tensor's bytes), edited, and
written back as GGUF v3, each tensor where the one before it ends unless an edit moves
it.

    python3 scripts/gguf_edit.py IN.gguf OUT.gguf EDIT [EDIT ...]

Edits (applied in order, then the file is laid out and written):
    set KEY u32|u64|i32|f32|str|bool VALUE   set (or add) a metadata key
    dup-key KEY                              write KEY a second time (same value)
    count DELTA                              declare DELTA more (or fewer) tensors
    align N                                  general.alignment = N (u32), data laid out to it
                                             (at 32 when N is 0 or not a power of two)
    offset NAME DELTA                        move one tensor's offset after the layout
    type NAME ID                             declare another ggml type, bytes unchanged
    ne NAME K VALUE                          set dimension K (ggml order) of a tensor
    rename NAME NEW                          rename a tensor (NEW may be another's name)
Standard library only.
"""
import struct
import sys

TYPE_SIZE = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22),
             7: (32, 24), 8: (32, 34), 10: (256, 84), 11: (256, 110), 12: (256, 144),
             13: (256, 176), 14: (256, 210)}
FIXED = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
         11: "<q", 12: "<d"}


class R:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.p)[0]
        self.p += struct.calcsize(fmt)
        return v

    def s(self):
        n = self.take("<Q")
        v = self.b[self.p:self.p + n]
        self.p += n
        return v


def read_value(r, t):
    if t in FIXED:
        return r.take(FIXED[t])
    if t == 8:
        return r.s()
    if t == 9:
        inner, n = r.take("<I"), r.take("<Q")
        return (inner, [read_value(r, inner) for _ in range(n)])
    raise SystemExit(f"unknown value type {t}")


def write_value(out, t, v):
    if t in FIXED:
        out += struct.pack(FIXED[t], v)
    elif t == 8:
        out += struct.pack("<Q", len(v)) + v
    else:
        inner, items = v
        out += struct.pack("<IQ", inner, len(items))
        for it in items:
            write_value(out, inner, it)


def main():
    src, dst, *edits = sys.argv[1:]
    b = open(src, "rb").read()
    r = R(b)
    assert r.take("<4s") == b"GGUF"
    r.take("<I")
    n_t, n_kv = r.take("<Q"), r.take("<Q")
    kv = []
    for _ in range(n_kv):
        k = r.s()
        t = r.take("<I")
        kv.append([k, t, read_value(r, t)])
    align = next((v for k, t, v in kv if k == b"general.alignment"), 32)
    infos = []
    for _ in range(n_t):
        name = r.s()
        nd = r.take("<I")
        ne = [r.take("<Q") for _ in range(nd)]
        infos.append([name, ne, r.take("<I"), r.take("<Q")])
    start = -(-r.p // align) * align
    tensors = []
    for i, (name, ne, ty, off) in enumerate(infos):
        blk, size = TYPE_SIZE[ty]
        count = 1
        for d in ne:
            count *= d
        tensors.append({"name": name, "ne": ne, "ty": ty,
                        "data": b[start + off:start + off + count // blk * size]})
    delta, moves = 0, []
    it = iter(edits)
    for e in it:
        if e == "set":
            k, ty, v = next(it).encode(), next(it), next(it)
            t, val = {"u32": (4, int), "u64": (10, int), "i32": (5, int), "f32": (6, float),
                      "str": (8, str.encode), "bool": (7, lambda x: x == "true")}[ty]
            val = val(v)
            for entry in kv:
                if entry[0] == k:
                    entry[1], entry[2] = t, val
                    break
            else:
                kv.append([k, t, val])
        elif e == "dup-key":
            k = next(it).encode()
            kv.append(list(next(x for x in kv if x[0] == k)))
        elif e == "count":
            delta += int(next(it))
        elif e == "align":
            align = int(next(it))
            kv = [x for x in kv if x[0] != b"general.alignment"] + [[b"general.alignment", 4, align]]
        elif e == "offset":
            moves.append((next(it).encode(), int(next(it))))
        elif e == "type":
            name, ty = next(it).encode(), int(next(it))
            next(t for t in tensors if t["name"] == name)["ty"] = ty
        elif e == "ne":
            name, k, v = next(it).encode(), int(next(it)), int(next(it))
            next(t for t in tensors if t["name"] == name)["ne"][k] = v
        elif e == "rename":
            name, new = next(it).encode(), next(it).encode()
            next(t for t in tensors if t["name"] == name)["name"] = new
        else:
            raise SystemExit(f"unknown edit {e}")
    # An alignment no reader takes (0, not a power of two) is written as it is, the data
    # laid out at 32.
    lay = align if align > 0 and align & (align - 1) == 0 else 32
    off = 0
    for t in tensors:
        t["off"] = off
        off += -(-len(t["data"]) // lay) * lay
    for name, d in moves:
        next(t for t in tensors if t["name"] == name)["off"] += d
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors) + delta, len(kv)))
    for k, t, v in kv:
        out += struct.pack("<Q", len(k)) + k + struct.pack("<I", t)
        write_value(out, t, v)
    for t in tensors:
        out += struct.pack("<Q", len(t["name"])) + t["name"] + struct.pack("<I", len(t["ne"]))
        for d in t["ne"]:
            out += struct.pack("<Q", d)
        out += struct.pack("<IQ", t["ty"], max(t["off"], 0))
    data_start = -(-len(out) // lay) * lay
    out += bytes(data_start - len(out))
    for t in tensors:
        at = data_start + max(t["off"], 0)
        if len(out) < at + len(t["data"]):
            out += bytes(at + len(t["data"]) - len(out))
        out[at:at + len(t["data"])] = t["data"]
    out += bytes(-(-len(out) // lay) * lay - len(out))
    open(dst, "wb").write(out)


if __name__ == "__main__":
    main()
