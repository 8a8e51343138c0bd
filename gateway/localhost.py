"""Ports on this machine, for the services the gateway starts (broker, chain), and the rule
that none of those processes outlives the one that started it (dies_with_parent)."""
import ctypes
import os
import queue
import signal
import socket
import subprocess
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(host, port, timeout):
    """True once something accepts connections on host:port, False after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


# -- child processes ----------------------------------------------------------------------

PR_SET_PDEATHSIG = 1    # <linux/prctl.h>


def _prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: no parent-death signal
        return None


_PRCTL = _prctl()


def dies_with_parent(sig=signal.SIGTERM):
    """A preexec_fn for subprocess.Popen: the child gets `sig` when the process that started it
    dies, however it dies (SIGKILL included): Linux's PR_SET_PDEATHSIG, set between fork and
    exec. If that process is already gone by then, the child exits at once.

    The kernel ties the signal to the *thread* that forked, so a child started from a
    worker thread would die with that thread: start children with spawn(), which forks from
    a thread that lives as long as the process. Elsewhere than Linux this only checks that
    the parent still runs.
    """
    parent = os.getpid()
    prctl = _PRCTL

    def preexec():
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # died before the prctl: nobody would signal us
            os._exit(1)
    return preexec


def spawn(cmd, sig=signal.SIGTERM, **popen_args):
    """subprocess.Popen(cmd, **popen_args) for a child that dies (with `sig`) when this process
    dies, and not before: from the main thread it forks there; from any other thread (a
    worker that may end, or be restarted, before the process does) the fork is made by a
    daemon thread kept for that, which lives as long as the process."""
    popen_args["preexec_fn"] = dies_with_parent(sig)
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(cmd, **popen_args)
    box, done = [], threading.Event()
    _forker().put((lambda: subprocess.Popen(cmd, **popen_args), box, done))
    done.wait()
    ok, value = box[0]
    if not ok:
        raise value
    return value


_forker_lock = threading.Lock()
_forker_queue = None


def _forker():
    global _forker_queue
    with _forker_lock:
        if _forker_queue is None:
            q = queue.SimpleQueue()
            threading.Thread(target=_fork_for_others, args=(q,), name="forker", daemon=True).start()
            _forker_queue = q
        return _forker_queue


def _fork_for_others(q):
    while True:
        make, box, done = q.get()
        try:
            box.append((True, make()))
        except BaseException as e:  # handed back to the caller's thread
            box.append((False, e))
        done.set()
