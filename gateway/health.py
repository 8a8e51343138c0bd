"""Supervision of the gateway's long-running threads, and the states /healthz, /metrics and
the admin page report.

Each thread (ingest worker, anchor outbox, Keeper loop, Home Assistant bridge, web
monitor) runs its loop under `Registry.supervise`: an exception that escapes the loop is
logged with its traceback, counted, and the loop starts again after a back-off (1 s,
doubling to 60 s; back to 1 s once the component made progress). A component that fails
more than its limit in a row is `dead`, and the registry's `on_fatal` runs: the running
gateway exits non-zero so systemd restarts it (hw/rpi's unit has Restart=on-failure).

Expected conditions are states, not failures: `paused` (disk full: the ingest stops taking
messages and resumes by itself) and `waiting` (the chain does not answer yet).
"""
import errno
import logging
import sqlite3
import threading
import time

log = logging.getLogger("edgekeep.health")

STARTING, ALIVE, WAITING, PAUSED, RESTARTING, DEAD, STOPPED = (
    "starting", "alive", "waiting", "paused", "restarting", "dead", "stopped")
UP_STATES = (ALIVE, WAITING, PAUSED)   # the thread runs and does what it should
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
FAIL_LIMIT = 10                        # failures in a row before a component is dead
DISK_FULL = "disk_full"
MB = 1 << 20


def disk_full(exc):
    """True if exc (or what caused it) says the disk is full: SQLite's SQLITE_FULL
    ("database or disk is full") or ENOSPC/EDQUOT from a file write."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.Error) and (
                getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
                or "database or disk is full" in str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def unreachable(exc):
    """True if exc (or its cause) is a network failure: refused, reset, timed out."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        if type(exc).__module__.startswith(("requests", "urllib3", "aiohttp")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class Backoff:
    """1 s, 2 s, 4 s ... up to 60 s; reset() after a success."""

    def __init__(self, first=BACKOFF_FIRST, most=BACKOFF_MAX):
        self.first, self.most = first, most
        self.delay = first

    def next(self):
        delay = self.delay
        self.delay = min(self.delay * 2, self.most)
        return delay

    def reset(self):
        self.delay = self.first


class Component:
    """One supervised thread's state; its loop calls progress(), pause(), resume(), waiting()."""

    def __init__(self, name, critical=False, fail_limit=FAIL_LIMIT):
        self.name = name
        self.critical = critical
        self.fail_limit = fail_limit
        self.state = STARTING
        self.detail = ""
        self.reason = None          # why paused or waiting: "disk_full", "chain"
        self.restarts = 0
        self.errors = 0             # failures in all
        self.failures = 0           # failures in a row
        self.last_error = None
        self.last_error_at = None
        self.last_progress = None
        self.since = time.time()
        self.lock = threading.Lock()

    def _set(self, state, detail="", reason=None):
        with self.lock:
            if (state, detail, reason) != (self.state, self.detail, self.reason):
                if state != self.state:
                    self.since = time.time()
                self.state, self.detail, self.reason = state, detail, reason

    def alive(self, detail=""):
        self._set(ALIVE, detail)

    def progress(self, alive=True):
        """The loop did useful work: its failures in a row are forgiven (and it is alive,
        unless alive=False: still waiting for something else)."""
        self.last_progress = time.time()
        self.failures = 0
        if alive and self.state != ALIVE:
            self.alive()

    def pause(self, reason, detail):
        """An expected stop (disk full): logged once by the caller, not a failure."""
        self._set(PAUSED, detail, reason)

    def waiting(self, reason, detail):
        self._set(WAITING, detail, reason)

    def resume(self):
        self._set(ALIVE)

    @property
    def up(self):
        return self.state in UP_STATES

    def snapshot(self):
        with self.lock:
            return {"state": self.state, "detail": self.detail, "reason": self.reason,
                    "up": self.state in UP_STATES, "since": self.since,
                    "restarts": self.restarts, "errors": self.errors,
                    "last_error": self.last_error, "last_error_at": self.last_error_at,
                    "last_progress": self.last_progress, "critical": self.critical}


class Registry:
    """The components of one process. on_fatal(component, reason) runs once, when a
    component is dead."""

    def __init__(self, on_fatal=None, backoff_first=BACKOFF_FIRST, backoff_max=BACKOFF_MAX):
        self.on_fatal = on_fatal
        self.backoff_first, self.backoff_max = backoff_first, backoff_max
        self.components = {}
        self.fatal_reason = None
        self.lock = threading.Lock()

    def component(self, name, critical=False, fail_limit=FAIL_LIMIT):
        with self.lock:
            c = self.components.get(name)
            if c is None:
                c = self.components[name] = Component(name, critical, fail_limit)
            return c

    def snapshot(self):
        """{name: state dict} of every component, by name."""
        with self.lock:
            comps = sorted(self.components.items())
        return {name: c.snapshot() for name, c in comps}

    def thread(self, name, body, stop, critical=False, fail_limit=FAIL_LIMIT):
        """A daemon thread that runs body() under supervision until stop is set."""
        comp = self.component(name, critical, fail_limit)
        return threading.Thread(target=self.supervise, args=(comp, body, stop), name=name,
                                daemon=True)

    def supervise(self, comp, body, stop):
        """Run body() until stop is set; restart it with back-off when it raises."""
        backoff = Backoff(self.backoff_first, self.backoff_max)
        while not stop.is_set():
            comp.alive()
            started = time.time()
            try:
                body()
                if stop.is_set():
                    break
                raise RuntimeError("%s loop returned while the gateway runs" % comp.name)
            except Exception as e:
                if (comp.last_progress or 0) >= started:
                    comp.failures = 0
                    backoff.reset()
                comp.failures += 1
                comp.errors += 1
                comp.last_error = "%s: %s" % (type(e).__name__, str(e)[:300])
                comp.last_error_at = time.time()
                if comp.failures > comp.fail_limit:
                    log.exception("%s failed %d times in a row; giving up", comp.name,
                                  comp.failures)
                    comp._set(DEAD, comp.last_error)
                    self.fatal(comp, "%s failed %d times in a row: %s" % (
                        comp.name, comp.failures, comp.last_error))
                    return
                delay = backoff.next()
                log.exception("%s failed (%d in a row); restarting in %g s", comp.name,
                              comp.failures, delay)
                comp._set(RESTARTING, "in %g s after %s" % (delay, comp.last_error))
                if stop.wait(delay):
                    break
                comp.restarts += 1
        comp._set(STOPPED)

    def fatal(self, comp, reason):
        with self.lock:
            if self.fatal_reason is not None:
                return
            self.fatal_reason = reason
        log.critical("%s", reason)
        if self.on_fatal:
            self.on_fatal(comp, reason)

    def ingest_status(self):
        """(ok, reason) for /healthz: ok while the ingest takes messages."""
        c = self.components.get("ingest")
        if self.fatal_reason:
            return False, self.fatal_reason
        if c is None:
            return False, "no ingest in this process"
        if c.state == ALIVE:
            return True, "ingest alive"
        return False, "ingest %s%s" % (c.state, ": " + c.detail if c.detail else "")
