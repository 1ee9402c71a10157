#!/usr/bin/env python3
"""Seed the fuzz corpus from the protocol test vectors.

Writes every vector of proto/vectors/frames.json, and a few multi-frame streams built from
them, into tests/fuzz/corpus/frame-decode/ as fuzz inputs. An input is two control bytes
(byte 0 selects the decoder's max_frame: 0 = 1024, 1 = 4096, 2 = 65536, 3 = 16 MiB; byte 1
seeds the chunk sizes of the streaming run) followed by the stream. File names are the SHA-1
of the content, so re-running adds nothing twice and files found by the fuzzer fit in.

    tests/fuzz/seed-corpus.py
"""
import hashlib
import json
import os
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VECTORS = os.path.join(TOP, "proto", "vectors", "frames.json")
CORPUS = os.path.join(TOP, "tests", "fuzz", "corpus", "frame-decode")
LIMITS = {1024: 0, 4096: 1, 65536: 2, 1 << 24: 3}


def write(data):
    name = hashlib.sha1(data).hexdigest()
    path = os.path.join(CORPUS, name)
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
        return 1
    return 0


def main():
    with open(VECTORS) as f:
        vectors = json.load(f)
    os.makedirs(CORPUS, exist_ok=True)
    added = 0
    valid = [bytes.fromhex(v["hex"]) for v in vectors["valid"]]
    for i, frame in enumerate(valid):
        added += write(bytes([2, i & 0xFF]) + frame)
    for i, v in enumerate(vectors["invalid"]):
        sel = LIMITS.get(v.get("max_frame", 65536), 2)
        added += write(bytes([sel, i & 0xFF]) + bytes.fromhex(v["hex"]))
    # Streams: the worked example as one session, and every valid frame back to back.
    example = b"".join(bytes.fromhex(v["hex"]) for v in vectors["valid"]
                       if v["name"].startswith("example-"))
    added += write(bytes([2, 7]) + example)
    added += write(bytes([3, 1]) + b"".join(valid))
    # Invalid frames followed by a valid one, to exercise skipping and recovery.
    for i, v in enumerate(vectors["invalid"]):
        if v["error"] == "UNKNOWN_FRAME_TYPE":
            added += write(bytes([2, i & 0xFF]) + bytes.fromhex(v["hex"]) + valid[0])
    print(f"{added} inputs added to {os.path.relpath(CORPUS, TOP)}", file=sys.stderr)


if __name__ == "__main__":
    main()
