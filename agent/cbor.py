# Minimal deterministic CBOR (RFC 8949 section 4.2.1) for the device: the types EdgeKeep
# uses, shortest-form heads, map keys sorted by their encoded bytes (bytewise, not RFC 7049's
# length-first order), definite lengths. Sorting matters: MicroPython dicts do not keep
# insertion order. The gateway rejects any other encoding as noncanonical
# (gateway/wire/canonical.py); tests/test_canonical.py checks these bytes on MicroPython.
#
# Types: int, bytes/bytearray/memoryview, str, list/tuple, dict, bool, None, Tag.

_MAX_DEPTH = 16


class Tag:
    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and other.tag == self.tag and other.value == self.value


def head(major, n):
    """The initial bytes of an item: major type and argument, shortest form."""
    m = major << 5
    if n < 24:
        return bytes((m | n,))
    if n < 0x100:
        return bytes((m | 24, n))
    if n < 0x10000:
        return bytes((m | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((m | 26,)) + n.to_bytes(4, "big")
    return bytes((m | 27,)) + n.to_bytes(8, "big")


def encode_into(out, obj):
    """Append the encoding of obj to the bytearray out."""
    if obj is None:
        out.append(0xF6)
    elif obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif isinstance(obj, int):
        if obj >= 0:
            out.extend(head(0, obj))
        else:
            out.extend(head(1, -1 - obj))
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        out.extend(head(2, len(obj)))
        out.extend(obj)
    elif isinstance(obj, str):
        b = obj.encode()
        out.extend(head(3, len(b)))
        out.extend(b)
    elif isinstance(obj, (list, tuple)):
        out.extend(head(4, len(obj)))
        for item in obj:
            encode_into(out, item)
    elif isinstance(obj, dict):
        out.extend(head(5, len(obj)))
        # Encode each key once: MicroPython's sort calls a key function per comparison.
        keys = [(dumps(k), k) for k in obj]
        keys.sort()
        for encoded, k in keys:
            out.extend(encoded)
            encode_into(out, obj[k])
    elif isinstance(obj, Tag):
        out.extend(head(6, obj.tag))
        encode_into(out, obj.value)
    else:
        raise TypeError("cbor: cannot encode " + str(type(obj)))
    return out


def dumps(obj):
    return bytes(encode_into(bytearray(), obj))


def loads(data):
    """Decode exactly one item. Whatever the bytes, it returns or raises ValueError (or a
    subclass): malformed, truncated, trailing, unsupported, nested over _MAX_DEPTH, a length
    the input does not hold (checked before anything is allocated for it), or a map key that
    is not an int, text or bytes (a downlink is untrusted input to a device that must outlive
    any byte)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError("cbor: input is not bytes")
    buf = memoryview(data)
    obj, end = _decode(buf, 0, 0)
    if end != len(buf):
        raise ValueError("cbor: trailing bytes")
    return obj


def _argument(buf, pos, info):
    if info < 24:
        return info, pos
    if info > 27:
        raise ValueError("cbor: unsupported length encoding")
    size = 1 << (info - 24)
    end = pos + size
    if end > len(buf):
        raise ValueError("cbor: truncated")
    return int.from_bytes(bytes(buf[pos:end]), "big"), end


def _take(buf, pos, n):
    end = pos + n
    if end > len(buf):
        raise ValueError("cbor: truncated")
    return bytes(buf[pos:end]), end


def _decode(buf, pos, depth):
    if depth > _MAX_DEPTH:
        raise ValueError("cbor: nested too deep")
    if pos >= len(buf):
        raise ValueError("cbor: truncated")
    ib = buf[pos]
    major = ib >> 5
    info = ib & 0x1F
    pos += 1
    if major == 7:
        if info == 20:
            return False, pos
        if info == 21:
            return True, pos
        if info == 22:
            return None, pos
        raise ValueError("cbor: unsupported simple value")
    n, pos = _argument(buf, pos, info)
    if major == 0:
        return n, pos
    if major == 1:
        return -1 - n, pos
    if major == 2:
        return _take(buf, pos, n)
    if major == 3:
        raw, pos = _take(buf, pos, n)
        try:
            return raw.decode(), pos
        except UnicodeError:  # a ValueError on CPython; say so on any port
            raise ValueError("cbor: text is not UTF-8")
    if major == 4:
        if n > len(buf) - pos:
            raise ValueError("cbor: truncated")
        items = []
        for _ in range(n):
            item, pos = _decode(buf, pos, depth + 1)
            items.append(item)
        return items, pos
    if major == 5:
        if n > len(buf) - pos:
            raise ValueError("cbor: truncated")
        d = {}
        for _ in range(n):
            k, pos = _decode(buf, pos, depth + 1)
            # EdgeKeep's maps have int or text keys; a tag, list or map key would be
            # unhashable (TypeError), a float is not decoded at all.
            if not isinstance(k, (int, str, bytes)) or isinstance(k, bool):
                raise ValueError("cbor: map key is not an int, text or bytes")
            if k in d:
                raise ValueError("cbor: duplicate map key")
            d[k], pos = _decode(buf, pos, depth + 1)
        return d, pos
    value, pos = _decode(buf, pos, depth + 1)
    return Tag(n, value), pos
