#!/usr/bin/env python3
"""merkle_oracle.py: checks common/sp_merkle (through merkle_cli) against an independent
RFC 9162 computation written here with hashlib: for tree sizes 1..N (default 1000) over random
leaves, the root, inclusion proofs and consistency proofs must equal this script's, this
script's proofs must verify in C, and flipping any bit of any byte of a proof (or using a wrong
index, size or root) must make the C verifier fail. TAP output.

usage: merkle_oracle.py MERKLE_CLI [--max N] [--seed S]
"""
import argparse
import hashlib
import random
import subprocess
import sys


def leaf_hash(d):
    return hashlib.sha256(b"\x00" + d).digest()


def node_hash(l, r):
    return hashlib.sha256(b"\x01" + l + r).digest()


class Tree:
    """RFC 9162 2.1 by its recursive definitions, memoized on (start, length)."""

    def __init__(self, leaves):
        self.lh = [leaf_hash(d) for d in leaves]
        self.memo = {}

    def mth(self, a, n):
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n == 1:
            return self.lh[a]
        key = (a, n)
        if key not in self.memo:
            k = 1 << ((n - 1).bit_length() - 1)  # largest power of 2 < n
            self.memo[key] = node_hash(self.mth(a, k), self.mth(a + k, n - k))
        return self.memo[key]

    def path(self, m, a, n):
        if n <= 1:
            return []
        k = 1 << ((n - 1).bit_length() - 1)
        if m < k:
            return self.path(m, a, k) + [self.mth(a + k, n - k)]
        return self.path(m - k, a + k, n - k) + [self.mth(a, k)]

    def subproof(self, m, a, n, whole):
        if m == n:
            return [] if whole else [self.mth(a, n)]
        k = 1 << ((n - 1).bit_length() - 1)
        if m <= k:
            return self.subproof(m, a, k, whole) + [self.mth(a + k, n - k)]
        return self.subproof(m - k, a + k, n - k, False) + [self.mth(a, k)]


def enc(proof):
    return ",".join(h.hex() for h in proof) if proof else "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cli")
    ap.add_argument("--max", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"# seed {seed}")
    rnd = random.Random(seed)
    # Distinct leaves (an empty one once), so that a proof for one leaf cannot also be a
    # proof for an identical neighbour.
    leaves, seen = [], set()
    while len(leaves) < args.max:
        d = rnd.randbytes(rnd.randrange(0, 65))
        if d not in seen:
            seen.add(d)
            leaves.append(d)
    t = Tree(leaves)

    cmds, expect, what = [], [], []

    def q(cmd, exp, label):
        cmds.append(cmd)
        expect.append(exp)
        what.append(label)

    for d in leaves:
        q("leaf " + (d.hex() if d else "-"), "ok", "append")
    tampered = 0
    for n in range(1, args.max + 1):
        root = t.mth(0, n)
        q(f"root {n}", root.hex(), f"root {n}")
        idx = range(n) if n <= 64 else sorted({0, n - 1, *rnd.sample(range(n), 6)})
        for i in idx:
            p = t.path(i, 0, n)
            q(f"incl {i} {n}", enc(p), f"inclusion {i} of {n}")
            q(f"vincl {i} {n} {t.lh[i].hex()} {root.hex()} {enc(p)}", "ok", f"verify incl {i}/{n}")
            q(f"vincl {i} {n} {t.lh[i].hex()} {t.mth(0, n - 1).hex() if n > 1 else '00' * 32} {enc(p)}",
              "fail", f"incl {i}/{n} against another root")
            if n > 1:
                j = (i + 1) % n
                q(f"vincl {j} {n} {t.lh[i].hex()} {root.hex()} {enc(p)}", "fail",
                  f"incl {i}/{n} at index {j}")
            if p and (n <= 40 or n % 97 == 0):
                raw = b"".join(p)
                for b in range(len(raw)):
                    bad = bytearray(raw)
                    bad[b] ^= 1 << rnd.randrange(8)
                    bp = [bytes(bad[k:k + 32]) for k in range(0, len(bad), 32)]
                    q(f"vincl {i} {n} {t.lh[i].hex()} {root.hex()} {enc(bp)}", "fail",
                      f"incl {i}/{n} byte {b} flipped")
                    tampered += 1
                q(f"vincl {i} {n} {t.lh[i].hex()} {root.hex()} {enc(p[:-1])}", "fail",
                  f"incl {i}/{n} truncated")
                q(f"vincl {i} {n} {t.lh[i].hex()} {root.hex()} {enc(p + [p[0]])}", "fail",
                  f"incl {i}/{n} extended")
        olds = range(1, n + 1) if n <= 64 else sorted({1, n - 1, n, *rnd.sample(range(1, n), 6)})
        for m in olds:
            p = t.subproof(m, 0, n, True)
            om = t.mth(0, m)
            q(f"cons {m} {n}", enc(p), f"consistency {m} -> {n}")
            q(f"vcons {m} {n} {om.hex()} {root.hex()} {enc(p)}", "ok", f"verify cons {m}->{n}")
            if m < n:
                q(f"vcons {m} {n} {root.hex()} {root.hex()} {enc(p)}", "fail", f"cons {m}->{n} wrong old root")
                q(f"vcons {m} {n} {om.hex()} {om.hex()} {enc(p)}", "fail", f"cons {m}->{n} wrong new root")
            if p and (n <= 40 or n % 97 == 0):
                raw = b"".join(p)
                for b in range(len(raw)):
                    bad = bytearray(raw)
                    bad[b] ^= 1 << rnd.randrange(8)
                    bp = [bytes(bad[k:k + 32]) for k in range(0, len(bad), 32)]
                    q(f"vcons {m} {n} {om.hex()} {root.hex()} {enc(bp)}", "fail",
                      f"cons {m}->{n} byte {b} flipped")
                    tampered += 1
                q(f"vcons {m} {n} {om.hex()} {root.hex()} {enc(p[:-1])}", "fail",
                  f"cons {m}->{n} truncated")
    cmds.append("reads")
    out = subprocess.run([args.cli], input="\n".join(cmds) + "\n", capture_output=True,
                         text=True, check=False)
    got = out.stdout.split("\n")
    bad = 0
    for k, exp in enumerate(expect):
        g = got[k] if k < len(got) else "<missing>"
        if g != exp:
            bad += 1
            if bad <= 20:
                print(f"# {what[k]}: command {cmds[k][:100]!r}: got {g[:80]!r}, want {exp[:80]!r}")
    if out.returncode != 0:
        print(f"# merkle_cli exited {out.returncode}: {out.stderr.strip()}")
        bad += 1
    print(f"{'not ok' if bad else 'ok'} 1 - {len(expect)} answers equal hashlib's "
          f"(sizes 1..{args.max}, {tampered} tampered proofs refused){f', {bad} wrong' if bad else ''}")
    reads = int(got[len(expect)]) if len(got) > len(expect) and got[len(expect)].isdigit() else 1 << 30
    limit = 3 * (args.max.bit_length() + 1)
    print(f"{'ok' if reads <= limit else 'not ok'} 2 - at most {reads} node reads per root or proof "
          f"(O(log n): limit {limit})")
    print("1..2")
    return 1 if bad or reads > limit else 0


if __name__ == "__main__":
    sys.exit(main())
