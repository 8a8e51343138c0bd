"""Canonical CBOR: RFC 8949 section 4.2.1 core deterministic encoding, checked byte by byte.

Every CBOR structure a device sends must be in deterministic form, so that what a stored
(and anchored) message means does not depend on the parser that reads it: a map holding a
key twice, or an integer with two encodings, can read differently elsewhere. `check` walks
the item's heads without building anything and raises

- `NotCanonical` (well-formed CBOR, not in EdgeKeep's deterministic form):
  an integer, length or tag head longer than needed (`shortest`), an indefinite length
  (`indefinite`), map keys not in the bytewise lexicographic order of their encodings
  (`key_order`), the same key twice (`duplicate_key`), bytes after the item
  (`trailing`); and, EdgeKeep's profile, items it never uses and that parsers read
  differently: floats (`float`), simple values other than false, true and null
  (`simple`), tags other than those the caller allows (`tag`), map keys other than
  integers and strings (`key_type`: in Python true and 1 are one key);
- `Malformed` (not well-formed CBOR): truncated, reserved head values, a stray break
  code, nested deeper than `MAX_DEPTH`.

`loads` is check, then cbor2's decoder (which is fast but keeps the last of duplicate keys
and does not check order or minimal heads). Pure: no I/O.
"""
from collections.abc import Set
from typing import Any

import cbor2

MAX_DEPTH = 16  # EdgeKeep's structures nest 4 deep at most (Sign1 > map > map > value)

SHORTEST = "shortest"
INDEFINITE = "indefinite"
KEY_ORDER = "key_order"
DUPLICATE_KEY = "duplicate_key"
TRAILING = "trailing"
FLOAT = "float"
SIMPLE = "simple"
TAG = "tag"
KEY_TYPE = "key_type"
RULES = (SHORTEST, INDEFINITE, KEY_ORDER, DUPLICATE_KEY, TRAILING, FLOAT, SIMPLE, TAG, KEY_TYPE)


class Malformed(ValueError):
    """Not well-formed CBOR."""


class NotCanonical(ValueError):
    """Well-formed CBOR that is not in deterministic form; `rule` says which rule, `pos` where."""

    def __init__(self, rule: str, pos: int, detail: str) -> None:
        super().__init__("%s at byte %d" % (detail, pos))
        self.rule = rule
        self.pos = pos


NO_TAGS: frozenset[int] = frozenset()
# Size of an item told by its first byte alone (0: look further): integers -24..23,
# strings of 0..23 bytes, false, true, null. Map keys may not be simple values.
_KEY_SIZE = tuple((1 if ib < 0x40 else 1 + (ib & 0x1F)) if ib < 0x80 and ib & 0x1F < 24 else 0
                  for ib in range(256))
_SIZE = tuple(1 if 0xF4 <= ib <= 0xF6 else _KEY_SIZE[ib] for ib in range(256))
_MIN = (0, 24, 0x100, 0x10000, 0x100000000)  # smallest argument for info 24..27


def check(data: bytes | bytearray | memoryview, tags: Set[int] = NO_TAGS) -> None:
    """Raise NotCanonical or Malformed unless data is exactly one CBOR item in deterministic
    form. tags: the tag numbers allowed anywhere in it (EdgeKeep: 18 on a COSE_Sign1)."""
    if not isinstance(data, bytes):
        data = bytes(data)
    end = _item(data, 0, len(data), 0, tags)
    if end != len(data):
        raise NotCanonical(TRAILING, end, "%d bytes after the item" % (len(data) - end))


def loads(data: bytes | bytearray | memoryview, tags: Set[int] = NO_TAGS) -> Any:
    """The item, decoded, once check() passes; Malformed if cbor2 cannot decode it (such as
    text that is not UTF-8)."""
    check(data, tags)
    try:
        return cbor2.loads(data)
    except Exception as e:
        raise Malformed("cbor2 could not decode it (%s: %s)" % (type(e).__name__, e))


def _item(buf: bytes, pos: int, n: int, depth: int, tags: Set[int]) -> int:
    """Check the item at pos; return where it ends. buf is bytes, n its length."""
    if pos >= n:
        raise Malformed("truncated at byte %d" % pos)
    start = pos
    ib = buf[pos]
    major = ib >> 5
    info = ib & 0x1F
    pos += 1
    if major == 7:
        if 20 <= info <= 22:  # false, true, null
            return pos
        if 25 <= info <= 27:
            raise NotCanonical(FLOAT, start, "a float (EdgeKeep uses none)")
        if info < 25:  # 0..19, 23 undefined, 24 one-byte simple value
            raise NotCanonical(SIMPLE, start, "simple value (EdgeKeep uses false, true, null)")
        raise Malformed("%s at byte %d" % ("break outside an indefinite-length item"
                                           if info == 31 else "reserved head 0x%02x" % ib, start))
    if info < 24:
        arg = info
    elif info < 28:
        size = 1 << (info - 24)
        if pos + size > n:
            raise Malformed("truncated at byte %d" % start)
        if size == 1:
            arg = buf[pos]
        else:
            arg = int.from_bytes(buf[pos:pos + size], "big")
        pos += size
        if arg < _MIN[info - 23]:
            raise NotCanonical(SHORTEST, start, "head of %d bytes for %d" % (size + 1, arg))
    elif info == 31 and 2 <= major <= 5:
        raise NotCanonical(INDEFINITE, start, "indefinite length")
    else:
        raise Malformed("reserved head 0x%02x at byte %d" % (ib, start))
    if major <= 1:
        return pos
    if major <= 3:  # byte and text strings: the content is not CBOR here
        pos += arg
        if pos > n:
            raise Malformed("truncated at byte %d" % start)
        return pos
    if depth >= MAX_DEPTH:
        raise Malformed("nested deeper than %d at byte %d" % (MAX_DEPTH, start))
    depth += 1
    # The loops below step over the commonest children inline, without a call: integers
    # -24..23, strings shorter than 24 bytes, false, true and null (_SIZE), one-byte keys.
    if major == 4:
        if arg > n - pos:  # each item takes a byte at least
            raise Malformed("truncated at byte %d" % start)
        for _ in range(arg):
            size = _SIZE[buf[pos]] if pos < n else 0
            if size:
                pos += size
            else:
                pos = _item(buf, pos, n, depth, tags)
        if pos > n:
            raise Malformed("truncated at byte %d" % start)
        return pos
    if major == 5:
        if 2 * arg > n - pos:
            raise Malformed("truncated at byte %d" % start)
        prev = b""  # sorts before any key's encoding
        for _ in range(arg):
            k = pos
            size = _KEY_SIZE[buf[k]] if k < n else 0
            if size:
                pos += size
            elif k < n and buf[k] < 0x80:
                pos = _item(buf, pos, n, depth, tags)
            elif k < n:
                raise NotCanonical(KEY_TYPE, k, "map key of major type %d (EdgeKeep keys are "
                                   "integers and strings)" % (buf[k] >> 5))
            else:
                raise Malformed("truncated at byte %d" % start)
            key = buf[k:pos]
            if key <= prev:
                if pos > n:
                    raise Malformed("truncated at byte %d" % start)
                if key == prev:
                    raise NotCanonical(DUPLICATE_KEY, k, "duplicate map key %s" % key.hex())
                raise NotCanonical(KEY_ORDER, k, "map key %s after %s (keys go in bytewise "
                                   "order of their encodings)" % (key.hex(), prev.hex()))
            prev = key
            size = _SIZE[buf[pos]] if pos < n else 0
            if size:
                pos += size
            else:
                pos = _item(buf, pos, n, depth, tags)
        if pos > n:
            raise Malformed("truncated at byte %d" % start)
        return pos
    # major 6: a tag
    if arg not in tags:
        raise NotCanonical(TAG, start, "tag %d (allowed here: %s)"
                           % (arg, ", ".join(map(str, sorted(tags))) or "none"))
    return _item(buf, pos, n, depth, tags)
