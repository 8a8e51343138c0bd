# Telemetry readings <-> the packed batch plaintext (see READING_FORMAT in proto.py).
import struct

from agent import cbor
from agent.proto import MISSING, READING_FIELDS, READING_FORMAT, READING_SIZE, READINGS_SCHEMA

# (field, its absent value) for every field after dt.
_SLOTS = tuple((READING_FIELDS[i], MISSING[READING_FORMAT[i + 1]])
               for i in range(1, len(READING_FIELDS)))


def _prefix(n):
    """The CBOR of the plaintext [READINGS_SCHEMA, bstr] up to its n packed bytes."""
    out = bytearray(cbor.head(4, 2))
    cbor.encode_into(out, READINGS_SCHEMA)
    out.extend(cbor.head(2, n))
    return out


class Batch:
    """Readings packed into one preallocated buffer until the batch is sealed. The buffer
    has room in front of the readings for the plaintext's CBOR prefix: the plaintext is a
    view of the buffer, never a copy."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.start = len(_prefix(capacity * READING_SIZE))  # where the readings start
        self.buf = bytearray(self.start + capacity * READING_SIZE)
        self.values = [0] * len(READING_FIELDS)
        self.count = 0
        self.t0 = 0

    def full(self):
        return self.count >= self.capacity

    def add(self, t, reading):
        """Append a reading dict taken at unix time t (seconds); dt is kept in 0.1 s."""
        if self.count == 0:
            self.t0 = int(t)
        values = self.values
        values[0] = int((t - self.t0) * 10 + 0.5)
        i = 1
        for name, absent in _SLOTS:
            v = reading.get(name)
            values[i] = absent if v is None else v
            i += 1
        struct.pack_into(READING_FORMAT, self.buf, self.start + self.count * READING_SIZE,
                         *values)
        self.count += 1

    def plaintext(self):
        """The CBOR [READINGS_SCHEMA, packed readings]: a memoryview, valid until the next add."""
        n = self.count * READING_SIZE
        prefix = _prefix(n)
        begin = self.start - len(prefix)
        self.buf[begin:self.start] = prefix
        return memoryview(self.buf)[begin:self.start + n]

    def clear(self):
        self.count = 0


def unpack(plaintext, t0):
    """Decode a batch plaintext into reading dicts with absolute times (owner side)."""
    schema, packed = cbor.loads(plaintext)
    if schema != READINGS_SCHEMA or len(packed) % READING_SIZE:
        raise ValueError("readings: unknown schema or bad length")
    out = []
    for off in range(0, len(packed), READING_SIZE):
        values = struct.unpack_from(READING_FORMAT, packed, off)
        r = {"time": t0 + values[0] / 10}
        for i in range(1, len(values)):
            name, absent = _SLOTS[i - 1]
            r[name] = None if values[i] == absent else values[i]
        out.append(r)
    return out
