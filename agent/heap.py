# Heap housekeeping for long loops. collect() runs a garbage collection on MicroPython and
# does nothing on CPython (which frees by reference counting, and whose gc.collect() walks
# every object of the process). Loops call it now and then: a small heap then never fills
# with garbage, and on the wasm runtime, whose collector runs only when asked
# (agent/runtime/wasm/gc.mjs), nothing else would reclaim it.
# `peak` is the most heap in use (live and garbage, gc.mem_alloc()) that collect() or note()
# has seen: on the wasm runtime, the high-water mark of the heap between those calls.
import gc
import sys

_MICROPYTHON = sys.implementation.name == "micropython"
peak = 0


def note():
    global peak
    if _MICROPYTHON:
        used = gc.mem_alloc()
        if used > peak:
            peak = used


def collect():
    if _MICROPYTHON:
        note()
        gc.collect()
