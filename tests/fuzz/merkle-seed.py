#!/usr/bin/env python3
"""merkle-seed.py: writes the seed corpus of fuzz-merkle-proof (tests/fuzz/corpus/merkle-proof):
genuine inclusion and consistency proofs of the target's fixed tree (leaf i = 4 bytes of i),
computed with hashlib by merkle_oracle.py's Tree, plus truncated and bit-flipped copies.

usage: merkle-seed.py OUTDIR
"""
import hashlib
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "common"))
from merkle_oracle import Tree  # noqa: E402


def wire(proof):
    return bytes([len(proof)]) + b"".join(proof)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    t = Tree([struct.pack(">I", i) for i in range(300)])
    seeds = []
    for n, i in [(1, 0), (2, 1), (7, 3), (8, 7), (100, 63), (300, 0), (300, 299), (257, 256)]:
        p = wire(t.path(i, 0, n))
        seeds.append(b"\x00" + struct.pack(">HH", i, n) + p)
        if len(p) > 1:
            seeds.append(b"\x00" + struct.pack(">HH", i, n) + p[:-1])
            seeds.append(b"\x00" + struct.pack(">HH", i, n) + bytes([p[0]]) + bytes([p[1] ^ 1]) + p[2:])
    for m, n in [(1, 1), (1, 2), (3, 7), (4, 8), (5, 300), (128, 300), (299, 300), (64, 64)]:
        p = wire(t.subproof(m, 0, n, True))
        seeds.append(b"\x01" + struct.pack(">HH", m, n) + p)
        if len(p) > 1:
            seeds.append(b"\x01" + struct.pack(">HH", m, n) + p[:-1])
    seeds.append(b"\x00\x00\x05\x00\x03" + bytes([65]) + b"\x00" * 32)
    for s in seeds:
        with open(os.path.join(out, hashlib.sha1(s).hexdigest()), "wb") as f:
            f.write(s)
    print(f"{len(seeds)} seeds in {out}")


if __name__ == "__main__":
    main()
