# First module on the simulated device (as a port's frozen _boot.py): fills what this
# build's os lacks, corrects gc, then run() imports the device's main module and returns
# its exit status.
import builtins
import os
import sys

import _ekhost
import _gc
import uctypes

sys.modules["gc"] = _gc  # gc cannot be extended from a file, as time is
_builtin_import = builtins.__import__


def _import(*args):
    # Loading a module leaves garbage (about a quarter of what it keeps). A board's allocator
    # collects when it runs out; this build's cannot (gc.mjs), so a device importing its code
    # in one go would run out. Collect after each import instead, as the board would have.
    module = _builtin_import(*args)
    _gc.collect()
    return module


builtins.__import__ = _import


def urandom(n):
    buf = bytearray(n)
    _ekhost.urandom(uctypes.addressof(buf), n)
    return bytes(buf)


os.urandom = urandom


def run(main):
    try:
        __import__(main)
    except SystemExit as e:
        return _status(e.args[0] if e.args else None)
    except BaseException as e:
        sys.print_exception(e, sys.stderr)
        return 1
    return 0


def _status(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
