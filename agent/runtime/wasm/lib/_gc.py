# gc, with mem_free() as on a board; _boot installs it as sys.modules["gc"]. The build adds
# the 128 MiB it could grow its heap by, but host.mjs caps the heap: that room never exists.
from gc import *  # the built-in module
from gc import mem_free as _mem_free

_SPLIT_HEAP_MAX = 128 * 1024 * 1024  # gc_get_max_new_split() in ports/webassembly


def mem_free():
    return _mem_free() - _SPLIT_HEAP_MAX
