# What a board's os has and this build's lacks: uname() naming the emulated board,
# statvfs() of the size-limited flash (repl_host.mjs counts its 4 KiB blocks), file sizes
# in ilistdir() and stat("").
import builtins
import os
import sys
from collections import namedtuple

import _ekhost

_Uname = namedtuple("uname_result", ("sysname", "nodename", "release", "version", "machine"))


def uname():
    v = sys.implementation.version
    release = "%d.%d.%d" % (v[0], v[1], v[2])
    return _Uname(sys.platform, sys.platform, release, "v%s on virtual hardware" % release,
                  _ekhost.machine)


def statvfs(path):
    bsize, blocks, free = _ekhost.flash_blocks()
    return (bsize, bsize, blocks, free, free, 0, 0, 0, 0, 255)


_ilistdir = os.ilistdir


def ilistdir(path="."):
    """(name, type, inode, size) as a board's littlefs gives; this build's lack the size."""
    return _with_sizes(path, _ilistdir(path))  # the built-in raises at the call: so do we


def _with_sizes(path, entries):
    sep = b"/" if isinstance(path, bytes) else "/"
    prefix = b"" if isinstance(path, bytes) else ""
    if path not in (".", b".", "", b""):
        prefix = path.rstrip(sep) + sep
    for entry in entries:
        name, kind = entry[0], entry[1]
        yield (name, kind, 0, 0 if kind == 0x4000 else os.stat(prefix + name)[6])


_stat = os.stat


def stat(path):
    """"" is the current directory, as on a board (mpremote's `cp -r DIR :` asks for it)."""
    return _stat(path or ".")


os.uname = uname
os.statvfs = statvfs
os.ilistdir = ilistdir
os.stat = stat


# This build reports emscripten's errno numbers (ENOENT is 44); a board reports MicroPython's,
# which are Linux's (ENOENT is 2), and tools such as mpremote read them. repl_host.mjs raises
# a full flash as 28 (ENOSPC) itself.
_ERRNO = {1: 10, 2: 13, 8: 9, 10: 16, 20: 17, 28: 22, 31: 21, 44: 2, 54: 20, 55: 39, 63: 1}


def _board_errno(fn):
    def call(*args):
        try:
            return fn(*args)
        except OSError as e:
            if e.args and e.args[0] in _ERRNO:
                raise OSError(_ERRNO[e.args[0]])
            raise
    return call


for _name in ("chdir", "ilistdir", "listdir", "mkdir", "remove", "rename", "rmdir", "stat",
              "unlink"):
    setattr(os, _name, _board_errno(getattr(os, _name)))
builtins.open = _board_errno(open)
