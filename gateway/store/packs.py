"""Pack files: the append-only files in which a storage root keeps its shares.

A file per share costs more to create than to fill (on ext4 under write load, about half a
millisecond per create, a camera chunk being four shares); a pack takes share records one
after another. Appends are held in memory and written with one writev and one fdatasync
per sync, i.e. per ingest batch, which the Provider runs for all roots at once. Which
record belongs to which share is the database's business (the Provider's `shares` table);
a pack only holds bytes.

Each writer (a Provider instance) appends only to the pack it created, and holds an flock on
it while it does. A pack is created under a temporary name, locked, then renamed into place,
so no other process ever sees it unlocked while it is being filled. Compaction in any process
may rewrite and remove only packs it can lock.
"""
import errno
import fcntl
import os
import time
from contextlib import contextmanager

PACK_MAX = 64 << 20      # bytes; a full pack is closed and a new one started
SUFFIX = ".pack"
IOV_MAX = 1024           # buffers per writev (Linux's limit)


class Packs:
    """The packs of one storage root, and this writer's current one."""

    def __init__(self, root):
        self.root = root
        self.dir = os.path.join(root, "packs")
        self.name = None         # this writer's pack
        self._fd = None
        self._size = 0           # bytes, the pending appends included
        self._pending = []       # buffers appended but not written yet
        self._dirty = False      # written since the last sync
        self._new_entry = False  # the pack's directory entry is not synced yet

    # -- writing -----------------------------------------------------------------

    def append(self, *parts):
        """Append a record (the concatenation of parts) to this writer's pack: (pack name,
        offset). It is written by the next sync(), or read(); the parts are kept, not copied,
        until then."""
        if self._fd is None or self._size >= PACK_MAX or (
                not self._pending and os.fstat(self._fd).st_nlink == 0):
            self._start_pack()  # none yet, full, or its root was wiped under us
        offset = self._size
        for part in parts:
            self._pending.append(part)
            self._size += len(part)
        return self.name, offset

    @property
    def unsynced(self):
        return bool(self._pending) or self._dirty or self._new_entry

    def sync(self):
        """Make every record appended so far durable."""
        self._write_pending()
        if self._dirty:
            os.fdatasync(self._fd)
            self._dirty = False
        if self._new_entry:
            _fsync_dir(self.dir)
            self._new_entry = False

    def _write_pending(self):
        pending, self._pending = self._pending, []
        try:
            for i in range(0, len(pending), IOV_MAX):
                _writev_all(self._fd, pending[i:i + IOV_MAX])
                self._dirty = True
        except OSError:
            self._close()  # a torn record: never append after it
            raise

    def close(self):
        self.sync()
        self._close()

    def _start_pack(self):
        if self._fd is not None:
            self.sync()
            self._close()
        os.makedirs(self.dir, exist_ok=True)
        name = "%016x-%s%s" % (time.time_ns(), os.urandom(4).hex(), SUFFIX)
        temp = os.path.join(self.dir, name + ".new")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(temp, os.path.join(self.dir, name))
        self._fd, self.name, self._size = fd, name, 0
        self._new_entry = True

    def _close(self):
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
        self._fd, self.name, self._dirty, self._pending = None, None, False, []

    # -- reading -----------------------------------------------------------------

    def read(self, name, offset, length):
        """length bytes at offset of pack name; None if the pack or the bytes are gone."""
        if name == self.name and self._pending:
            self._write_pending()
        try:
            with open(os.path.join(self.dir, name), "rb") as f:
                f.seek(offset)
                raw = f.read(length)
        except OSError:
            return None
        return raw if len(raw) == length else None

    def path(self, name):
        return os.path.join(self.dir, name)

    # -- compaction ----------------------------------------------------------------

    def listing(self):
        """[(name, size)] of every pack in the root."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.endswith(SUFFIX):
                try:
                    out.append((name, os.stat(os.path.join(self.dir, name)).st_size))
                except FileNotFoundError:
                    pass  # removed by another process's compaction
        return out

    @contextmanager
    def locked(self, name):
        """Yields True while this process holds pack name's lock, False if a writer does."""
        try:
            fd = os.open(os.path.join(self.dir, name), os.O_RDONLY)
        except FileNotFoundError:
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def remove(self, name):
        try:
            os.remove(os.path.join(self.dir, name))
        except FileNotFoundError:
            return  # another process's compaction was first
        _fsync_dir(self.dir)


def _writev_all(fd, buffers):
    while buffers:
        buffers = _skip(buffers, os.writev(fd, buffers))


def _skip(buffers, n):
    """buffers without their first n bytes (after a short write)."""
    for i, b in enumerate(buffers):
        if n < len(b):
            return [memoryview(b)[n:]] + buffers[i + 1:]
        n -= len(b)
    return []


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
