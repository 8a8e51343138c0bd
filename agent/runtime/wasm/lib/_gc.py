# gc as on a board; _boot installs it as sys.modules["gc"]. collect() collects now (this
# build's own only flags a collection for when control is back in JS, see gc.mjs), and
# mem_free() leaves out the 128 MiB the build could grow its heap by: host.mjs caps the
# heap, so that room never exists.
from gc import *  # the built-in module
from gc import mem_free as _mem_free

import _ekhost

_SPLIT_HEAP_MAX = 128 * 1024 * 1024  # gc_get_max_new_split() in ports/webassembly


def collect():
    _ekhost.collect()


def mem_free():
    return _mem_free() - _SPLIT_HEAP_MAX
