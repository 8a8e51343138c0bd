# The device's store-and-forward queue on flash: append-only segments of checksummed
# records, bounded in bytes, crash-safe at every write.
#
# A record is: 0xEB | seq u32 | length u32 | sha256(seq, length, payload)[:4] | payload.
# A torn or corrupt record ends its segment; every boot starts a fresh segment, so a
# torn tail is never appended to. A segment is deleted once the gateway has acked all
# of it, or dropped (oldest first, counted) when the spool is over its byte budget.
#
# The state file holds `acked`: every seq up to it is released, acked by the gateway or
# dropped. It is written before any segment is deleted, so a power cut in between only
# leaves released segments behind, which the next boot deletes without counting them.
import hashlib
import os
import struct

_MAGIC = 0xEB
_HEAD_LEN = 13
_STATE = ">III4s"   # acked seq, drops, highest seq ever used, check


def _check(fields, payload=b""):
    h = hashlib.sha256(fields)
    h.update(payload)
    return h.digest()[:4]


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class Spool:
    def __init__(self, path, max_bytes=65536, segment_bytes=4096):
        self.path = path
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max_bytes)  # else one segment breaks the bound
        self.acked = 0
        self.drops = 0
        self.last_seq = 0
        self.index = []      # [seq, segment number, offset, length], oldest first
        self.segments = {}   # segment number -> size in bytes
        self.current = None  # the segment appended to; never one from before this boot
        if not _exists(path):
            os.mkdir(path)
        self._load_state()
        self._scan()
        self._release()

    # -- queries ---------------------------------------------------------------

    def next_seq(self):
        return self.last_seq + 1

    def pending(self):
        """Unacked sequence numbers, oldest first."""
        return [e[0] for e in self.index if e[0] > self.acked]

    def base(self):
        """The lowest sequence the device still holds: all below it are acked or dropped."""
        for e in self.index:
            if e[0] > self.acked:
                return e[0]
        return self.last_seq + 1

    def bytes_used(self):
        total = 0
        for size in self.segments.values():
            total += size
        return total

    def read(self, seq):
        for s, seg, off, n in self.index:
            if s == seq:
                with open(self._seg_path(seg), "rb") as f:
                    f.seek(off + _HEAD_LEN)
                    return f.read(n)
        raise KeyError(seq)

    # -- changes ---------------------------------------------------------------

    def append(self, seq, payload):
        if seq <= self.last_seq:
            raise ValueError("spool: sequence must increase")
        size = _HEAD_LEN + len(payload)
        if size > self.max_bytes:
            raise ValueError("spool: a record of %d bytes exceeds the budget" % size)
        if self.current is None or self.segments[self.current] + size > self.segment_bytes:
            self.current = (max(self.segments) + 1) if self.segments else 1
            self.segments[self.current] = 0
        off = self.segments[self.current]
        fields = struct.pack(">BII", _MAGIC, seq, len(payload))
        try:
            with open(self._seg_path(self.current), "ab") as f:
                f.write(fields)
                f.write(_check(fields, payload))
                f.write(payload)
        except OSError:
            self.current = None  # part of the record may be there: never append after it
            raise
        self.index.append([seq, self.current, off, len(payload)])
        self.segments[self.current] = off + size
        self.last_seq = seq
        self._enforce_budget()

    def ack(self, seq):
        """The gateway has durably stored everything up to seq: forget it. The caller has
        checked seq against what was sent (Agent.on_ack); a seq past it still acks no more."""
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise ValueError("spool: ack of a non-integer %r" % (seq,))
        if seq <= self.acked:
            return
        self.acked = min(seq, self.last_seq)
        self._save_state()
        self._release()

    # -- internals -------------------------------------------------------------

    def _seg_path(self, seg):
        return "%s/%08d.seg" % (self.path, seg)

    def _release(self):
        """Delete the oldest segments while they hold nothing above acked."""
        for seg in sorted(self.segments):
            if any(e[1] == seg and e[0] > self.acked for e in self.index):
                break
            self._remove_segment(seg)

    def _enforce_budget(self):
        while self.bytes_used() > self.max_bytes and len(self.segments) > 1:
            oldest = min(self.segments)
            for e in self.index:
                if e[1] == oldest and e[0] > self.acked:
                    self.drops += 1
                    self.acked = e[0]
            self._save_state()
            self._remove_segment(oldest)

    def _remove_segment(self, seg):
        os.remove(self._seg_path(seg))
        del self.segments[seg]
        self.index = [e for e in self.index if e[1] != seg]
        if seg == self.current:
            self.current = None

    def _save_state(self):
        fields = struct.pack(">III", self.acked, self.drops, self.last_seq)
        tmp = self.path + "/state.tmp"
        with open(tmp, "wb") as f:
            f.write(fields + _check(fields))
        try:
            os.rename(tmp, self.path + "/state")
        except OSError:  # FAT cannot rename over an existing file
            os.remove(self.path + "/state")
            os.rename(tmp, self.path + "/state")

    def _load_state(self):
        # A whole state.tmp is newer than state: a power cut stopped its rename.
        for name in ("/state.tmp", "/state"):
            try:
                with open(self.path + name, "rb") as f:
                    raw = f.read(17)
            except OSError:
                continue
            if len(raw) == 16 and _check(raw[:12]) == raw[12:]:
                self.acked, self.drops, self.last_seq, _ = struct.unpack(_STATE, raw)
                return

    def _scan(self):
        names = sorted(n for n in os.listdir(self.path) if n.endswith(".seg"))
        for name in names:
            seg = int(name[:-4])
            path = self._seg_path(seg)
            size = os.stat(path)[6]
            if self._scan_segment(seg, size):
                self.segments[seg] = size  # a torn tail takes flash too
            else:
                os.remove(path)
        if self.index:
            self.last_seq = max(self.last_seq, self.index[-1][0])
        self.acked = min(self.acked, self.last_seq)

    def _scan_segment(self, seg, size):
        """Index the intact records of a segment; returns how many there are."""
        head = bytearray(_HEAD_LEN)
        buf = bytearray(64)  # payloads are checked piecewise: a record may be a camera frame
        off = 0
        found = 0
        with open(self._seg_path(seg), "rb") as f:
            while off + _HEAD_LEN <= size:
                f.readinto(head)
                magic, seq, n = struct.unpack_from(">BII", head)
                last = self.index[-1][0] if self.index else 0
                if magic != _MAGIC or seq <= last or n > size - off - _HEAD_LEN:
                    break
                if not _payload_matches(f, head, n, buf):
                    break
                self.index.append([seq, seg, off, n])
                off += _HEAD_LEN + n
                found += 1
        return found


def _payload_matches(f, head, n, buf):
    """Whether the n bytes at f's position are the payload that head's check is for."""
    h = hashlib.sha256(memoryview(head)[:9])
    while n:
        k = f.readinto(memoryview(buf)[:min(n, len(buf))])
        h.update(memoryview(buf)[:k])
        n -= k
    return h.digest()[:4] == head[9:]
