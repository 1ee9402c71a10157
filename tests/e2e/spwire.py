#!/usr/bin/env python3
"""spwire: an independent encoder/decoder of sealpush protocol v1 frames, for the tests.

Written from proto/PROTOCOL.md (sections 3 to 5 and 9) alone: it shares no code with the C
codec (proto/sp_frame.c) nor with the vector generator (proto/vectors/gen_vectors.py), so that
a codec bug cannot hide on both sides of an end-to-end test. Python 3 standard library only.

Building frames:

    encode(SEND, {"msg_id": mid, "recipients": [tok], "blob": b"x", "priority": 5})
    encode("PING", {"data": b"12345678"})
    encode(HELLO, {"version": 1}, flags=SEND_ONLY)

Values: int for integer fields; bytes (or str, UTF-8) for byte strings; a list of bytes for
`recipients` / `msg_ids`; a list of (index, status) for `results`. A bytes value for an
integer or array field is written as it is, which builds a field of the wrong width. Keys are
field names or ids; fields are written in ascending id order (the canonical encoding).
Broken frames are built from the parts:

    frame(SEND, body, flags=0, length=None)  # any body, any declared length
    field(0x05, b"\\x07")                    # one field; lensize=2 forces a longer length form
    varint(5, size=2)                        # 40 05: the non-shortest form (MALFORMED_FRAME)

Reading frames: Decoder(max_frame).feed(bytes) then .next() -> Frame or None (need more), or
raises WireError(code, field_id) for a fatal error. A frame of an undefined type is returned
with frame.error = WireError(UNKNOWN_FRAME_TYPE) (its body is skipped, as the spec says).
FrameReader(sock) reads frames from a (TLS) socket with a timeout.

Self-check (TAP):  spwire.py --self-check [--protocol PROTOCOL.md] [--vectors frames.json]
"""

import hashlib
import json
import os
import re
import socket
import ssl
import struct
import sys
import time

# --- registry (PROTOCOL.md sections 3, 4, 5, 9) ---

(HELLO, WELCOME, SEND, SEND_RESULT, DELIVER, ACK, PING, PONG, GOAWAY, ERROR, SUBSCRIBE,
 SUBSCRIPTION, DIR_PUBLISH, DIR_LOOKUP, DIR_ANSWER) = range(1, 16)
RENEW, RENEWED = 0x11, 0x12  # section 16.4 (0x10: reserved)
ACCESS_SET, ACCESS_STATE = 0x13, 0x14  # section 17.4 (sealed sender)
TYPE_NAMES = {1: "HELLO", 2: "WELCOME", 3: "SEND", 4: "SEND_RESULT", 5: "DELIVER", 6: "ACK",
              7: "PING", 8: "PONG", 9: "GOAWAY", 10: "ERROR", 11: "SUBSCRIBE",
              12: "SUBSCRIPTION", 13: "DIR_PUBLISH", 14: "DIR_LOOKUP", 15: "DIR_ANSWER",
              0x11: "RENEW", 0x12: "RENEWED", 0x13: "ACCESS_SET", 0x14: "ACCESS_STATE"}
TYPES = {v: k for k, v in TYPE_NAMES.items()}

# Flags (per frame type).
SEND_ONLY = 0x01  # HELLO
STORED = 0x01     # DELIVER
CLOSING = 0x01    # ERROR
REMOVE = 0x01     # SUBSCRIBE
LIST = 0x02       # SUBSCRIBE
LOOKUP_HEAD = 0x01  # DIR_LOOKUP
LOOKUP_HISTORY = 0x02  # DIR_LOOKUP: an entry of the requester's own handle (15.6)
DEFINED_FLAGS = {HELLO: SEND_ONLY, DELIVER: STORED, ERROR: CLOSING,
                 SUBSCRIBE: REMOVE | LIST, DIR_LOOKUP: LOOKUP_HEAD | LOOKUP_HISTORY}  # others: none
CAP_WEBPUSH = 0x01  # WELCOME capabilities: the relay has a Web Push door (section 14)
CAP_DIRECTORY = 0x02  # WELCOME capabilities: the relay has a key directory (section 15)
CAP_RENEW = 0x04    # WELCOME capabilities: the relay renews certificates (section 16.4)
CAP_ANONYMOUS = 0x08  # WELCOME capabilities: the relay has an anonymous door (section 17)

HEADER_LEN = 6
V1_MAX_FRAME = 1 << 24       # no frame is ever longer in v1
PRE_WELCOME_MAX_FRAME = 1024  # what the server accepts before it has sent WELCOME
ALPN_V1 = "sealpush/1"

ERROR_CODES = {
    "MALFORMED_FRAME": 1, "FRAME_TOO_LARGE": 2, "UNKNOWN_FRAME_TYPE": 3,
    "UNEXPECTED_FRAME": 4, "MISSING_FIELD": 5, "BAD_FIELD": 6, "DUPLICATE_FIELD": 7,
    "UNSUPPORTED_FIELD": 8, "UNSUPPORTED_VERSION": 9, "HELLO_TIMEOUT": 10,
    "IDLE_TIMEOUT": 11, "SLOW_CONSUMER": 12, "TOO_MANY_ERRORS": 13, "INTERNAL_ERROR": 14,
    "SHUTDOWN": 15, "REPLACED": 16, "CERT_REVOKED": 17,
    "RENEW_REFUSED": 20, "RENEW_UNAVAILABLE": 21, "ANONYMOUS": 22,
}
ERROR_NAMES = {v: k for k, v in ERROR_CODES.items()}
globals().update({"E_" + k: v for k, v in ERROR_CODES.items()})

STATUS_CODES = {
    "DELIVERED": 0x00, "QUEUED": 0x01, "BAD_DEVICE_TOKEN": 0x10, "PAYLOAD_TOO_LARGE": 0x11,
    "TOO_MANY_RECIPIENTS": 0x12, "TOO_MANY_REQUESTS": 0x13, "QUOTA_EXCEEDED": 0x14,
    "EXPIRED": 0x15, "DEVICE_OFFLINE": 0x16, "FORBIDDEN": 0x17, "TRY_LATER": 0x18,
    "SHUTDOWN": 0x19, "INTERNAL_ERROR": 0x1A, "ACCESS_DENIED": 0x1B,
    "BAD_SIZE": 0x1C,
}
STATUS_NAMES = {v: k for k, v in STATUS_CODES.items()}
globals().update({"S_" + k: v for k, v in STATUS_CODES.items()})

# id: (name, kind, a, b). kinds: "bytes" (min len a, max len b), "u8"/"u16"/"u32" (min a,
# max b; or a set of allowed values in a), "array" (item size a), "results", "agent".
FIELDS = {
    0x01: ("msg_id", "bytes", 16, 16),
    0x02: ("recipients", "array", 32, None),
    0x03: ("token", "bytes", 32, 32),
    0x04: ("ttl", "u32", 0, 0xFFFFFFFF),
    0x05: ("priority", "u8", {10, 5, 1}, None),
    0x06: ("collapse_id", "bytes", 1, 64),
    0x07: ("blob", "bytes", 0, 1 << 24),
    0x08: ("results", "results", 3, None),
    0x09: ("code", "u16", 1, 0xFFFF),
    0x0A: ("reason", "bytes", 0, 256),
    0x0B: ("version", "u16", 1, 0xFFFF),
    0x0C: ("capabilities", "u32", 0, 0xFFFFFFFF),
    0x0D: ("keepalive", "u16", 1, 0xFFFF),
    0x0E: ("window", "u16", 1, 0xFFFF),
    0x0F: ("max_frame", "u32", 4096, 1 << 24),
    0x10: ("max_blob", "u32", 1, 1 << 24),
    0x11: ("max_recipients", "u16", 1, 0xFFFF),
    0x12: ("keepalive_min", "u16", 1, 0xFFFF),
    0x13: ("keepalive_max", "u16", 1, 0xFFFF),
    0x14: ("send_window", "u16", 1, 0xFFFF),
    0x15: ("retry_after", "u32", 0, 0xFFFFFFFF),
    0x16: ("data", "bytes", 8, 8),
    0x17: ("msg_ids", "array", 16, None),
    0x18: ("frame_type", "u8", 0, 0xFF),
    0x19: ("resume_id", "bytes", 16, 16),
    0x1A: ("agent", "agent", 1, 64),
    0x1B: ("sub_id", "bytes", 16, 16),
    0x1C: ("app_key", "bytes", 65, 65),
    0x1D: ("endpoint", "agent", 1, 512),
    0x1E: ("status", "u8", 0, 0xFF),
    0x1F: ("sub_ids", "array", 16, None),
    0x20: ("dir_card", "bytes", 1, 65536),
    0x21: ("handle", "agent", 1, 64),
    0x22: ("tree_size", "bytes", 8, 8),
    0x23: ("dir_entry", "bytes", 1, 65536 + 90),
    0x24: ("leaf_index", "bytes", 8, 8),
    0x25: ("tree_head", "bytes", 50, 256),
    0x26: ("inclusion", "bytes", 1, 2049),
    0x27: ("consistency", "bytes", 1, 2049),
    0x28: ("csr", "bytes", 1, 2048),
    0x29: ("cert_chain", "bytes", 1, 16384),
    0x2A: ("not_after", "u32", 0, 0xFFFFFFFF),
    0x30: ("anon_mode", "u8", 0, 2),
    0x31: ("access_verifiers", "array", 32, None),
    0x32: ("access_keys", "array", 32, None),
    0x38: ("hist_left", "u32", 0, 0xFFFFFFFF),
}
FIELD_IDS = {v[0]: k for k, v in FIELDS.items()}
MAX_ITEMS = 65535  # recipients, results, msg_ids

# type: (required field names, optional field names)
FRAME_FIELDS = {
    HELLO: ({"version"}, {"capabilities", "keepalive", "window", "resume_id", "agent"}),
    WELCOME: ({"version", "token", "max_frame", "max_blob", "max_recipients", "window",
               "send_window", "keepalive", "keepalive_min", "keepalive_max"}, {"capabilities"}),
    SEND: ({"msg_id", "recipients", "blob"}, {"ttl", "priority", "collapse_id", "access_keys"}),
    SEND_RESULT: ({"msg_id", "results"}, {"retry_after"}),
    DELIVER: ({"msg_id", "blob"}, {"priority", "collapse_id"}),
    ACK: ({"msg_ids"}, set()),
    PING: (set(), {"data"}),
    PONG: (set(), {"data"}),
    GOAWAY: ({"code"}, {"retry_after", "reason"}),
    ERROR: ({"code"}, {"reason", "msg_id", "frame_type"}),
    SUBSCRIBE: ({"msg_id"}, {"sub_id", "app_key"}),
    SUBSCRIPTION: ({"msg_id", "status"}, {"sub_id", "app_key", "endpoint", "sub_ids", "reason"}),
    DIR_PUBLISH: ({"msg_id", "dir_card"}, set()),
    DIR_LOOKUP: ({"msg_id"}, {"handle", "token", "tree_size", "leaf_index"}),
    DIR_ANSWER: ({"msg_id", "status"}, {"dir_entry", "leaf_index", "tree_head", "inclusion",
                                        "consistency", "retry_after", "reason",
                                        "hist_left"}),
    RENEW: ({"msg_id", "csr"}, set()),
    RENEWED: ({"msg_id", "cert_chain", "not_after", "token"}, set()),
    ACCESS_SET: ({"msg_id", "anon_mode"}, {"access_verifiers"}),
    ACCESS_STATE: ({"msg_id", "status"}, {"anon_mode", "retry_after", "reason"}),
}


def type_name(t):
    return TYPE_NAMES.get(t, "0x%02x" % t)


def error_name(c):
    return ERROR_NAMES.get(c, str(c))


def status_name(s):
    return STATUS_NAMES.get(s, "0x%02x" % s)


def _type_id(t):
    return TYPES[t] if isinstance(t, str) else t


def _field_id(k):
    return FIELD_IDS[k] if isinstance(k, str) else k


class WireError(Exception):
    """A decoding error with the spec's error code and, where one applies, the field id."""

    def __init__(self, code, field_id=None, detail="", frame_type=None):
        self.code = code
        self.field_id = field_id
        self.detail = detail
        self.frame_type = frame_type
        super().__init__(str(self))

    @property
    def name(self):
        return error_name(self.code)

    def __str__(self):
        s = self.name
        if self.field_id is not None:
            s += " field %s (0x%02x)" % (FIELDS.get(self.field_id, ("?",))[0], self.field_id)
        if self.detail:
            s += ": " + self.detail
        return s


# --- encoding ---

def varint(n, size=None):
    """The field length n as a 1, 2 or 4 byte varint; size forces a (possibly non-shortest,
    hence invalid) form. size=8 writes the unused 8-byte form (first bits 11)."""
    if size is None:
        size = 1 if n < 64 else 2 if n < 16384 else 4
    if size == 1:
        assert 0 <= n < 64
        return bytes([n])
    if size == 2:
        assert 0 <= n < 16384
        return struct.pack(">H", 0x4000 | n)
    if size == 4:
        assert 0 <= n < (1 << 30)
        return struct.pack(">I", 0x80000000 | n)
    if size == 8:
        return struct.pack(">Q", (0xC0 << 56) | n)
    raise ValueError("varint size must be 1, 2, 4 or 8")


def field(fid, value, lensize=None, length=None):
    """One field: id, length (the real one unless length is given), value bytes."""
    n = len(value) if length is None else length
    return bytes([_field_id(fid)]) + varint(n, lensize) + value


def header(ftype, flags, length):
    return struct.pack(">BBI", _type_id(ftype), flags, length)


def frame(ftype, body=b"", flags=0, length=None):
    """A frame with any body; length overrides the header's length (for broken frames)."""
    return header(ftype, flags, len(body) if length is None else length) + body


def value_bytes(fid, v):
    """The wire form of one field value (see the module docstring)."""
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, str):
        return v.encode("utf-8")
    kind = FIELDS[fid][1] if fid in FIELDS else "bytes"
    if kind == "u8":
        return struct.pack(">B", v)
    if kind == "u16":
        return struct.pack(">H", v)
    if kind == "u32":
        return struct.pack(">I", v)
    if kind == "array":
        return b"".join(bytes(x) for x in v)
    if kind == "results":
        return b"".join(struct.pack(">HB", i, s) for i, s in v)
    raise TypeError("cannot encode %r for field 0x%02x" % (v, fid))


def encode_body(fields):
    items = sorted((_field_id(k), v) for k, v in (fields or {}).items())
    return b"".join(field(fid, value_bytes(fid, v)) for fid, v in items)


def encode(ftype, fields=None, flags=0):
    """A whole frame, fields in ascending id order."""
    return frame(ftype, encode_body(fields), flags)


# --- decoding ---

class Frame:
    """A decoded frame. fields: name -> value (int, bytes, list of bytes, list of (i, s));
    unknown: [(id, bytes)] of skipped fields; error: a non-fatal WireError (unknown type)."""

    def __init__(self, ftype, flags, length, fields, unknown, raw, error=None):
        self.type = ftype
        self.flags = flags
        self.length = length
        self.fields = fields
        self.unknown = unknown
        self.raw = raw
        self.error = error

    @property
    def name(self):
        return type_name(self.type)

    @property
    def known_flags(self):
        """The flag bits v1 defines for this type (a receiver ignores the others)."""
        return self.flags & DEFINED_FLAGS.get(self.type, 0)

    @property
    def undefined_flags(self):
        """Bits a v1 sender must have left zero."""
        return self.flags & ~DEFINED_FLAGS.get(self.type, 0) & 0xFF

    def get(self, name, default=None):
        return self.fields.get(name, default)

    def __getitem__(self, name):
        return self.fields[name]

    def __contains__(self, name):
        return name in self.fields

    def __repr__(self):
        parts = []
        for k, v in sorted(self.fields.items(), key=lambda kv: FIELD_IDS[kv[0]]):
            if k == "code":
                v = "%d %s" % (v, (error_name if self.type in (ERROR, GOAWAY) else str)(v))
            elif k == "results":
                v = "[" + ", ".join("%d:%s" % (i, status_name(s)) for i, s in v) + "]"
            elif k == "reason":
                v = repr(v.decode("utf-8", "replace"))
            elif isinstance(v, bytes):
                v = v.hex() if len(v) <= 40 else "%s...(%d bytes)" % (v[:16].hex(), len(v))
            elif isinstance(v, list):
                v = "[" + ", ".join(x.hex()[:16] for x in v) + "]"
            parts.append("%s=%s" % (k, v))
        s = "%s flags=0x%02x len=%d" % (self.name, self.flags, self.length)
        if parts:
            s += " " + " ".join(parts)
        if self.error is not None:
            s += " (%s)" % self.error
        return "<" + s + ">"


def _read_varint(body, pos):
    """(value, new pos) of the varint at pos; MALFORMED_FRAME if truncated, 8-byte, or not
    in its shortest form."""
    if pos >= len(body):
        raise WireError(E_MALFORMED_FRAME, detail="body ends inside a field length")
    b0 = body[pos]
    form = b0 >> 6
    if form == 3:
        raise WireError(E_MALFORMED_FRAME, detail="8-byte length form")
    size = (1, 2, 4)[form]
    if pos + size > len(body):
        raise WireError(E_MALFORMED_FRAME, detail="body ends inside a field length")
    n = b0 & 0x3F
    for b in body[pos + 1:pos + size]:
        n = (n << 8) | b
    if (size == 2 and n < 64) or (size == 4 and n < 16384):
        raise WireError(E_MALFORMED_FRAME, detail="length %d not in its shortest form" % n)
    return n, pos + size


def split_fields(body):
    """[(id, value)] of a body; MALFORMED_FRAME if it is not a well-formed field sequence."""
    out = []
    pos = 0
    while pos < len(body):
        fid = body[pos]
        n, pos = _read_varint(body, pos + 1)
        if pos + n > len(body):
            raise WireError(E_MALFORMED_FRAME, detail="field 0x%02x runs past the end" % fid)
        out.append((fid, body[pos:pos + n]))
        pos += n
    return out


def _decode_value(fid, v):
    name, kind, a, b = FIELDS[fid]

    def bad(why):
        return WireError(E_BAD_FIELD, fid, "%s: %s" % (name, why))

    if kind in ("u8", "u16", "u32"):
        width = {"u8": 1, "u16": 2, "u32": 4}[kind]
        if len(v) != width:
            raise bad("%d bytes, want %d" % (len(v), width))
        x = int.from_bytes(v, "big")
        if isinstance(a, set):
            if x not in a:
                raise bad("value %d not one of %s" % (x, sorted(a)))
        elif not a <= x <= b:
            raise bad("value %d outside %d..%d" % (x, a, b))
        return x
    if kind in ("bytes", "agent"):
        if not a <= len(v) <= b:
            raise bad("%d bytes, want %d..%d" % (len(v), a, b))
        if kind == "agent" and any(c < 0x20 or c > 0x7E for c in v):
            raise bad("not printable ASCII")
        return bytes(v)
    if kind == "array":
        if len(v) == 0 or len(v) % a or len(v) // a > MAX_ITEMS:
            raise bad("%d bytes is not 1 to %d items of %d" % (len(v), MAX_ITEMS, a))
        return [bytes(v[i:i + a]) for i in range(0, len(v), a)]
    if kind == "results":
        if len(v) == 0 or len(v) % 3 or len(v) // 3 > MAX_ITEMS:
            raise bad("%d bytes is not 1 to %d entries of 3" % (len(v), MAX_ITEMS))
        return [struct.unpack(">HB", v[i:i + 3]) for i in range(0, len(v), 3)]
    raise AssertionError(kind)


def decode_body(ftype, body):
    """(fields, unknown) of a body of a defined type, or raises WireError."""
    fields = {}
    unknown = []
    required, optional = FRAME_FIELDS[ftype]
    allowed = required | optional
    for fid, v in split_fields(body):
        name = FIELDS[fid][0] if fid in FIELDS else None
        if name is None or name not in allowed:
            if fid >= 0x80:
                raise WireError(E_UNSUPPORTED_FIELD, fid, "critical field 0x%02x" % fid)
            unknown.append((fid, bytes(v)))
            continue
        if name in fields:
            raise WireError(E_DUPLICATE_FIELD, fid, name + " twice")
        fields[name] = _decode_value(fid, v)
    for name in sorted(required, key=lambda n: FIELD_IDS[n]):
        if name not in fields:
            raise WireError(E_MISSING_FIELD, FIELD_IDS[name], name + " is required")
    if ftype == WELCOME:
        f = fields
        if f["max_blob"] > f["max_frame"]:
            raise WireError(E_BAD_FIELD, FIELD_IDS["max_blob"], "max_blob exceeds max_frame")
        if f["keepalive_min"] > f["keepalive_max"]:
            raise WireError(E_BAD_FIELD, FIELD_IDS["keepalive_max"],
                            "keepalive_min exceeds keepalive_max")
        if not f["keepalive_min"] <= f["keepalive"] <= f["keepalive_max"]:
            raise WireError(E_BAD_FIELD, FIELD_IDS["keepalive"], "keepalive outside bounds")
        # 5.2: max_frame must hold a SEND with max_recipients tokens, a 64-byte collapse id
        # and a max_blob blob. (The spec states it as the server's MUST; the vectors make a
        # WELCOME that breaks it BAD_FIELD on max_frame.)
        if f["max_frame"] < f["max_blob"] + 32 * f["max_recipients"] + 128:
            raise WireError(E_BAD_FIELD, FIELD_IDS["max_frame"],
                            "max_frame cannot hold a full SEND")
    return fields, unknown


class Decoder:
    """Incremental decoder of a byte stream. next() returns a Frame, None when it needs more
    bytes, or raises WireError (fatal: the stream cannot go on). The length is checked against
    max_frame as soon as the header is there, before the body is awaited."""

    def __init__(self, max_frame=V1_MAX_FRAME):
        self.max_frame = max_frame
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data

    def pending(self):
        return len(self.buf)

    def next(self):
        if len(self.buf) < HEADER_LEN:
            return None
        ftype, flags, length = struct.unpack(">BBI", self.buf[:HEADER_LEN])
        if length > self.max_frame or length > V1_MAX_FRAME:
            raise WireError(E_FRAME_TOO_LARGE, detail="length %d over %d" % (
                length, min(self.max_frame, V1_MAX_FRAME)), frame_type=ftype)
        if len(self.buf) < HEADER_LEN + length:
            return None
        raw = bytes(self.buf[:HEADER_LEN + length])
        del self.buf[:HEADER_LEN + length]
        body = raw[HEADER_LEN:]
        if ftype not in TYPE_NAMES:
            err = WireError(E_UNKNOWN_FRAME_TYPE, detail="type 0x%02x" % ftype, frame_type=ftype)
            return Frame(ftype, flags, length, {}, [], raw, error=err)
        try:
            fields, unknown = decode_body(ftype, body)
        except WireError as e:
            e.frame_type = ftype
            raise
        return Frame(ftype, flags, length, fields, unknown, raw)


def decode(data, max_frame=V1_MAX_FRAME):
    """The one frame that data holds exactly; raises WireError, or ValueError if data is not
    exactly one frame."""
    d = Decoder(max_frame)
    d.feed(data)
    f = d.next()
    if f is None:
        raise ValueError("incomplete frame (%d bytes)" % len(data))
    if d.pending():
        raise ValueError("%d bytes after the frame" % d.pending())
    return f


def decode_all(data, max_frame=V1_MAX_FRAME):
    """All frames of a complete byte string (raises on a truncated tail)."""
    d = Decoder(max_frame)
    d.feed(data)
    out = []
    while True:
        f = d.next()
        if f is None:
            break
        out.append(f)
    if d.pending():
        raise ValueError("%d bytes of an incomplete frame at the end" % d.pending())
    return out


def verdict(data, max_frame=V1_MAX_FRAME):
    """What a v1 receiver says about the first frame in data: None (valid), or the WireError
    (fatal, or UNKNOWN_FRAME_TYPE), or "NEED_MORE"."""
    d = Decoder(max_frame)
    d.feed(data)
    try:
        f = d.next()
    except WireError as e:
        return e
    if f is None:
        return "NEED_MORE"
    return f.error


# --- identity (section 2) ---

def _der_tlv(der, pos):
    """(tag, header length, content length) of the DER TLV at pos."""
    tag = der[pos]
    n = der[pos + 1]
    if n < 0x80:
        return tag, 2, n
    k = n & 0x7F
    return tag, 2 + k, int.from_bytes(der[pos + 2:pos + 2 + k], "big")


def spki_der(cert_der):
    """The DER SubjectPublicKeyInfo of a DER X.509 certificate (RFC 5280 4.1)."""
    tag, hl, _ = _der_tlv(cert_der, 0)          # Certificate ::= SEQUENCE
    assert tag == 0x30
    pos = hl
    tag, hl, _ = _der_tlv(cert_der, pos)        # tbsCertificate ::= SEQUENCE
    assert tag == 0x30
    pos += hl
    # version [0] EXPLICIT (optional), serialNumber, signature, issuer, validity, subject
    tag, hl, n = _der_tlv(cert_der, pos)
    if tag == 0xA0:
        pos += hl + n
    for _ in range(5):
        tag, hl, n = _der_tlv(cert_der, pos)
        pos += hl + n
    tag, hl, n = _der_tlv(cert_der, pos)        # subjectPublicKeyInfo ::= SEQUENCE
    assert tag == 0x30, "no SubjectPublicKeyInfo"
    return cert_der[pos:pos + hl + n]


def pem_to_der(pem_text):
    m = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", pem_text, re.S)
    if not m:
        raise ValueError("no PEM certificate")
    import base64
    return base64.b64decode("".join(m.group(1).split()))


def token_of_cert_der(cert_der):
    """The device token: SHA-256 over the DER SubjectPublicKeyInfo (32 bytes)."""
    return hashlib.sha256(spki_der(cert_der)).digest()


def token_of_cert_file(path):
    with open(path) as f:
        return token_of_cert_der(pem_to_der(f.read()))


# --- reading frames from a socket ---

class Closed(Exception):
    """The peer ended the connection. how: "close_notify" (clean TLS close), "eof" (TCP FIN
    without close_notify), "reset", or "tls-alert: ..." (an SSL error / alert)."""

    def __init__(self, how, frames_before=None):
        self.how = how
        super().__init__(how)


class FrameTimeout(Exception):
    pass


class ServerProtocolError(Exception):
    """The peer sent bytes that are not a valid v1 frame."""


def classify_close(exc):
    """How a socket/SSL exception (or None for a clean recv of b'') ended the stream."""
    if exc is None:
        return "close_notify"
    if isinstance(exc, ssl.SSLEOFError):
        return "eof"
    if isinstance(exc, ssl.SSLZeroReturnError):
        return "close_notify"
    if isinstance(exc, ssl.SSLError):
        return "tls-alert: " + (exc.reason or str(exc))
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError)):
        return "reset"
    if isinstance(exc, BrokenPipeError):
        return "reset"
    return "error: %r" % (exc,)


class FrameReader:
    """Reads frames from a socket (plain or TLS). read(timeout) returns the next Frame, or
    raises FrameTimeout, Closed, or ServerProtocolError. A plain socket's EOF is "eof"."""

    def __init__(self, sock, max_frame=V1_MAX_FRAME):
        self.sock = sock
        self.dec = Decoder(max_frame)
        self.closed = None  # the Closed exception once the stream ended

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FrameTimeout()
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 16)
        except (socket.timeout, TimeoutError):
            raise FrameTimeout()
        except ssl.SSLWantReadError:
            return
        except (ssl.SSLError, OSError) as e:
            self.closed = Closed(classify_close(e))
            raise self.closed
        if not data:
            how = "close_notify" if isinstance(self.sock, ssl.SSLSocket) else "eof"
            self.closed = Closed(how)
            raise self.closed
        self.dec.feed(data)

    def read(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                f = self.dec.next()
            except WireError as e:
                raise ServerProtocolError("peer sent an invalid frame: %s (bytes: %s)" % (
                    e, bytes(self.dec.buf[:64]).hex()))
            if f is not None:
                return f
            if self.closed is not None:
                if self.dec.pending():
                    raise ServerProtocolError("stream ended inside a frame (%d bytes: %s)" % (
                        self.dec.pending(), bytes(self.dec.buf[:64]).hex()))
                raise self.closed
            self._fill(deadline)


# --- self-check ---

def _to_json_form(ftype, fields):
    """Fields in the form of proto/vectors/frames.json (bytes as hex)."""
    out = {}
    for k, v in fields.items():
        if isinstance(v, bytes):
            out[k] = v.hex()
        elif k == "results":
            out[k] = [[i, s] for i, s in v]
        elif isinstance(v, list):
            out[k] = [x.hex() for x in v]
        else:
            out[k] = v
    return out


def _from_json_form(fields):
    out = {}
    for k, v in fields.items():
        kind = FIELDS[FIELD_IDS[k]][1]
        if kind in ("bytes", "agent"):
            out[k] = bytes.fromhex(v)
        elif kind == "array":
            out[k] = [bytes.fromhex(x) for x in v]
        elif kind == "results":
            out[k] = [tuple(x) for x in v]
        else:
            out[k] = v
    return out


def parse_example_blocks(md_text):
    """The frames of section 11 of PROTOCOL.md as bytes, one list per code block, in order.
    Understands the notation used there: hex tokens, '|' separators, annotations after the
    hex (ignored), "A → S:" prefixes, quoted strings ("..." as UTF-8), and 'b2b2…b2' for a
    value of one repeated byte filling the field's declared length."""
    m = re.search(r"^## 11\..*?(?=^## 12\.)", md_text, re.S | re.M)
    if not m:
        raise ValueError("PROTOCOL.md has no section 11")
    blocks = re.findall(r"```\n(.*?)```", m.group(0), re.S)
    out = []
    for block in blocks:
        items = []  # bytes, or ("fill", byte)
        for line in block.splitlines():
            line = re.sub(r"^\s*[A-Z]\s*→\s*[A-Z]:\s*", "", line)
            rest = line.strip()
            while rest:
                rest = rest.lstrip(" |")
                if not rest:
                    break
                if rest.startswith('"'):
                    end = rest.index('"', 1)
                    items.append(rest[1:end].encode())
                    rest = rest[end + 1:]
                    continue
                tok = re.match(r"\S+", rest).group(0)
                mm = re.fullmatch(r"((?:[0-9a-f]{2})+)…([0-9a-f]{2})", tok)
                if mm:
                    unit = mm.group(2)
                    assert set(re.findall("..", mm.group(1))) == {unit}, tok
                    items.append(("fill", int(unit, 16)))
                elif re.fullmatch(r"(?:[0-9a-f]{2})+", tok):
                    items.append(bytes.fromhex(tok))
                else:
                    break  # an annotation: the rest of the line is prose
                rest = rest[len(tok):]
        # Assemble frame by frame; a "fill" item stands for a whole field value of one
        # repeated byte, whose length is the field length just read.
        flat = []  # ints (bytes) and ("fill", byte) items
        for it in items:
            if isinstance(it, tuple):
                flat.append(it)
            else:
                flat.extend(it)
        frames = []
        i = 0
        while i < len(flat):
            hdr = bytes(flat[i:i + HEADER_LEN])
            i += HEADER_LEN
            _, _, length = struct.unpack(">BBI", hdr)
            body = bytearray()
            while len(body) < length:
                body.append(flat[i])  # field id
                n, size = _read_varint(flat_bytes_prefix(flat, i + 1), 0)
                body += bytes(flat[i + 1:i + 1 + size])
                i += 1 + size
                if i < len(flat) and isinstance(flat[i], tuple):
                    body += bytes([flat[i][1]]) * n
                    i += 1
                else:
                    body += bytes(flat[i:i + n])
                    i += n
            frames.append(hdr + bytes(body))
        if frames:
            out.append(frames)
    return out


def flat_bytes_prefix(flat, i):
    """Up to 4 plain bytes of flat from i (for reading a varint)."""
    out = bytearray()
    for x in flat[i:i + 4]:
        if isinstance(x, tuple):
            break
        out.append(x)
    return bytes(out)


# What section 11 says each example frame holds (from its prose, not its hex).
A1 = bytes([0xA1]) * 32
B2 = bytes([0xB2]) * 32
MID = bytes.fromhex("00112233445566778899aabbccddeeff")
BAD_PRIO_REASON = (b"SEND frame (type 0x03) has a field with a bad length or value: "
                   b"field priority (0x05)")
SECTION_11 = [
    [(HELLO, 0, {"version": 1, "keepalive": 60, "agent": b"cli/1"})],
    [(WELCOME, 0, {"token": A1, "version": 1, "keepalive": 60, "window": 64,
                   "max_frame": 65536, "max_blob": 16384, "max_recipients": 100,
                   "keepalive_min": 10, "keepalive_max": 3600, "send_window": 256})],
    [(SEND, 0, {"msg_id": MID, "recipients": [B2], "ttl": 3600, "priority": 10,
                "blob": b"sealed-blob!"})],
    [(DELIVER, 0, {"msg_id": MID, "priority": 10, "blob": b"sealed-blob!"})],
    [(ACK, 0, {"msg_ids": [MID]})],
    [(SEND_RESULT, 0, {"msg_id": MID, "results": [(0, S_DELIVERED)]})],
    [(PING, 0, {"data": bytes(range(1, 9))}), (PONG, 0, {"data": bytes(range(1, 9))})],
    [(GOAWAY, 0, {"code": E_SHUTDOWN, "retry_after": 5000})],
    # The SEND with priority 7 is BAD_FIELD priority; then the server's ERROR.
    [(SEND, 0, WireError(E_BAD_FIELD, FIELD_IDS["priority"])),
     (ERROR, CLOSING, {"msg_id": MID, "code": E_BAD_FIELD, "reason": BAD_PRIO_REASON,
                       "frame_type": SEND})],
]


class _Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, cond, name, diag=None):
        self.n += 1
        if cond:
            print("ok %d - %s" % (self.n, name))
        else:
            self.failed += 1
            print("not ok %d - %s" % (self.n, name))
            if diag:
                for line in str(diag).splitlines():
                    print("#   " + line)
        sys.stdout.flush()
        return cond


def _check_section_11(tap, md_path):
    with open(md_path, encoding="utf-8") as f:
        blocks = parse_example_blocks(f.read())
    tap.check(len(blocks) == len(SECTION_11), "section 11 has %d example blocks" % len(SECTION_11),
              "found %d" % len(blocks))
    examples = {}
    for bi, (frames, want) in enumerate(zip(blocks, SECTION_11)):
        ok = len(frames) == len(want)
        tap.check(ok, "section 11 block %d holds %d frame(s)" % (bi + 1, len(want)),
                  "found %d: %s" % (len(frames), [x.hex() for x in frames]))
        if not ok:
            continue
        for raw, (wtype, wflags, wfields) in zip(frames, want):
            label = "section 11 block %d: %s %s" % (bi + 1, type_name(wtype), raw[:24].hex())
            if isinstance(wfields, WireError):
                v = verdict(raw)
                tap.check(isinstance(v, WireError) and v.code == wfields.code
                          and v.field_id == wfields.field_id,
                          label + " is rejected with %s" % wfields, "got %s" % v)
                continue
            try:
                f = decode(raw)
            except (WireError, ValueError) as e:
                tap.check(False, label + " decodes", repr(e))
                continue
            good = (f.type == wtype and f.flags == wflags and f.fields == wfields
                    and not f.unknown)
            tap.check(good, label + " decodes to the fields the prose lists",
                      "got %r\nwant %s flags=%d %r" % (f, type_name(wtype), wflags, wfields))
            tap.check(encode(wtype, wfields, wflags) == raw,
                      label + " is the canonical encoding of those fields",
                      "encoded %s" % encode(wtype, wfields, wflags).hex())
            examples.setdefault(wtype, raw)
    return examples


def _check_vectors(tap, path, examples):
    with open(path) as f:
        vec = json.load(f)
    tap.check(vec.get("version") == 1, "frames.json is for protocol version 1",
              "version %r" % vec.get("version"))
    bad = []
    for v in vec["valid"]:
        raw = bytes.fromhex(v["hex"])
        want = v["frame"]
        try:
            f = decode(raw)
        except (WireError, ValueError) as e:
            bad.append("%s: decode failed: %s" % (v["name"], e))
            continue
        got = {"type": f.name, "flags": f.known_flags, "fields": _to_json_form(f.type, f.fields)}
        if got != want:
            bad.append("%s: decoded %s\n   want %s" % (v["name"], got, want))
            continue
        if v.get("canonical", True):
            enc = encode(TYPES[want["type"]], _from_json_form(want["fields"]), want["flags"])
            if enc != raw:
                bad.append("%s: encodes to %s\n   want %s" % (v["name"], enc.hex(), v["hex"]))
        # Split at every offset: the streaming decoder must give the same frame.
        for cut in range(1, len(raw)):
            d = Decoder()
            d.feed(raw[:cut])
            if d.next() is not None:
                bad.append("%s: a frame after only %d bytes" % (v["name"], cut))
                break
            d.feed(raw[cut:])
            g = d.next()
            if g is None or g.fields != f.fields:
                bad.append("%s: split at %d decodes differently" % (v["name"], cut))
                break
    tap.check(not bad, "%d valid vectors decode to their fields (and encode back, split at every"
              " offset)" % len(vec["valid"]), "\n".join(bad[:20]))
    bad = []
    for v in vec["invalid"]:
        r = verdict(bytes.fromhex(v["hex"]), v.get("max_frame", 65536))
        want = ERROR_CODES[v["error"]]
        if not isinstance(r, WireError) or r.code != want or r.field_id != v.get("field_id"):
            bad.append("%s: got %s, want %s field %s" % (v["name"], r, v["error"], v.get("field")))
    tap.check(not bad, "%d invalid vectors give their error code and field" % len(vec["invalid"]),
              "\n".join(bad[:20]))
    byname = {v["name"]: v for v in vec["valid"]}
    for t, raw in sorted(examples.items()):
        name = "example-" + type_name(t).lower().replace("_", "-")
        tap.check(name in byname and bytes.fromhex(byname[name]["hex"]) == raw,
                  "vector %s equals the section 11 example" % name,
                  "vector: %s\ndoc:    %s" % (byname.get(name, {}).get("hex"), raw.hex()))


def _check_codec(tap):
    """Round trips and edge cases that need no file."""
    tap.check(varint(63) == b"\x3f" and varint(64) == b"\x40\x40" and
              varint(16383) == b"\x7f\xff" and varint(16384) == b"\x80\x00\x40\x00",
              "varint size boundaries 63/64 and 16383/16384")
    ok = True
    for n in (0, 1, 63, 64, 16383, 16384, 1 << 20):
        body = field(0x7F, bytes(n))
        ok &= split_fields(body) == [(0x7F, bytes(n))]
    tap.check(ok, "fields round-trip at every varint size")
    for n, size in ((5, 2), (63, 2), (100, 4)):
        v = verdict(frame(PING, field(0x7F, bytes(n), lensize=size)))
        tap.check(isinstance(v, WireError) and v.code == E_MALFORMED_FRAME,
                  "length %d in %d bytes is MALFORMED_FRAME" % (n, size), str(v))
    samples = [
        (HELLO, SEND_ONLY, {"version": 1, "keepalive": 30, "window": 8, "capabilities": 0,
                            "resume_id": MID, "agent": "spwire/1"}),
        (SEND, 0, {"msg_id": MID, "recipients": [A1, B2], "ttl": 0, "priority": 1,
                   "collapse_id": b"c", "blob": bytes(20000)}),
        (SEND_RESULT, 0, {"msg_id": MID, "results": [(0, 0), (1, 0x16)], "retry_after": 9}),
        (DELIVER, STORED, {"msg_id": MID, "blob": b"", "priority": 5, "collapse_id": b"x" * 64}),
        (ACK, 0, {"msg_ids": [MID, MID[::-1]]}),
        (PING, 0, {}), (PONG, 0, {"data": b"abcdefgh"}),
        (GOAWAY, 0, {"code": E_REPLACED, "reason": b"r"}),
        (ERROR, CLOSING, {"code": E_UNEXPECTED_FRAME, "frame_type": 0x42}),
    ]
    ok = True
    for t, fl, fields in samples:
        want = {k: (v.encode() if isinstance(v, str) else v) for k, v in fields.items()}
        f = decode(encode(t, fields, fl))
        ok &= f.type == t and f.flags == fl and f.fields == want
    tap.check(ok, "every frame type round-trips through encode/decode")
    v = verdict(header(SEND, 0, 1025), PRE_WELCOME_MAX_FRAME)
    tap.check(isinstance(v, WireError) and v.code == E_FRAME_TOO_LARGE,
              "a header of 1025 bytes is FRAME_TOO_LARGE before WELCOME", str(v))
    v = verdict(frame(0x42, b"\xff\xff"))
    tap.check(isinstance(v, WireError) and v.code == E_UNKNOWN_FRAME_TYPE,
              "type 0x42 is UNKNOWN_FRAME_TYPE, body unparsed", str(v))
    v = verdict(encode(PING) + b"tail")
    tap.check(v is None, "a valid frame followed by more bytes decodes", str(v))


def _check_token(tap):
    """The SPKI extraction against the openssl CLI, if it is installed."""
    import shutil
    import subprocess
    import tempfile
    if not shutil.which("openssl"):
        tap.check(True, "token derivation vs openssl # SKIP no openssl CLI")
        return
    with tempfile.TemporaryDirectory() as d:
        key, crt = os.path.join(d, "k.pem"), os.path.join(d, "c.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt,
                        "-subj", "/CN=spwire", "-days", "1"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pub = subprocess.run(["openssl", "x509", "-in", crt, "-pubkey", "-noout"], check=True,
                             stdout=subprocess.PIPE).stdout
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                             check=True, stdout=subprocess.PIPE).stdout
        want = hashlib.sha256(der).hexdigest()
        got = token_of_cert_file(crt).hex()
        tap.check(got == want, "token (SHA-256 of the DER SPKI) agrees with the openssl CLI",
                  "spwire %s\nopenssl %s" % (got, want))


def self_check(argv):
    import argparse
    here = os.path.dirname(os.path.abspath(__file__))
    top = os.path.dirname(os.path.dirname(here))
    ap = argparse.ArgumentParser(description="spwire self-check (TAP)")
    ap.add_argument("--self-check", action="store_true")
    ap.add_argument("--protocol", default=os.path.join(top, "proto", "PROTOCOL.md"))
    ap.add_argument("--vectors", default=os.path.join(top, "proto", "vectors", "frames.json"))
    args = ap.parse_args(argv)
    tap = _Tap()
    _check_codec(tap)
    _check_token(tap)
    examples = _check_section_11(tap, args.protocol)
    if os.path.exists(args.vectors):
        _check_vectors(tap, args.vectors, examples)
    else:
        tap.check(True, "test vectors # SKIP %s does not exist yet" % args.vectors)
    print("1..%d" % tap.n)
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(self_check(sys.argv[1:]))
