# time, with sleeps that block the thread: the build's own sleep spins a core at 100 %.
import sys

_path = sys.path
sys.path = ()
try:
    from time import *  # the built-in module
finally:
    sys.path = _path
del _path

import _ekhost


def sleep(seconds):
    _ekhost.sleep_ms(seconds * 1000)


def sleep_ms(ms):
    _ekhost.sleep_ms(ms)


def sleep_us(us):
    _ekhost.sleep_ms(us / 1000)
