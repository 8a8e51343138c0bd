"""The ingest keeps freed heap instead of faulting it in again for every camera chunk."""
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

# Frees 4 MB of 64 KiB blocks (malloc's own heap, under its mmap threshold) and prints how
# much free heap top malloc keeps (mallinfo2's keepcost).
PROBE = """
import ctypes, sys
from gateway.ingest import malloc
libc = ctypes.CDLL(None)
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks "
                                               "fsmblks uordblks fordblks keepcost").split()]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "keep":
    assert malloc.keep_freed_memory()
blocks = [libc.malloc(64 << 10) for _ in range(64)]
for b in reversed(blocks):
    libc.free(b)
print(libc.mallinfo2().keepcost)
"""


def kept_after_free(mode):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], check=True, capture_output=True,
                         text=True).stdout
    return int(out)


def test_freed_heap_is_kept_for_the_next_chunk():
    assert kept_after_free("default") < 1 << 20     # glibc gave it back to the kernel
    assert kept_after_free("keep") >= 4 << 20
