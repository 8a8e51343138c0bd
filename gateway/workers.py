"""The ingest in several processes: each worker's lease on the deployment's one-of-a-kind jobs,
and its report of itself.

Every gateway process is a worker: `edgekeep run` is one (with the admin page), `edgekeep
run --workers N` starts N - 1 more on the same machine, `edgekeep worker --config FILE`
runs one on any machine that reaches the broker and the database. They all ingest (an MQTT
shared subscription, gateway/ingest/pipeline.py). The jobs that must run exactly once per
deployment (sealing epochs, the anchor outbox, the Keeper, the Provider network, the Home
Assistant bridge) run in the worker that holds the lease (gateway/store/workers.py). It
renews the lease every REPORT s. If it dies, another worker takes the lease within TTL s
and starts them; a worker that finds it lost the lease exits (its service manager restarts
it), so two never run them at once.
"""
import logging
import os
import socket
import subprocess
import sys
import threading
import time

from gateway.store.workers import LEASE, Worker

log = logging.getLogger("edgekeep.workers")

TTL = 15.0       # seconds a lease runs without renewal
REPORT = 2.0     # seconds between a worker's reports (and lease attempts by a non-holder)


def default_name(index=0):
    """The worker's name: stable across restarts on this machine (a worker restarted after a
    crash takes its own lease back at once)."""
    return "%s/%d" % (socket.gethostname(), index)


class LeaseHolder:
    """Takes the deployment's lease for this worker and keeps it, in a thread.

    on_gain() runs (in that thread) when the lease is taken; on_lost(why) when a renewal
    finds it gone, held or not renewable for TTL s. `held` says whether it runs now, `fence`
    checks it inside a write transaction."""

    def __init__(self, store, name, on_gain, on_lost, ttl=TTL, ingest=None, health=None):
        if ttl < 3 * REPORT:
            raise ValueError("lease_seconds must be at least %g (three renewals)" % (3 * REPORT))
        self.store = store
        self.name = name
        self.on_gain, self.on_lost = on_gain, on_lost
        self.ttl = ttl
        self.ingest = ingest
        self.held = False
        self.renewed = 0.0
        self.started_at = time.time()
        self._stop = threading.Event()
        self.thread = (health.thread("lease", self._run, self._stop) if health
                       else threading.Thread(target=self._run, name="lease", daemon=True))

    def start(self):
        """Try the lease once at once (a lone gateway starts its jobs before it returns),
        then keep at it in the thread."""
        self.step()
        self.thread.start()
        return self

    def fence(self, store):
        return store.workers.holds(LEASE, self.name, time.time())

    def step(self):
        now = time.time()
        try:
            taken = self.store.workers.take_lease(LEASE, self.name, self.ttl, now)
        except Exception as e:
            if self.held and now - self.renewed >= self.ttl:
                self._lose("not renewed for %.0f s: %s" % (now - self.renewed, e))
            log.warning("lease: the database did not answer: %s", e)
            taken = False
        else:
            if taken:
                self.renewed = now
                if not self.held:
                    self.held = True
                    log.info("worker %s holds the lease: sealing, anchoring and the Keepers "
                             "run here", self.name)
                    self.on_gain()
            elif self.held:
                lease = self.store.workers.lease(LEASE)
                self._lose("taken by %s" % (lease.holder if lease else "nobody"))
        self._report(now)

    def _lose(self, why):
        self.held = False
        log.error("worker %s lost the lease (%s)", self.name, why)
        self.on_lost(why)

    def _report(self, now):
        ingest = self.ingest
        if ingest is None:
            return
        inflight, oldest = ingest.inflight()
        try:
            self.store.workers.report(Worker(
                self.name, socket.gethostname(), os.getpid(), self.started_at, now,
                ingest.stats["received"], ingest.stats["stored"], inflight, oldest))
        except Exception as e:
            log.debug("worker report not written: %s", e)

    def _run(self):
        while not self._stop.wait(REPORT):
            self.step()

    def stop(self):
        """Stop renewing (and starting jobs); the lease is held until release() or expiry."""
        self._stop.set()
        if self.thread.ident is not None:
            self.thread.join()

    def release(self):
        """Stop; give the lease up so that another worker takes it at once."""
        self.stop()
        if self.held:
            self.held = False
            try:
                self.store.workers.release(LEASE, self.name)
            except Exception as e:
                log.warning("lease not released (it expires in %.0f s): %s", self.ttl, e)
        self.store.close()


class Children:
    """`run --workers N`: the N - 1 other workers of this machine, each an `edgekeep worker`
    process that dies with this one, started again (after a second, doubling to a minute)
    when one exits."""

    def __init__(self, config, count):
        self.config = config
        self.count = count
        self.procs = {}
        self.restarts = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="workers", daemon=True)

    def start(self):
        """Start the children (none for a count of 1) and watch them."""
        for index in range(1, self.count):
            self._spawn(index)
        if self.procs:
            self.thread.start()
        return self

    def _spawn(self, index):
        from gateway import localhost
        self.procs[index] = localhost.spawn(
            [sys.executable, "-m", "gateway", "worker", "--config", self.config,
             "--index", str(index)])

    def _watch(self):
        from gateway.health import Backoff
        backoff = {i: Backoff(1, 60) for i in range(1, self.count)}
        while not self._stop.wait(0.5):
            for index, proc in list(self.procs.items()):
                if proc.poll() is None or self._stop.is_set():
                    continue
                delay = backoff[index].next()
                log.warning("worker %d exited with status %s; starting it again in %.0f s",
                            index, proc.returncode, delay)
                if self._stop.wait(delay):
                    return
                self._spawn(index)
                self.restarts += 1

    def stop(self, timeout=30):
        """SIGTERM each (they finish their batch and give up the lease), SIGKILL after
        timeout s."""
        self._stop.set()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
