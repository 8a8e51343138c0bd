"""A virtual MicroPython board on a pty, for tests and for users without hardware.

    with VirtualDevice("devices/v1", board="esp32") as dev:
        print(dev.port)          # /dev/pts/N: use it with tools/flash.py or mpremote

The board is the official MicroPython WebAssembly build (repl_host.mjs) behind the pty's
master end; its flash is the directory, which persists. Each reset (machine.reset(), or
Ctrl-D at a REPL) ends the Node process and this launcher starts the next one on the same
pty, as a board keeps its USB-serial port across resets.
"""
import os
import subprocess
import threading
import tty

from agent.runtime.micropython import find_node
from firmware.boards import BOARDS

HOST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "repl_host.mjs")
EXIT_RESET, EXIT_SOFT, EXIT_SOFT_RAW = 100, 101, 102
START_AFTER = {EXIT_RESET: "hard", EXIT_SOFT: "soft", EXIT_SOFT_RAW: "raw"}


class VirtualDevice:
    """`directory` is the flash; `board` one of firmware.boards.BOARDS (its heap, flash size
    and os.uname().machine); the host's own messages go to `log` (a binary file) if given."""

    def __init__(self, directory, board="esp32", log=None):
        if board not in BOARDS or not BOARDS[board].get("virtual"):
            raise ValueError("no virtual %r board (choose from %s)" % (board, ", ".join(virtual_boards())))
        os.makedirs(directory, exist_ok=True)
        self.directory = os.path.realpath(directory)
        self.board = BOARDS[board]
        self.log = log
        self.port = None
        self.resets = 0
        self._proc = None
        self._stopping = False
        self._thread = None
        self._fds = ()

    def start(self):
        master, slave = os.openpty()
        tty.setraw(slave)  # a serial line, not a terminal: no echo, no line editing
        os.set_blocking(master, False)  # repl_host.mjs must never hang writing to nobody
        self._fds = (master, slave)  # the slave stays open: the line survives clients
        self.port = os.ttyname(slave)
        self._thread = threading.Thread(target=self._run, name="virtual-device", daemon=True)
        self._thread.start()
        return self

    def wait(self):
        """Block until the device stops (stop() from another thread, or a host failure)."""
        self._thread.join()

    def stop(self):
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self._thread is not None:
            self._thread.join()
        for fd in self._fds:
            os.close(fd)
        self._fds = ()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _run(self):
        node = find_node()
        start = "hard"
        while not self._stopping:
            cmd = [node, HOST, "--fd", str(self._fds[0]), "--dir", self.directory,
                   "--heap", str(self.board["virtual"]["heap"]),
                   "--flash", str(self.board["virtual"]["flash"]),
                   "--machine", "Virtual " + self.board["machine"], "--start", start]
            self._proc = subprocess.Popen(cmd, pass_fds=self._fds[:1], stdin=subprocess.DEVNULL,
                                          stdout=self.log, stderr=self.log)
            status = self._proc.wait()
            start = START_AFTER.get(status)
            if start is None:  # a crash of the host itself (it has logged why)
                return
            self.resets += 1


def virtual_boards():
    return [name for name, board in BOARDS.items() if board.get("virtual")]
