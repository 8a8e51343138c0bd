# The device's store-and-forward queue on flash: append-only segments of checksummed
# records, bounded in bytes, crash-safe at every write.
#
# A record is: 0xEB | seq u32 | length u32 | sha256(seq, length, payload)[:4] | payload.
# A torn or corrupt record ends its segment; every boot starts a fresh segment, so a
# torn tail is never appended to. A segment is deleted once the gateway has acked all
# of it, or dropped (oldest first, counted) when the spool is over its byte budget.
import hashlib
import os
import struct

_MAGIC = 0xEB
_HEAD = ">BII4s"
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
        self.segment_bytes = segment_bytes
        self.acked = 0
        self.drops = 0
        self.last_seq = 0
        self.index = []      # [seq, segment number, offset, length], oldest first
        self.segments = {}   # segment number -> size in bytes
        self.current = None
        if not _exists(path):
            os.mkdir(path)
        self._load_state()
        self._scan()

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
        if self.current is None or self.segments[self.current] >= self.segment_bytes:
            self.current = (max(self.segments) + 1) if self.segments else 1
            self.segments[self.current] = 0
        fields = struct.pack(">BII", _MAGIC, seq, len(payload))
        with open(self._seg_path(self.current), "ab") as f:
            f.write(fields)
            f.write(_check(fields, payload))
            f.write(payload)
        off = self.segments[self.current]
        self.index.append([seq, self.current, off, len(payload)])
        self.segments[self.current] = off + _HEAD_LEN + len(payload)
        self.last_seq = seq
        self._enforce_budget()

    def ack(self, seq):
        """The gateway has durably stored everything up to seq: forget it."""
        if seq <= self.acked:
            return
        self.acked = min(seq, self.last_seq)
        self._save_state()
        for seg in sorted(self.segments):
            if any(e[1] == seg and e[0] > self.acked for e in self.index):
                break
            self._remove_segment(seg)

    # -- internals -------------------------------------------------------------

    def _seg_path(self, seg):
        return "%s/%08d.seg" % (self.path, seg)

    def _enforce_budget(self):
        changed = False
        while self.bytes_used() > self.max_bytes and len(self.segments) > 1:
            oldest = min(self.segments)
            for e in self.index:
                if e[1] == oldest and e[0] > self.acked:
                    self.drops += 1
            self._remove_segment(oldest)
            changed = True
        if changed:
            self._save_state()

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
            f.write(fields)
            f.write(_check(fields))
        try:
            os.rename(tmp, self.path + "/state")
        except OSError:  # FAT cannot rename over an existing file
            os.remove(self.path + "/state")
            os.rename(tmp, self.path + "/state")

    def _load_state(self):
        for name in ("/state", "/state.tmp"):
            try:
                with open(self.path + name, "rb") as f:
                    raw = f.read()
            except OSError:
                continue
            if len(raw) == 16 and _check(raw[:12]) == raw[12:]:
                self.acked, self.drops, self.last_seq, _ = struct.unpack(_STATE, raw)
                return

    def _scan(self):
        names = sorted(n for n in os.listdir(self.path) if n.endswith(".seg"))
        for name in names:
            seg = int(name[:-4])
            size = self._scan_segment(seg)
            if size == 0:
                os.remove(self._seg_path(seg))
            else:
                self.segments[seg] = size
        self.current = None  # never append after a possibly torn tail
        if self.index:
            self.last_seq = max(self.last_seq, self.index[-1][0])
        self.acked = min(self.acked, self.last_seq)

    def _scan_segment(self, seg):
        """Index the intact records of a segment; returns the bytes they occupy."""
        off = 0
        with open(self._seg_path(seg), "rb") as f:
            while True:
                head = f.read(_HEAD_LEN)
                if len(head) < _HEAD_LEN:
                    break
                magic, seq, n, check = struct.unpack(_HEAD, head)
                if magic != _MAGIC or seq <= self.last_seq_in_index():
                    break
                payload = f.read(n)
                if len(payload) < n or _check(head[:9], payload) != check:
                    break
                self.index.append([seq, seg, off, n])
                off += _HEAD_LEN + n
        return off

    def last_seq_in_index(self):
        return self.index[-1][0] if self.index else 0
