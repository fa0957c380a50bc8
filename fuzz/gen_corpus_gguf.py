#!/usr/bin/env python3
"""Writes the small hand-made GGUF seeds in fuzz/corpus/gguf/ (no shared files copied)."""
import os
import struct

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "gguf")
os.makedirs(out, exist_ok=True)


def s(x):
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, typ, val):
    return s(key) + struct.pack("<I", typ) + val


def gguf(kvs, tensors, version=3, align=32):
    b = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs)
    data = b""
    infos = b""
    for name, typ, ne, raw in tensors:
        while len(data) % align:
            data += b"\0"
        infos += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        infos += struct.pack("<IQ", typ, len(data))
        data += raw
    b += infos
    while len(b) % align:
        b += b"\0"
    return b + data


base_kvs = [
    kv("general.architecture", 8, s("llama")),
    kv("llama.block_count", 4, struct.pack("<I", 2)),
    kv("llama.rope.freq_base", 6, struct.pack("<f", 10000.0)),
    kv("tokenizer.ggml.add_bos_token", 7, b"\1"),
    kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 4) + s("<unk>") + s("<s>") + s("</s>") + s("\u2581a")),
    kv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 4) + struct.pack("<4f", 0, 0, 0, -1.5)),
    kv("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, 4) + struct.pack("<4i", 2, 3, 3, 1)),
    kv("test.u64", 10, struct.pack("<Q", 1 << 40)),
    kv("test.f64", 12, struct.pack("<d", 0.5)),
]
f32 = struct.pack("<8f", *range(8))
q8 = struct.pack("<e", 0.5) + bytes(range(32))
seeds = {
    "valid_v3": gguf(base_kvs, [("a.weight", 0, [4, 2], f32), ("b.weight", 8, [32], q8)]),
    "valid_v2": gguf(base_kvs[:3], [("a.weight", 0, [8], f32)], version=2),
    "no_tensors": gguf(base_kvs, []),
    "align64": gguf(base_kvs[:2] + [kv("general.alignment", 4, struct.pack("<I", 64))],
                    [("a", 0, [4, 2], f32), ("b", 1, [4], b"\0" * 8)], align=64),
    "f16_4d": gguf([], [("t", 1, [2, 1, 2, 1], b"\0" * 8)]),
    "empty": b"GGUF" + struct.pack("<IQQ", 3, 0, 0),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
