"""How much freed memory glibc's malloc may keep instead of handing it back to the kernel.

By default glibc gives the free top of a heap back once more than 128 KiB of it is free, and
the next allocation faults those pages in again, zeroed. The ingest takes and frees about
half a megabyte per camera chunk (the payload, its shares and their records), so with the
default a third of its verify time went to page faults (docs/performance.md, bench/camera).
"""
import ctypes

M_TRIM_THRESHOLD = -1     # glibc's mallopt parameter
KEEP_FREE = 16 << 20      # bytes of freed heap top kept, per malloc arena


def keep_freed_memory(nbytes=KEEP_FREE):
    """Let malloc keep up to nbytes of freed heap top; False where that cannot be set (a
    libc without glibc's mallopt)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(M_TRIM_THRESHOLD, nbytes) == 1
