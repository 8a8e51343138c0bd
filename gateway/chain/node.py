"""A local anvil chain whose state lives in the gateway's data directory.

Files under <data_dir>/chain/: anvil-state.json (chain state, dumped every second and on
SIGTERM), anvil.log, and anvil.json ({pid, port, url}) while a node runs.

Whoever starts an anvil owns it: anvil gets SIGTERM (and dumps its state) when the process
that started it dies, however it dies, SIGKILL included (localhost.spawn). A
process that finds one already running for its data directory uses it and leaves it to its
owner.
"""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from gateway.localhost import free_port, spawn

REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL_BIN = REPO_ROOT / "node_modules" / ".bin" / "anvil"
START_TIMEOUT = 30
STOP_TIMEOUT = 10


class AnvilError(Exception):
    pass


def rpc_call(url, method, params=(), timeout=2):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    request = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.loads(response.read())
    if "error" in reply:
        raise AnvilError("%s: %s" % (method, reply["error"]))
    return reply["result"]


def answers(url):
    try:
        rpc_call(url, "eth_chainId")
        return True
    except (OSError, ValueError, AnvilError):
        return False


def port_in_use(port):
    """True if something listens on 127.0.0.1:port (so anvil could not bind it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return False
        except OSError:
            return True


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class Anvil:
    """anvil on 127.0.0.1 with persistent state. block_time 0 or None means automine."""

    def __init__(self, data_dir, port=None, block_time=5):
        self.chain_dir = Path(data_dir).resolve() / "chain"
        self.state_file = self.chain_dir / "anvil-state.json"
        self.log_file = self.chain_dir / "anvil.log"
        self.info_file = self.chain_dir / "anvil.json"
        self.port = port
        self.block_time = block_time
        self.proc = None

    @property
    def rpc_url(self):
        return "http://127.0.0.1:%d" % self.port

    def command(self):
        cmd = [str(ANVIL_BIN), "--host", "127.0.0.1", "--port", str(self.port),
               "--state", str(self.state_file), "--state-interval", "1"]
        if self.block_time:
            cmd += ["--block-time", str(self.block_time)]
        return cmd

    def start(self, detach=False):
        """Start anvil and wait until it answers JSON-RPC.

        It dies with this process (SIGTERM, so it dumps its state). With detach it runs in a
        session of its own, so that a terminal's Ctrl-C or hang-up, or `timeout` signalling
        the process group, reaches only this process, which stops anvil last, after the
        gateway's final anchor.
        """
        if not ANVIL_BIN.exists():
            raise AnvilError("%s not found; run `npm ci` in %s" % (ANVIL_BIN, REPO_ROOT))
        url = running_url(self.chain_dir.parent)
        if url:
            raise AnvilError("an anvil for %s already runs at %s" % (self.chain_dir.parent, url))
        self.chain_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        elif port_in_use(self.port):
            # Checked first: otherwise whatever listens there would answer for our anvil.
            raise AnvilError("127.0.0.1:%d is already in use" % self.port)
        with open(self.log_file, "ab") as log:
            self.proc = spawn(self.command(), signal.SIGTERM, stdin=subprocess.DEVNULL,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=detach)
        self._wait_until_up()
        self.info_file.write_text(json.dumps(
            {"pid": self.proc.pid, "port": self.port, "url": self.rpc_url}) + "\n")
        return self

    def _wait_until_up(self):
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(self.rpc_url):
            if self.proc.poll() is not None:
                raise AnvilError("anvil exited with %s:\n%s" % (self.proc.returncode, self.log_tail()))
            if time.monotonic() > deadline:
                self.stop()
                raise AnvilError("anvil did not answer at %s within %d s:\n%s"
                                 % (self.rpc_url, START_TIMEOUT, self.log_tail()))
            time.sleep(0.05)

    def log_tail(self, lines=20):
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self):
        """SIGTERM so anvil dumps its state; kill it if it does not exit in time."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.info_file.unlink(missing_ok=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _read_info(data_dir):
    try:
        return json.loads((Path(data_dir) / "chain" / "anvil.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def _runs_anvil_for(pid, data_dir):
    """Guard against a recycled pid: its command line must name data_dir's state file."""
    try:
        cmdline = Path("/proc/%d/cmdline" % pid).read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    return str(Anvil(data_dir).state_file).encode() in cmdline


def running_url(data_dir):
    """URL of the anvil recorded for data_dir if it is alive and answering, else None."""
    info = _read_info(data_dir)
    if info and _runs_anvil_for(info["pid"], data_dir) and answers(info["url"]):
        return info["url"]
    return None


_owned = {}  # data_dir -> Anvil started by ensure_running in this process


def ensure_running(data_dir, block_time=5):
    """URL of the anvil for data_dir; starts one from the persisted state if none runs.

    One this call starts belongs to this process: it runs in a session of its own (terminal
    signals reach only this process) and dies with this process; stop it sooner with
    stop_running(data_dir). One that already runs (another process's) is only used.
    """
    url = running_url(data_dir)
    if url:
        return url
    anvil = Anvil(data_dir, block_time=block_time).start(detach=True)
    _owned[str(Path(data_dir).resolve())] = anvil
    return anvil.rpc_url


def stop_running(data_dir):
    """Stop the anvil recorded for data_dir, if one runs; True if one was stopped."""
    anvil = _owned.pop(str(Path(data_dir).resolve()), None)
    if anvil is not None:
        anvil.stop()
        return True
    info = _read_info(data_dir)
    if not info or not running_url(data_dir):
        return False
    os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while pid_alive(info["pid"]):
        if time.monotonic() > deadline:
            os.kill(info["pid"], signal.SIGKILL)
            break
        time.sleep(0.05)
    (Path(data_dir) / "chain" / "anvil.json").unlink(missing_ok=True)
    return True
