#!/usr/bin/env python3
"""Test vectors for the sealpush v1 wire protocol (proto/PROTOCOL.md, sections 3, 4, 5, 9, 11).

This is a second, independent implementation of sections 3 to 5, written from the spec's
tables only (not from the C codec). It builds frames byte by byte, decodes every vector again
with its own decoder as a self-check, and writes frames.json next to this script.

    python3 proto/vectors/gen_vectors.py           write proto/vectors/frames.json
    python3 proto/vectors/gen_vectors.py --check   exit 1 if the committed file differs
    python3 proto/vectors/gen_vectors.py --stdout  print the JSON instead of writing it

Python 3 standard library only. The output is deterministic: vectors are sorted by name,
object keys are sorted, re-running gives identical bytes.

Format of frames.json
---------------------

    {
      "version": 1,
      "valid": [
        {"name": "example-send",          unique across the whole file
         "hex": "0300...",                the whole frame (6-byte header + body), lowercase hex
         "canonical": true,               true: encoding "frame" (fields in ascending id order)
                                          gives exactly "hex"; false: decode only (fields out of
                                          order, unknown fields to skip, undefined flag bits)
         "frame": {"type": "SEND",        frame type name as in the spec (section 5)
                   "flags": 0,            the flag bits a v1 receiver keeps: bits the spec
                                          defines for this type; undefined bits are dropped
                   "fields": {"msg_id": "0011...", "ttl": 3600, ...}}}
      ],
      "invalid": [
        {"name": "bad-send-priority-7",
         "hex": "0300...",                a complete frame, unless the note says the hex is a
                                          header only (FRAME_TOO_LARGE cases)
         "max_frame": 65536,              the limit the decoder runs with
         "error": "BAD_FIELD",            error name as in section 9.1
         "field": "priority",             name of the field at fault, or null
         "field_id": 5,                   its id, or null; for UNSUPPORTED_FIELD the unknown
                                          critical id (whose "field" is null)
         "note": "why the decoder must reject it"}
      ]
    }

A "frame" lists exactly the fields a v1 receiver keeps: fields defined for the frame type.
Skipped fields (unknown ids, ids defined only for other frame types) are not listed.

Field values in "fields":
  - integers (u8, u16, u32): JSON numbers;
  - fixed byte strings (msg_id, token, data, resume_id) and variable byte strings (blob,
    collapse_id, reason, agent): lowercase hex strings;
  - arrays (recipients, msg_ids): lists of lowercase hex strings, one per item;
  - results: a list of [index, status] pairs (numbers).

For invalid vectors: the error is the one a decoder reports for the frame; every invalid
vector has exactly one defect, so no vector depends on the order in which a decoder runs its
checks. UNKNOWN_FRAME_TYPE frames are complete so that a decoder can skip them and go on.
"""

import json
import os
import sys

# ---------------------------------------------------------------------------------------------
# Spec tables (sections 4, 5, 9)

MAX_FRAME_V1 = 1 << 24  # section 3: a v1 frame body never exceeds 16 MiB
DEFAULT_MAX_FRAME = 65536  # section 8: default max_frame after WELCOME
MAX_ITEMS = 65535  # arrays: 1 to 65,535 items

# Field registry (section 4): id -> (name, kind, args)
#   ("fixed", n)            bytes, exactly n
#   ("array", item)         array of item-byte entries, 1..65535 of them
#   ("uint", width, lo, hi) unsigned big-endian integer of exactly width bytes, lo <= v <= hi
#   ("prio",)               u8, one of 10, 5, 1
#   ("bytes", lo, hi)       bytes, lo <= len <= hi
#   ("agent",)              bytes, 1..64, printable ASCII 0x20..0x7e
U16MAX = 0xFFFF
U32MAX = 0xFFFFFFFF
FIELDS = {
    0x01: ("msg_id", ("fixed", 16)),
    0x02: ("recipients", ("array", 32)),
    0x03: ("token", ("fixed", 32)),
    0x04: ("ttl", ("uint", 4, 0, U32MAX)),
    0x05: ("priority", ("prio",)),
    0x06: ("collapse_id", ("bytes", 1, 64)),
    0x07: ("blob", ("bytes", 0, MAX_FRAME_V1)),
    0x08: ("results", ("array", 3)),
    0x09: ("code", ("uint", 2, 1, U16MAX)),
    0x0A: ("reason", ("bytes", 0, 256)),
    0x0B: ("version", ("uint", 2, 1, U16MAX)),
    0x0C: ("capabilities", ("uint", 4, 0, U32MAX)),
    0x0D: ("keepalive", ("uint", 2, 1, U16MAX)),
    0x0E: ("window", ("uint", 2, 1, U16MAX)),
    0x0F: ("max_frame", ("uint", 4, 4096, MAX_FRAME_V1)),
    0x10: ("max_blob", ("uint", 4, 1, MAX_FRAME_V1)),
    0x11: ("max_recipients", ("uint", 2, 1, U16MAX)),
    0x12: ("keepalive_min", ("uint", 2, 1, U16MAX)),
    0x13: ("keepalive_max", ("uint", 2, 1, U16MAX)),
    0x14: ("send_window", ("uint", 2, 1, U16MAX)),
    0x15: ("retry_after", ("uint", 4, 0, U32MAX)),
    0x16: ("data", ("fixed", 8)),
    0x17: ("msg_ids", ("array", 16)),
    0x18: ("frame_type", ("uint", 1, 0, 0xFF)),
    0x19: ("resume_id", ("fixed", 16)),
    0x1A: ("agent", ("agent",)),
}
FIELD_ID = {name: fid for fid, (name, _) in FIELDS.items()}

R, O = True, False
# Frame types (section 5): type -> (name, {field id: required}, defined flag bits)
FRAMES = {
    0x01: ("HELLO", {0x0B: R, 0x0C: O, 0x0D: O, 0x0E: O, 0x19: O, 0x1A: O}, 0x01),
    0x02: ("WELCOME", {0x0B: R, 0x03: R, 0x0F: R, 0x10: R, 0x11: R, 0x0E: R, 0x14: R, 0x0D: R,
                       0x12: R, 0x13: R, 0x0C: O}, 0x00),
    0x03: ("SEND", {0x01: R, 0x02: R, 0x04: O, 0x05: O, 0x06: O, 0x07: R}, 0x00),
    0x04: ("SEND_RESULT", {0x01: R, 0x08: R, 0x15: O}, 0x00),
    0x05: ("DELIVER", {0x01: R, 0x07: R, 0x05: O, 0x06: O}, 0x01),
    0x06: ("ACK", {0x17: R}, 0x00),
    0x07: ("PING", {0x16: O}, 0x00),
    0x08: ("PONG", {0x16: O}, 0x00),
    0x09: ("GOAWAY", {0x09: R, 0x15: O, 0x0A: O}, 0x00),
    0x0A: ("ERROR", {0x09: R, 0x0A: O, 0x01: O, 0x18: O}, 0x01),
}
FRAME_TYPE = {name: t for t, (name, _, _) in FRAMES.items()}

ERRORS = {
    "MALFORMED_FRAME": 1, "FRAME_TOO_LARGE": 2, "UNKNOWN_FRAME_TYPE": 3, "UNEXPECTED_FRAME": 4,
    "MISSING_FIELD": 5, "BAD_FIELD": 6, "DUPLICATE_FIELD": 7, "UNSUPPORTED_FIELD": 8,
    "UNSUPPORTED_VERSION": 9, "HELLO_TIMEOUT": 10, "IDLE_TIMEOUT": 11, "SLOW_CONSUMER": 12,
    "TOO_MANY_ERRORS": 13, "INTERNAL_ERROR": 14, "SHUTDOWN": 15, "REPLACED": 16,
    "CERT_REVOKED": 17,
}

# ---------------------------------------------------------------------------------------------
# Encoding (section 3)


def varint(n):
    """A field length in its shortest form: 1, 2 or 4 bytes."""
    if n < 0x40:
        return bytes([n])
    if n < 0x4000:
        return bytes([0x40 | n >> 8, n & 0xFF])
    if n < 0x40000000:
        return bytes([0x80 | n >> 24, n >> 16 & 0xFF, n >> 8 & 0xFF, n & 0xFF])
    raise ValueError("length %d has no v1 encoding" % n)


def raw_field(fid, value, length=None):
    """One field: id, length (shortest varint unless `length` gives raw length bytes), value."""
    return bytes([fid]) + (varint(len(value)) if length is None else length) + value


def header(ftype, flags, length):
    return bytes([ftype, flags]) + length.to_bytes(4, "big")


def frame_bytes(ftype, flags, body, length=None):
    """Header + body; `length` overrides the header's length (for oversized headers)."""
    return header(ftype, flags, len(body) if length is None else length) + body


def value_bytes(fid, value):
    """The wire value of a field, from its Python value (ints, bytes, lists, result pairs)."""
    kind = FIELDS[fid][1]
    if kind[0] == "uint":
        return value.to_bytes(kind[1], "big")
    if kind[0] == "prio":
        return bytes([value])
    if fid == 0x08:
        return b"".join(i.to_bytes(2, "big") + bytes([s]) for i, s in value)
    if kind[0] == "array":
        return b"".join(value)
    return bytes(value)


def body_of(fields):
    """Canonical body: fields (name -> Python value) in ascending id order."""
    ids = sorted(FIELD_ID[name] for name in fields)
    return b"".join(raw_field(fid, value_bytes(fid, fields[FIELDS[fid][0]])) for fid in ids)


def field_list(fields):
    """Fields (name -> Python value) as an ordered list of (id, wire value), ascending ids."""
    ids = sorted(FIELD_ID[name] for name in fields)
    return [(fid, value_bytes(fid, fields[FIELDS[fid][0]])) for fid in ids]


def body_from_list(items):
    """A body from a list of (id, value) or (id, value, raw length bytes) or raw bytes."""
    out = b""
    for it in items:
        if isinstance(it, (bytes, bytearray)):
            out += it
        elif len(it) == 2:
            out += raw_field(it[0], it[1])
        else:
            out += raw_field(it[0], it[1], it[2])
    return out


def json_value(fid, value):
    """A Python field value as it appears in frames.json."""
    kind = FIELDS[fid][1]
    if kind[0] in ("uint", "prio"):
        return value
    if fid == 0x08:
        return [[i, s] for i, s in value]
    if kind[0] == "array":
        return [bytes(v).hex() for v in value]
    return bytes(value).hex()


# ---------------------------------------------------------------------------------------------
# Decoding (sections 3 to 5): the self-check of every vector


class DecodeError(Exception):
    def __init__(self, error, fid=None):
        super().__init__(error, fid)
        self.error = error
        self.fid = fid


def read_varint(body, pos):
    """Returns (value, new pos); raises MALFORMED_FRAME."""
    if pos >= len(body):
        raise DecodeError("MALFORMED_FRAME")  # body ends after a field id
    b = body[pos]
    size = {0: 1, 1: 2, 2: 4, 3: 8}[b >> 6]
    if size == 8:
        raise DecodeError("MALFORMED_FRAME")  # 8-byte form, not used in v1
    if pos + size > len(body):
        raise DecodeError("MALFORMED_FRAME")  # body ends inside the length
    v = b & 0x3F
    for x in body[pos + 1:pos + size]:
        v = v << 8 | x
    if (size == 2 and v < 0x40) or (size == 4 and v < 0x4000):
        raise DecodeError("MALFORMED_FRAME")  # not the shortest form
    return v, pos + size


def check_value(fid, val):
    """Returns the field's Python value or raises BAD_FIELD."""
    kind = FIELDS[fid][1]
    bad = DecodeError("BAD_FIELD", fid)
    if kind[0] == "fixed":
        if len(val) != kind[1]:
            raise bad
        return val
    if kind[0] == "array":
        item = kind[1]
        if len(val) == 0 or len(val) % item or len(val) // item > MAX_ITEMS:
            raise bad
        items = [val[i:i + item] for i in range(0, len(val), item)]
        if fid == 0x08:
            return [(int.from_bytes(x[:2], "big"), x[2]) for x in items]
        return items
    if kind[0] == "uint":
        if len(val) != kind[1]:
            raise bad
        v = int.from_bytes(val, "big")
        if not kind[2] <= v <= kind[3]:
            raise bad
        return v
    if kind[0] == "prio":
        if len(val) != 1 or val[0] not in (1, 5, 10):
            raise bad
        return val[0]
    if kind[0] == "bytes":
        if not kind[1] <= len(val) <= kind[2]:
            raise bad
        return val
    if kind[0] == "agent":
        if not 1 <= len(val) <= 64 or any(c < 0x20 or c > 0x7E for c in val):
            raise bad
        return val
    raise AssertionError(kind)


def decode(data, max_frame):
    """Decode one frame from the start of data. Returns ("need",), ("ok", frame, used) or
    ("err", error, field id, used). The frame is in frames.json form."""
    if len(data) < 6:
        return ("need",)
    ftype, flags = data[0], data[1]
    length = int.from_bytes(data[2:6], "big")
    if length > min(max_frame, MAX_FRAME_V1):
        return ("err", "FRAME_TOO_LARGE", None, 0)
    if len(data) < 6 + length:
        return ("need",)
    used = 6 + length
    body = data[6:used]
    if ftype not in FRAMES:
        return ("err", "UNKNOWN_FRAME_TYPE", None, used)
    name, allowed, defined_flags = FRAMES[ftype]
    got = {}
    try:
        pos = 0
        while pos < len(body):
            fid = body[pos]
            n, pos = read_varint(body, pos + 1)
            if pos + n > len(body):
                raise DecodeError("MALFORMED_FRAME")
            val = body[pos:pos + n]
            pos += n
            if fid >= 0x80:
                raise DecodeError("UNSUPPORTED_FIELD", fid)
            if fid not in allowed:
                continue  # unknown here: skipped
            if fid in got:
                raise DecodeError("DUPLICATE_FIELD", fid)
            got[fid] = check_value(fid, val)
        for fid in sorted(allowed):
            if allowed[fid] and fid not in got:
                raise DecodeError("MISSING_FIELD", fid)
        if ftype == 0x02:
            if got[0x10] > got[0x0F]:
                raise DecodeError("BAD_FIELD", 0x10)
            if got[0x10] + 32 * got[0x11] + 128 > got[0x0F]:
                raise DecodeError("BAD_FIELD", 0x0F)
            if got[0x12] > got[0x13]:
                raise DecodeError("BAD_FIELD", 0x13)
            if not got[0x12] <= got[0x0D] <= got[0x13]:
                raise DecodeError("BAD_FIELD", 0x0D)
    except DecodeError as e:
        return ("err", e.error, e.fid, used)
    fields = {FIELDS[fid][0]: json_value(fid, v) for fid, v in got.items()}
    return ("ok", {"type": name, "flags": flags & defined_flags, "fields": fields}, used)


# ---------------------------------------------------------------------------------------------
# The vectors

MID = bytes.fromhex("00112233445566778899aabbccddeeff")
MID2 = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
MID3 = bytes(range(0xF0, 0x100))
TOK_A = b"\xa1" * 32
TOK_B = b"\xb2" * 32
TOK_C = bytes(range(32))
BLOB = b"sealed-blob!"
PING_DATA = bytes.fromhex("0102030405060708")
EXAMPLE_REASON = (b"SEND frame (type 0x03) has a field with a bad length or value: "
                  b"field priority (0x05)")


def pattern(n, seed=0):
    """n deterministic bytes."""
    return bytes((seed + i * 7 + (i >> 8) * 13) & 0xFF for i in range(n))


def printable(n):
    """n printable ASCII bytes, 0x20 to 0x7e."""
    return bytes(0x20 + i % 95 for i in range(n))


# Typical frames with every field (the base of most invalid vectors).
FULL = {
    "HELLO": {"version": 1, "capabilities": 0, "keepalive": 60, "window": 64,
              "resume_id": MID2, "agent": b"libsealpush/0.1"},
    "WELCOME": {"version": 1, "token": TOK_A, "max_frame": 65536, "max_blob": 16384,
                "max_recipients": 100, "window": 64, "send_window": 256, "keepalive": 60,
                "keepalive_min": 10, "keepalive_max": 3600, "capabilities": 0},
    "SEND": {"msg_id": MID, "recipients": [TOK_B, TOK_C], "ttl": 3600, "priority": 5,
             "collapse_id": b"inbox", "blob": BLOB},
    "SEND_RESULT": {"msg_id": MID, "results": [(0, 0x01), (1, 0x13)], "retry_after": 5000},
    "DELIVER": {"msg_id": MID, "priority": 1, "collapse_id": b"inbox", "blob": BLOB},
    "ACK": {"msg_ids": [MID, MID2]},
    "PING": {"data": PING_DATA},
    "PONG": {"data": PING_DATA},
    "GOAWAY": {"code": 15, "retry_after": 5000, "reason": b"maintenance"},
    "ERROR": {"code": 6, "reason": b"bad priority", "msg_id": MID, "frame_type": 3},
}


def required_only(tname):
    allowed = FRAMES[FRAME_TYPE[tname]][1]
    return {k: v for k, v in FULL[tname].items() if allowed[FIELD_ID[k]]}


class Vectors:
    def __init__(self):
        self.valid = []
        self.invalid = []
        self.names = set()

    def _name(self, name):
        if name in self.names:
            raise AssertionError("duplicate vector name " + name)
        self.names.add(name)

    def valid_frame(self, name, tname, fields, flags=0, expect_hex=None):
        """A canonical vector: `fields` encoded in ascending id order."""
        self._name(name)
        ftype = FRAME_TYPE[tname]
        data = frame_bytes(ftype, flags, body_of(fields))
        if expect_hex is not None:
            want = bytes.fromhex(expect_hex)
            if data != want:
                raise AssertionError("%s: encoder gives %s, the spec says %s"
                                     % (name, data.hex(), want.hex()))
        frame = {"type": tname, "flags": flags,
                 "fields": {k: json_value(FIELD_ID[k], v) for k, v in fields.items()}}
        self._check_valid(name, data, frame)
        self.valid.append({"name": name, "hex": data.hex(), "canonical": True, "frame": frame})

    def valid_raw(self, name, data, tname, flags, kept):
        """A decode-only vector: raw bytes and the fields the receiver keeps."""
        self._name(name)
        frame = {"type": tname, "flags": flags,
                 "fields": {k: json_value(FIELD_ID[k], v) for k, v in kept.items()}}
        self._check_valid(name, data, frame)
        if frame_bytes(FRAME_TYPE[tname], flags, body_of(kept)) == data:
            raise AssertionError(name + ": is canonical, use valid_frame")
        self.valid.append({"name": name, "hex": data.hex(), "canonical": False, "frame": frame})

    @staticmethod
    def _check_valid(name, data, frame):
        r = decode(data, MAX_FRAME_V1)
        if r[0] != "ok" or r[1] != frame or r[2] != len(data):
            raise AssertionError("%s: self-check decodes %r, want %r" % (name, r, frame))
        for cut in range(len(data)):
            if decode(data[:cut], MAX_FRAME_V1)[0] != "need":
                raise AssertionError("%s: prefix %d is not need-more" % (name, cut))

    def invalid_vec(self, name, data, error, field=None, note="", max_frame=DEFAULT_MAX_FRAME):
        """`field` is a field name, a field id (int) or None."""
        self._name(name)
        fid = FIELD_ID[field] if isinstance(field, str) else field
        fname = FIELDS[fid][0] if fid in FIELDS else None
        r = decode(data, max_frame)
        if r[0] != "err" or r[1] != error or r[2] != fid:
            raise AssertionError("%s: self-check gives %r, want %s %r" % (name, r, error, fid))
        self.invalid.append({"name": name, "hex": data.hex(), "max_frame": max_frame,
                             "error": error, "field": fname, "field_id": fid, "note": note})

    def invalid_fields(self, name, tname, items, error, field=None, note="", flags=0):
        """An invalid frame of type tname from a list of fields (see body_from_list)."""
        data = frame_bytes(FRAME_TYPE[tname], flags, body_from_list(items))
        self.invalid_vec(name, data, error, field, note)


def add_examples(v):
    """Section 11, byte for byte."""
    v.valid_frame("example-hello", "HELLO", {"version": 1, "keepalive": 60, "agent": b"cli/1"},
                  expect_hex="01000000000f" "0b020001" "0d02003c" "1a05636c692f31")
    v.valid_frame("example-welcome", "WELCOME",
                  {"token": TOK_A, "version": 1, "keepalive": 60, "window": 64,
                   "max_frame": 65536, "max_blob": 16384, "max_recipients": 100,
                   "keepalive_min": 10, "keepalive_max": 3600, "send_window": 256},
                  expect_hex="02000000004a"
                  "0320" + "a1" * 32 + "0b020001" "0d02003c" "0e020040" "0f0400010000"
                  "100400004000" "11020064" "1202000a" "13020e10" "14020100")
    v.valid_frame("example-send", "SEND",
                  {"msg_id": MID, "recipients": [TOK_B], "ttl": 3600, "priority": 10,
                   "blob": BLOB},
                  expect_hex="03000000004b" "011000112233445566778899aabbccddeeff"
                  "0220" + "b2" * 32 + "040400000e10" "05010a" "070c7365616c65642d626c6f6221")
    v.valid_frame("example-deliver", "DELIVER", {"msg_id": MID, "priority": 10, "blob": BLOB},
                  expect_hex="050000000023" "011000112233445566778899aabbccddeeff" "05010a"
                  "070c7365616c65642d626c6f6221")
    v.valid_frame("example-ack", "ACK", {"msg_ids": [MID]},
                  expect_hex="060000000012" "171000112233445566778899aabbccddeeff")
    v.valid_frame("example-send-result", "SEND_RESULT", {"msg_id": MID, "results": [(0, 0)]},
                  expect_hex="040000000017" "011000112233445566778899aabbccddeeff"
                  "0803000000")
    v.valid_frame("example-ping", "PING", {"data": PING_DATA},
                  expect_hex="07000000000a" "16080102030405060708")
    v.valid_frame("example-pong", "PONG", {"data": PING_DATA},
                  expect_hex="08000000000a" "16080102030405060708")
    v.valid_frame("example-goaway", "GOAWAY", {"code": 15, "retry_after": 5000},
                  expect_hex="09000000000a" "0902000f" "150400001388")
    if len(EXAMPLE_REASON) != 84:
        raise AssertionError("the example reason is %d bytes, the spec says 84"
                             % len(EXAMPLE_REASON))
    v.valid_frame("example-error", "ERROR",
                  {"msg_id": MID, "code": 6, "reason": EXAMPLE_REASON, "frame_type": 3},
                  flags=0x01,
                  expect_hex="0a0100000070" "011000112233445566778899aabbccddeeff" "09020006"
                  "0a4054" + EXAMPLE_REASON.hex() + "180103")
    # The example's bad SEND (priority 7), which the ERROR above answers.
    v.invalid_vec("example-send-priority-7",
                  bytes.fromhex("030000000039" "011000112233445566778899aabbccddeeff"
                                "0220" + "b2" * 32 + "050107" "0700"),
                  "BAD_FIELD", "priority", "section 11: a SEND whose priority is 7")


def add_valid(v):
    # Every frame type with only its required fields, and with all its fields.
    for tname in FULL:
        v.valid_frame(tname.lower().replace("_", "-") + "-required", tname, required_only(tname))
        v.valid_frame(tname.lower().replace("_", "-") + "-all", tname, FULL[tname])

    # Flags (section 5).
    v.valid_frame("hello-flag-send-only", "HELLO", {"version": 1}, flags=0x01)
    v.valid_frame("deliver-flag-stored", "DELIVER", dict(FULL["DELIVER"]), flags=0x01)
    v.valid_frame("error-flag-closing", "ERROR", {"code": 2}, flags=0x01)

    # Integers at their bounds.
    v.valid_frame("hello-bounds-max", "HELLO",
                  {"version": U16MAX, "capabilities": U32MAX, "keepalive": U16MAX,
                   "window": U16MAX})
    v.valid_frame("hello-bounds-min", "HELLO", {"version": 1, "keepalive": 1, "window": 1})
    v.valid_frame("hello-version-2", "HELLO", {"version": 2})
    v.valid_frame("welcome-bounds-min", "WELCOME",
                  {"version": 1, "token": TOK_C, "max_frame": 4096, "max_blob": 1,
                   "max_recipients": 1, "window": 1, "send_window": 1, "keepalive": 1,
                   "keepalive_min": 1, "keepalive_max": 1})
    # max_frame >= max_blob + 32 * max_recipients + 128 (section 5.2) holds in every WELCOME.
    v.valid_frame("welcome-bounds-max", "WELCOME",
                  {"version": U16MAX, "token": TOK_B, "max_frame": MAX_FRAME_V1,
                   "max_blob": MAX_FRAME_V1 - 32 * U16MAX - 128, "max_recipients": U16MAX,
                   "window": U16MAX, "send_window": U16MAX, "keepalive": U16MAX,
                   "keepalive_min": U16MAX, "keepalive_max": U16MAX, "capabilities": U32MAX})
    w = dict(FULL["WELCOME"])
    w.update(keepalive=10)
    v.valid_frame("welcome-keepalive-at-min", "WELCOME", w)
    w = dict(FULL["WELCOME"])
    w.update(keepalive=3600)
    v.valid_frame("welcome-keepalive-at-max", "WELCOME", w)
    w = dict(FULL["WELCOME"])
    w.update(max_frame=4096, max_blob=4096 - 32 * 100 - 128)
    v.valid_frame("welcome-max_frame-4096", "WELCOME", w)

    send = required_only("SEND")
    for p in (1, 5, 10):
        v.valid_frame("send-priority-%d" % p, "SEND", dict(send, priority=p))
        v.valid_frame("deliver-priority-%d" % p, "DELIVER",
                      dict(required_only("DELIVER"), priority=p))
    v.valid_frame("send-ttl-0", "SEND", dict(send, ttl=0))
    v.valid_frame("send-ttl-max", "SEND", dict(send, ttl=U32MAX))
    v.valid_frame("send-recipients-3", "SEND", dict(send, recipients=[TOK_A, TOK_B, TOK_C]))
    v.valid_frame("send-recipient-zero-token", "SEND", dict(send, recipients=[bytes(32)]))
    v.valid_frame("send-blob-empty", "SEND", dict(send, blob=b""))
    v.valid_frame("send-blob-1", "SEND", dict(send, blob=b"x"))
    v.valid_frame("send-blob-63", "SEND", dict(send, blob=pattern(63)))  # last 1-byte length
    v.valid_frame("send-blob-64", "SEND", dict(send, blob=pattern(64)))  # first 2-byte length
    v.valid_frame("send-blob-16383", "SEND", dict(send, blob=pattern(16383, 1)))  # last 2-byte
    v.valid_frame("send-blob-16384", "SEND", dict(send, blob=pattern(16384, 2)))  # first 4-byte
    v.valid_frame("send-collapse_id-1", "SEND", dict(send, collapse_id=b"c"))
    v.valid_frame("send-collapse_id-64", "SEND", dict(send, collapse_id=pattern(64, 3)))
    v.valid_frame("deliver-collapse_id-64", "DELIVER",
                  dict(required_only("DELIVER"), collapse_id=pattern(64, 4)))
    v.valid_frame("deliver-blob-empty", "DELIVER", dict(required_only("DELIVER"), blob=b""))
    v.valid_frame("send-result-results-3", "SEND_RESULT",
                  {"msg_id": MID, "results": [(0, 0x00), (1, 0x10), (65535, 0xFF)]})
    v.valid_frame("send-result-retry_after-max", "SEND_RESULT",
                  {"msg_id": MID, "results": [(0, 0x18)], "retry_after": U32MAX})
    v.valid_frame("ack-msg_ids-3", "ACK", {"msg_ids": [MID, MID2, MID3]})
    v.valid_frame("goaway-reason-256", "GOAWAY", {"code": 16, "reason": printable(256)})
    v.valid_frame("goaway-retry_after-0", "GOAWAY", {"code": 15, "retry_after": 0})
    v.valid_frame("error-reason-256", "ERROR", {"code": 1, "reason": printable(256)})
    v.valid_frame("error-reason-empty", "ERROR", {"code": 1, "reason": b""})
    # A reason is not checked by the codec (section 4): any bytes, even not UTF-8.
    v.valid_frame("error-reason-binary", "ERROR", {"code": 1, "reason": b"\x00\xff\x1b[0m\n"})
    v.valid_frame("error-bounds-max", "ERROR", {"code": U16MAX, "frame_type": 0xFF})
    v.valid_frame("error-frame_type-0", "ERROR", {"code": 3, "frame_type": 0})
    v.valid_frame("hello-agent-64", "HELLO", {"version": 1, "agent": printable(64)})
    v.valid_frame("hello-agent-1", "HELLO", {"version": 1, "agent": b"a"})
    v.valid_frame("hello-agent-edges", "HELLO", {"version": 1, "agent": b" ~ ~"})

    # Decode only: fields out of order.
    f = FULL["SEND"]
    items = list(reversed(field_list(f)))
    v.valid_raw("send-fields-reversed", frame_bytes(3, 0, body_from_list(items)), "SEND", 0, f)
    f = FULL["WELCOME"]
    items = field_list(f)
    items = items[1::2] + items[0::2]
    v.valid_raw("welcome-fields-shuffled", frame_bytes(2, 0, body_from_list(items)),
                "WELCOME", 0, f)
    f = FULL["ERROR"]
    items = list(reversed(field_list(f)))
    v.valid_raw("error-fields-reversed", frame_bytes(10, 1, body_from_list(items)), "ERROR", 1,
                f)

    # Decode only: fields a v1 receiver skips (section 3).
    f = {"version": 1}
    v.valid_raw("hello-unknown-field-7f",
                frame_bytes(1, 0, body_from_list([(0x7F, b"future")] + field_list(f))),
                "HELLO", 0, f)
    v.valid_raw("ping-unknown-field-00", frame_bytes(7, 0, body_from_list([(0x00, b"\x00")])),
                "PING", 0, {})
    f = {"data": PING_DATA}
    v.valid_raw("ping-unknown-field-00-empty",
                frame_bytes(7, 0, body_from_list([(0x00, b"")] + field_list(f))), "PING", 0, f)
    f = {"version": 1}
    v.valid_raw("hello-unknown-field-1b",
                frame_bytes(1, 0, body_from_list(field_list(f) + [(0x1B, b"\x01\x02")])),
                "HELLO", 0, f)
    f = required_only("SEND")
    items = field_list(f)
    v.valid_raw("send-foreign-field-token",
                frame_bytes(3, 0, body_from_list(items[:2] + [(0x03, TOK_A)] + items[2:])),
                "SEND", 0, f)
    # A field of another frame type is skipped unchecked: a bad length, twice.
    v.valid_raw("send-foreign-field-bad-length",
                frame_bytes(3, 0, body_from_list(items + [(0x03, b"\x01"), (0x0B, b"")])),
                "SEND", 0, f)
    v.valid_raw("send-foreign-field-twice",
                frame_bytes(3, 0, body_from_list([(0x03, TOK_A)] + items + [(0x03, TOK_B)])),
                "SEND", 0, f)
    v.valid_raw("ping-unknown-field-twice",
                frame_bytes(7, 0, body_from_list([(0x7F, b"a"), (0x7F, b"b")])), "PING", 0, {})
    f = {"data": PING_DATA}
    v.valid_raw("pong-unknown-field-2-byte-length",
                frame_bytes(8, 0, body_from_list([(0x7E, pattern(200, 5))] + field_list(f))),
                "PONG", 0, f)
    f = required_only("DELIVER")
    v.valid_raw("deliver-foreign-fields",
                frame_bytes(5, 0, body_from_list(field_list(f) + [
                    (0x02, TOK_A), (0x04, b"\x00\x00\x00\x01"), (0x09, b"\x00\x01"),
                    (0x1A, b"\x00"), (0x7F, b"")])),
                "DELIVER", 0, f)
    f = {"code": 15}
    v.valid_raw("goaway-foreign-field-msg_id",
                frame_bytes(9, 0, body_from_list(field_list(f) + [(0x01, MID)])), "GOAWAY", 0, f)
    f = required_only("ACK")
    v.valid_raw("ack-foreign-field-blob",
                frame_bytes(6, 0, body_from_list([(0x07, BLOB)] + field_list(f))), "ACK", 0, f)

    # Decode only: undefined flag bits, which a receiver ignores (section 3).
    for name, tname, flags, kept in (
            ("hello-flags-undefined", "HELLO", 0xFE, 0x00),
            ("hello-flags-all", "HELLO", 0xFF, 0x01),
            ("send-flags-undefined", "SEND", 0x01, 0x00),
            ("send-flags-all", "SEND", 0xFF, 0x00),
            ("deliver-flags-all", "DELIVER", 0xFF, 0x01),
            ("error-flags-undefined", "ERROR", 0x80, 0x00),
            ("ping-flags-all", "PING", 0xFF, 0x00)):
        f = required_only(tname)
        v.valid_raw(name, frame_bytes(FRAME_TYPE[tname], flags, body_of(f)), tname, kept, f)


def replace(items, fid, value, length=None):
    """items with field fid's value (and optionally raw length bytes) replaced."""
    out = []
    for it in items:
        if it[0] == fid:
            out.append((fid, value) if length is None else (fid, value, length))
        else:
            out.append(it)
    return out


def without(items, fid):
    return [it for it in items if it[0] != fid]


def add_invalid(v):
    L = field_list

    # FRAME_TOO_LARGE (section 3): decided on the header alone.
    v.invalid_vec("too-large-4097-header", header(3, 0, 4097), "FRAME_TOO_LARGE",
                  note="header only: length 4097 over max_frame 4096", max_frame=4096)
    body = body_from_list(L(dict(required_only("SEND"), blob=b"")))
    body = body_from_list(L(dict(required_only("SEND"), blob=pattern(4097 - len(body) - 1))))
    assert len(body) == 4097
    v.invalid_vec("too-large-4097-full", frame_bytes(3, 0, body), "FRAME_TOO_LARGE",
                  note="a SEND of 4097 bytes, otherwise valid, over max_frame 4096",
                  max_frame=4096)
    v.invalid_vec("too-large-65537-header", header(7, 0, 65537), "FRAME_TOO_LARGE",
                  note="header only: length 65537 over the default max_frame 65536")
    v.invalid_vec("too-large-16mib-plus-1-header", header(3, 0, MAX_FRAME_V1 + 1),
                  "FRAME_TOO_LARGE", max_frame=MAX_FRAME_V1,
                  note="header only: length 2^24 + 1, over the v1 limit of 16 MiB")
    v.invalid_vec("too-large-u32-max-header", header(3, 0, U32MAX), "FRAME_TOO_LARGE",
                  max_frame=MAX_FRAME_V1, note="header only: length 2^32 - 1")
    v.invalid_vec("too-large-unknown-type-header", header(0x15, 0, 4097), "FRAME_TOO_LARGE",
                  max_frame=4096,
                  note="header only: the length is checked as soon as the header has "
                       "arrived, whatever the type")

    # UNKNOWN_FRAME_TYPE (sections 3, 9.1): the whole frame is skipped, its body unread.
    v.invalid_vec("unknown-type-00", frame_bytes(0x00, 0, body_from_list([(0x0B, b"\x00\x01")])),
                  "UNKNOWN_FRAME_TYPE", note="type 0x00 is not defined; body skipped")
    v.invalid_vec("unknown-type-15", frame_bytes(0x15, 0, body_from_list(L(FULL["SEND"]))),
                  "UNKNOWN_FRAME_TYPE", note="type 0x15 is not defined in v1; body skipped")
    v.invalid_vec("unknown-type-15-empty", frame_bytes(0x15, 0xFF, b""), "UNKNOWN_FRAME_TYPE",
                  note="type 0x15 with an empty body")
    v.invalid_vec("unknown-type-ff-garbage",
                  frame_bytes(0xFF, 0x55, bytes.fromhex("ff c0 80 40 05 07 ff ff ff ff")),
                  "UNKNOWN_FRAME_TYPE",
                  note="type 0xff; its body is not a field sequence, but is never parsed")

    # MALFORMED_FRAME (section 3).
    def ping(body, name, note):
        v.invalid_vec(name, frame_bytes(7, 0, body), "MALFORMED_FRAME", note=note)

    ping(bytes.fromhex("1608010203"), "malformed-length-past-end",
         "data claims 8 bytes, 3 remain in the body")
    ping(bytes.fromhex("16080102030405060708") + bytes.fromhex("7f05aabb"),
         "malformed-unknown-field-past-end",
         "an unknown field whose length runs past the end (it cannot be skipped)")
    ping(bytes.fromhex("16"), "malformed-ends-after-id", "the body ends right after a field id")
    ping(bytes.fromhex("16080102030405060708") + b"\x7f", "malformed-ends-after-second-id",
         "the body ends right after the id of a second field")
    ping(bytes.fromhex("7f40"), "malformed-truncated-2-byte-length",
         "a 2-byte length with only its first byte in the body")
    ping(bytes.fromhex("7f8000"), "malformed-truncated-4-byte-length",
         "a 4-byte length with only 2 of its bytes in the body")
    ping(bytes.fromhex("7f800040"), "malformed-truncated-4-byte-length-3",
         "a 4-byte length with only 3 of its bytes in the body")
    ping(bytes.fromhex("16c000000000000008") + PING_DATA, "malformed-8-byte-length",
         "the 8-byte length form (first bits 11) is not used in v1")
    ping(bytes.fromhex("7fc1"), "malformed-8-byte-length-truncated",
         "first bits 11 with the body ending inside the length")
    ping(bytes.fromhex("7f4005") + b"hello", "malformed-non-shortest-2-byte-5",
         "length 5 written as 40 05")
    ping(bytes.fromhex("7f4000"), "malformed-non-shortest-2-byte-0",
         "length 0 written as 40 00")
    ping(bytes.fromhex("7f403f") + pattern(63), "malformed-non-shortest-2-byte-63",
         "length 63 written in 2 bytes")
    ping(bytes.fromhex("7f80000064") + pattern(100), "malformed-non-shortest-4-byte-100",
         "length 100 written as 80 00 00 64")
    ping(bytes.fromhex("7f80000005") + b"hello", "malformed-non-shortest-4-byte-5",
         "length 5 written in 4 bytes")
    ping(bytes.fromhex("7f80003fff") + pattern(16383), "malformed-non-shortest-4-byte-16383",
         "length 16383 written in 4 bytes")
    ping(bytes.fromhex("1680000008") + PING_DATA, "malformed-non-shortest-known-field",
         "a known field (data) whose length 8 is written in 4 bytes")
    ping(bytes.fromhex("7fbfffffff"), "malformed-length-1gib-past-end",
         "the largest 4-byte length, far past the end of the body")
    items = L(required_only("SEND"))
    v.invalid_fields("malformed-send-blob-past-end", "SEND",
                     items[:-1] + [(0x07, BLOB, b"\x0d")], "MALFORMED_FRAME",
                     note="a SEND whose last field, blob, claims 13 bytes and has 12")
    v.invalid_fields("malformed-send-non-shortest-blob", "SEND",
                     items[:-1] + [(0x07, BLOB, b"\x40\x0c")], "MALFORMED_FRAME",
                     note="a SEND whose blob length 12 is written as 40 0c")

    # MISSING_FIELD: each required field of each frame type (section 5).
    for tname in FULL:
        allowed = FRAMES[FRAME_TYPE[tname]][1]
        for fid in sorted(allowed):
            if allowed[fid]:
                fname = FIELDS[fid][0]
                v.invalid_fields("missing-%s-%s" % (tname.lower().replace("_", "-"), fname),
                                 tname, without(L(FULL[tname]), fid), "MISSING_FIELD", fname,
                                 note="%s without its required %s" % (tname, fname))

    # BAD_FIELD: fixed-size fields with a wrong length, integers of the wrong width.
    for tname in FULL:
        base = L(FULL[tname])
        tl = tname.lower().replace("_", "-")
        for fid, val in base:
            fname, kind = FIELDS[fid]
            if kind[0] == "fixed":
                n = kind[1]
                for bad in (0, n - 1, n + 1):
                    v.invalid_fields("bad-%s-%s-length-%d" % (tl, fname, bad), tname,
                                     replace(base, fid, pattern(bad, 9)), "BAD_FIELD", fname,
                                     note="%s is exactly %d bytes" % (fname, n))
            elif kind[0] in ("uint", "prio"):
                n = kind[1] if kind[0] == "uint" else 1
                ival = int.from_bytes(val, "big")
                for bad in sorted({0, n - 1, n + 1, 8} - {n}):
                    if bad and ival >= 1 << (8 * bad):
                        continue
                    wrong = ival.to_bytes(bad, "big") if bad else b""
                    v.invalid_fields("bad-%s-%s-width-%d" % (tl, fname, bad), tname,
                                     replace(base, fid, wrong), "BAD_FIELD", fname,
                                     note="%s is a %d-byte integer; here %d bytes holding "
                                          "the valid value %d" % (fname, n, bad, ival))

    # BAD_FIELD: values out of bounds (section 4).
    def bad(name, tname, fid, value, note, base=None, field=None):
        items = L(FULL[tname] if base is None else base)
        if any(it[0] == fid for it in items):
            items = replace(items, fid, value)
        else:
            items = sorted(items + [(fid, value)])
        v.invalid_fields(name, tname, items, "BAD_FIELD", fid if field is None else field,
                         note=note)

    for tname in ("SEND", "DELIVER"):
        for p in (0, 2, 7, 11, 255):
            bad("bad-%s-priority-%d" % (tname.lower(), p), tname, 0x05, bytes([p]),
                "priority is 10, 5 or 1")
        bad("bad-%s-collapse_id-length-0" % tname.lower(), tname, 0x06, b"",
            "collapse_id is 1 to 64 bytes")
        bad("bad-%s-collapse_id-length-65" % tname.lower(), tname, 0x06, pattern(65),
            "collapse_id is 1 to 64 bytes")
    for n in (0, 31, 33, 65):
        bad("bad-send-recipients-length-%d" % n, "SEND", 0x02, pattern(n),
            "recipients is a non-zero multiple of 32 bytes")
    for n in (0, 1, 2, 4, 5):
        bad("bad-send-result-results-length-%d" % n, "SEND_RESULT", 0x08, pattern(n),
            "results is a non-zero multiple of 3 bytes")
    for n in (0, 15, 17, 33):
        bad("bad-ack-msg_ids-length-%d" % n, "ACK", 0x17, pattern(n),
            "msg_ids is a non-zero multiple of 16 bytes")
    for tname in ("GOAWAY", "ERROR"):
        bad("bad-%s-reason-length-257" % tname.lower(), tname, 0x0A, printable(257),
            "reason is at most 256 bytes")
        bad("bad-%s-code-0" % tname.lower(), tname, 0x09, b"\x00\x00", "code is 1 to 65535")
    for n in (0, 65):
        bad("bad-hello-agent-length-%d" % n, "HELLO", 0x1A, printable(n),
            "agent is 1 to 64 bytes")
    for c in (0x00, 0x1F, 0x7F, 0x80, 0xFF):
        bad("bad-hello-agent-byte-%02x" % c, "HELLO", 0x1A, b"cli/" + bytes([c]) + b"1",
            "agent is printable ASCII 0x20 to 0x7e; here byte 0x%02x" % c)
    for tname in ("HELLO", "WELCOME"):
        tl = tname.lower()
        bad("bad-%s-version-0" % tl, tname, 0x0B, b"\x00\x00", "version is 1 to 65535")
        bad("bad-%s-window-0" % tl, tname, 0x0E, b"\x00\x00", "window is 1 to 65535")
    bad("bad-hello-keepalive-0", "HELLO", 0x0D, b"\x00\x00", "keepalive is 1 to 65535")
    w = dict(FULL["WELCOME"], keepalive_min=1)
    bad("bad-welcome-keepalive-0", "WELCOME", 0x0D, b"\x00\x00", "keepalive is 1 to 65535",
        base=w)
    bad("bad-welcome-send_window-0", "WELCOME", 0x14, b"\x00\x00", "send_window is 1 to 65535")
    bad("bad-welcome-max_recipients-0", "WELCOME", 0x11, b"\x00\x00",
        "max_recipients is 1 to 65535")
    bad("bad-welcome-keepalive_min-0", "WELCOME", 0x12, b"\x00\x00",
        "keepalive_min is 1 to 65535")
    w = dict(FULL["WELCOME"], keepalive_min=1, keepalive=1)
    bad("bad-welcome-keepalive_max-0", "WELCOME", 0x13, b"\x00\x00",
        "keepalive_max is 1 to 65535", base=w)
    w = dict(FULL["WELCOME"], max_blob=1)
    for mf in (0, 4095):
        bad("bad-welcome-max_frame-%d" % mf, "WELCOME", 0x0F, mf.to_bytes(4, "big"),
            "max_frame is 4096 to 16777216", base=w)
    bad("bad-welcome-max_frame-16777217", "WELCOME", 0x0F, (MAX_FRAME_V1 + 1).to_bytes(4, "big"),
        "max_frame is 4096 to 16777216")
    bad("bad-welcome-max_blob-0", "WELCOME", 0x10, b"\x00\x00\x00\x00", "max_blob is at least 1")
    w = dict(FULL["WELCOME"], max_frame=MAX_FRAME_V1)
    bad("bad-welcome-max_blob-16777217", "WELCOME", 0x10, (MAX_FRAME_V1 + 1).to_bytes(4, "big"),
        "max_blob is at most 16777216", base=w)
    # Cross-field bounds of WELCOME (section 5.2).
    bad("bad-welcome-max_blob-over-max_frame", "WELCOME", 0x10, (65537).to_bytes(4, "big"),
        "max_blob 65537 exceeds max_frame 65536")
    w = dict(FULL["WELCOME"], max_frame=4096, max_blob=1)
    bad("bad-welcome-max_blob-4097-over-max_frame-4096", "WELCOME", 0x10,
        (4097).to_bytes(4, "big"), "max_blob 4097 exceeds max_frame 4096", base=w)
    w = dict(FULL["WELCOME"], max_frame=4096, max_recipients=100)
    bad("bad-welcome-send-does-not-fit-max_frame", "WELCOME", 0x10,
        (4096 - 32 * 100 - 127).to_bytes(4, "big"),
        "max_blob 769 + 32 x 100 recipients + 128 = 4097 exceeds max_frame 4096", base=w,
        field=0x0F)
    w = dict(FULL["WELCOME"], keepalive=60, keepalive_min=61, keepalive_max=61)
    bad("bad-welcome-keepalive_min-over-keepalive_max", "WELCOME", 0x13, (60).to_bytes(2, "big"),
        "keepalive_min 61 exceeds keepalive_max 60 (keepalive_max is at least keepalive_min)",
        base=w)
    bad("bad-welcome-keepalive-below-min", "WELCOME", 0x0D, (9).to_bytes(2, "big"),
        "keepalive 9 below keepalive_min 10")
    bad("bad-welcome-keepalive-above-max", "WELCOME", 0x0D, (3601).to_bytes(2, "big"),
        "keepalive 3601 above keepalive_max 3600")

    # DUPLICATE_FIELD (section 3).
    def dup(name, tname, fid, second=None, note=""):
        items = L(FULL[tname])
        val = [it for it in items if it[0] == fid][0][1]
        items = items + [(fid, val if second is None else second)]
        v.invalid_fields(name, tname, items, "DUPLICATE_FIELD", fid, note=note)

    dup("duplicate-hello-version", "HELLO", 0x0B, note="version twice, same value")
    dup("duplicate-hello-agent", "HELLO", 0x1A, b"other/2", note="agent twice")
    dup("duplicate-welcome-token", "WELCOME", 0x03, TOK_B, note="token twice")
    dup("duplicate-send-msg_id", "SEND", 0x01, MID2, note="msg_id twice, different values")
    dup("duplicate-send-recipients", "SEND", 0x02, TOK_A,
        note="recipients twice (a list is one field, not repeated fields)")
    dup("duplicate-send-priority", "SEND", 0x05, b"\x0a", note="priority twice")
    dup("duplicate-send-blob", "SEND", 0x07, b"", note="blob twice")
    dup("duplicate-send-result-results", "SEND_RESULT", 0x08, b"\x00\x02\x00",
        note="results twice")
    dup("duplicate-deliver-collapse_id", "DELIVER", 0x06, note="collapse_id twice")
    dup("duplicate-ack-msg_ids", "ACK", 0x17, MID3, note="msg_ids twice")
    dup("duplicate-ping-data", "PING", 0x16, note="data twice")
    dup("duplicate-pong-data", "PONG", 0x16, note="data twice")
    dup("duplicate-goaway-code", "GOAWAY", 0x09, note="code twice")
    dup("duplicate-error-reason", "ERROR", 0x0A, b"", note="reason twice")
    items = L(FULL["SEND"])
    v.invalid_fields("duplicate-send-msg_id-adjacent", "SEND", [items[0]] + items,
                     "DUPLICATE_FIELD", "msg_id", note="msg_id twice in a row, at the start")

    # UNSUPPORTED_FIELD: unknown critical ids (section 3).
    for tname, fid, val in (("SEND", 0x80, b""), ("SEND", 0xFF, b"\x01"),
                            ("HELLO", 0x80, b"critical"), ("PING", 0xFF, b""),
                            ("ERROR", 0x9A, b"\x00\x01")):
        items = L(FULL[tname]) + [(fid, val)]
        v.invalid_fields("unsupported-%s-%02x" % (tname.lower(), fid), tname, items,
                         "UNSUPPORTED_FIELD", fid,
                         note="critical field id 0x%02x is not defined in v1" % fid)
    items = L(FULL["WELCOME"])
    v.invalid_fields("unsupported-welcome-80-first", "WELCOME", [(0x80, b"x")] + items,
                     "UNSUPPORTED_FIELD", 0x80, note="critical id 0x80 before the known fields")


def build():
    v = Vectors()
    add_examples(v)
    add_valid(v)
    add_invalid(v)
    doc = {
        "version": 1,
        "valid": sorted(v.valid, key=lambda x: x["name"]),
        "invalid": sorted(v.invalid, key=lambda x: x["name"]),
    }
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def main(argv):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "frames.json")
    text = build()
    if "--stdout" in argv:
        sys.stdout.write(text)
        return 0
    if "--check" in argv:
        try:
            with open(path, encoding="utf-8") as fp:
                old = fp.read()
        except OSError as e:
            print("gen_vectors: %s: %s" % (path, e), file=sys.stderr)
            return 1
        if old != text:
            print("gen_vectors: %s is out of date; run %s" % (path, argv[0]), file=sys.stderr)
            return 1
        return 0
    with open(path, "w", encoding="utf-8", newline="\n") as fp:
        fp.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
