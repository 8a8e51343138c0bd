# Unix time and a monotonic clock on every port (bare-metal MicroPython counts from 2000).
import time

_EPOCH_2000 = 946684800
_OFFSET = _EPOCH_2000 if time.gmtime(0)[0] == 2000 else 0
_ticks = [None, 0]  # last ticks_ms reading, milliseconds accumulated


def unix_time():
    return time.time() + _OFFSET


def monotonic():
    """Seconds since an arbitrary start, safe across ticks_ms wrap-around."""
    if not hasattr(time, "ticks_ms"):
        return time.monotonic()
    now = time.ticks_ms()
    if _ticks[0] is not None:
        _ticks[1] += time.ticks_diff(now, _ticks[0])
    _ticks[0] = now
    return _ticks[1] / 1000
