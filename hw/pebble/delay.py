# sleep_ms for both runtimes: MicroPython's time has it, CPython's does not.
try:
    from time import sleep_ms
except ImportError:
    from time import sleep

    def sleep_ms(ms):
        sleep(ms / 1000)
