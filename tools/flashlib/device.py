"""A MicroPython board on a serial port, through mpremote's SerialTransport (raw REPL and
raw-paste), with every failure turned into a FlashError that says how to fix it."""
import ast
import contextlib
import io
import json
import os
import sys

import serial
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from tools.flashlib import FlashError

REPL_TIMEOUT = 5  # s for a board to answer at the REPL
INTERRUPT_WAIT = 2  # s for running code to stop on Ctrl-C and show a prompt
ENOSPC = 28

ABOUT = """
import os, sys, gc
u = os.uname()
s = os.statvfs('/')
print(repr({'machine': u.machine, 'platform': sys.platform,
            'micropython': '%d.%d.%d' % sys.implementation.version[:3],
            'flash_free': s[0] * s[3], 'flash_size': s[0] * s[2], 'heap_free': gc.mem_free()}))
"""


def check_port(port):
    if not os.path.exists(port):
        raise FlashError("serial port %s does not exist" % port,
                         "plug the board in and pick its port from `python tools/flash.py ports` "
                         "(or start one: `python tools/flash.py virtual-device --dir DIR`)")
    try:
        serial.Serial(port, exclusive=True).close()
    except serial.SerialException as e:
        if "lock" in str(e) or "busy" in str(e).lower():
            raise FlashError("serial port %s is busy: another program has it open" % port,
                             "close the other program (a serial monitor, mpremote, an IDE) and retry")
        if "ermission" in str(e):
            raise FlashError("no permission to open %s" % port,
                             "add yourself to the port's group (e.g. `sudo usermod -aG dialout $USER`, "
                             "then log in again)")
        raise FlashError("cannot open %s: %s" % (port, e), "check the cable and the port name")


def _stderr(message):
    print(message, file=sys.stderr, flush=True)


class Device:
    """`log` gets what the user should know while connecting (default: stderr)."""

    def __init__(self, port, log=_stderr):
        check_port(port)
        self.port = port
        try:
            self.transport = SerialTransport(port, baudrate=115200, timeout=1)
        except TransportError as e:
            raise FlashError("cannot open %s: %s" % (port, e), "check the cable and the port name")
        try:
            self._enter_raw_repl(log)
        except FlashError:
            self.transport.close()
            raise
        self.about = self.eval(ABOUT)

    def _enter_raw_repl(self, log):
        """Stop what runs (Ctrl-C, saying so if it was the agent), then the raw REPL."""
        self.transport.serial.write(b"\r\x03")
        answer = self.transport.read_until(1, b">>> ", timeout=INTERRUPT_WAIT,
                                           timeout_overall=REPL_TIMEOUT)
        if b"KeyboardInterrupt" in answer:
            log("the agent is running on %s; interrupting it" % self.port)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints what it got
                self.transport.enter_raw_repl(soft_reset=False, timeout_overall=REPL_TIMEOUT)
        except TransportError:
            if b"MicroPython" in answer or b">>> " in answer or b"Traceback" in answer:
                raise FlashError("the board on %s runs MicroPython but did not stop for its raw "
                                 "REPL" % self.port,
                                 "reset it (its reset button, or unplug it and plug it in) and "
                                 "retry within a few seconds")
            raise FlashError(
                "the board on %s is not MicroPython, or runs code that ignores Ctrl-C: no "
                "MicroPython REPL answered" % self.port,
                "flash MicroPython first: `python tools/flash.py firmware --port %s --board BOARD` "
                "(if it runs MicroPython, reset it and retry)" % self.port)

    def close(self):
        with contextlib.suppress(Exception):
            self.transport.exit_raw_repl()
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def exec(self, code):
        """Run code on the board; returns its output (bytes). Device errors raise FlashError."""
        try:
            return self.transport.exec(code)
        except TransportExecError as e:
            if "OSError: %d" % ENOSPC in e.error_output or "ENOSPC" in e.error_output:
                raise flash_full(self.port)
            raise FlashError("the board raised an error:\n%s" % e.error_output.strip(),
                             "see the traceback; `python tools/flash.py shell --port %s` opens a REPL"
                             % self.port)
        except TransportError as e:
            raise FlashError("lost the board on %s: %s" % (self.port, e),
                             "check the cable, then retry")

    def eval(self, code):
        return ast.literal_eval(self.exec(code).decode().strip())

    def write_file(self, path, data, progress=None):
        """Write data to path atomically: a temporary file, renamed over path when complete."""
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent:
            self.exec("import os\np=''\nfor d in %r.split('/'):\n p+=d\n try: os.mkdir(p)\n"
                      " except OSError: pass\n p+='/'" % parent)
        tmp = path + ".new"
        try:
            self.transport.fs_writefile(tmp, data, progress_callback=progress)
        except TransportExecError as e:
            if "OSError: %d" % ENOSPC in e.error_output or "ENOSPC" in e.error_output:
                self.exec("import os\ntry: os.remove(%r)\nexcept OSError: pass" % tmp)
                raise flash_full(self.port)
            raise
        self.exec("import os\nos.rename(%r, %r)" % (tmp, path))

    def hashes(self, paths):
        """{path: sha256 hex or None if absent} of files on the board, one exec per file: a
        board collects its heap between execs, so a long bundle never needs it all at once."""
        return {p: self.eval(HASH % (p,)) for p in paths}

    def read_json(self, path):
        """A JSON file on the board as a dict, or None if it is absent."""
        text = self.eval("try:\n print(repr(open(%r).read()))\nexcept OSError:\n print(None)" % path)
        return None if text is None else json.loads(text)

    def fresh_interpreter(self):
        """Ctrl-D in the raw REPL: a soft reset that does not run main.py, so that what the
        stopped agent still holds (its modules, their buffers) is freed."""
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.transport.enter_raw_repl(soft_reset=True, timeout_overall=2 * REPL_TIMEOUT)
        except TransportError as e:
            raise FlashError("the board on %s did not come back from a soft reset: %s"
                             % (self.port, e), "reset it (its reset button) and retry")

    def soft_reset(self):
        """Ctrl-D at the friendly REPL: the board restarts and runs main.py."""
        self.transport.exit_raw_repl()
        self.transport.serial.write(b"\x04")


HASH = """import hashlib, binascii
try:
 h=hashlib.sha256()
 with open(%r,'rb') as f:
  while 1:
   b=f.read(512)
   if not b: break
   h.update(b)
 print(repr(binascii.hexlify(h.digest()).decode()))
except OSError: print(None)"""


def flash_full(port):
    return FlashError("the flash of the board on %s is full" % port,
                      "free space: remove files you do not need (`mpremote connect %s rm FILE`), "
                      "or erase the flash and reinstall (`python tools/flash.py firmware`)" % port)
