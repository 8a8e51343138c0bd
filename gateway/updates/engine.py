"""The rollout engine: runs the open rollouts of the database, in the worker that holds the
deployment's lease (gateway/service.py starts it with the other one-of-a-kind jobs).

Everything it knows is in the database (gateway/store/rollouts.py), so the worker that takes
the lease after this one carries on. Each round (about a second) it writes each device's
progress, marks devices that did not confirm in time, offers the bundle to the waiting
devices of the running stage, and judges that stage (plan.verdict): on to the next one,
done, or halted. Transfers are gateway/ingest/ota.py's, one MQTT connection for all: the
device asks for the chunks it needs and reports each step. A halted rollout offers nothing
new; the devices already updating are still followed to their end.
"""
import logging
import queue
import threading
import time

from gateway.health import Registry
from gateway.ingest.ota import Progress, Release, Transfer
from gateway.store.rollouts import (
    CHUNKS,
    CONFIRMED,
    CURRENT,
    DONE,
    FAILED,
    HALTED,
    IN_FLIGHT,
    OFFERED,
    REBOOTING,
    REFUSED,
    ROLLED_BACK,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    TIMED_OUT,
    VERIFYING,
    WAITING,
    Rollouts,
)
from gateway.updates import bundles, plan

log = logging.getLogger("edgekeep.updates")

ROUND = 1.0            # s between rounds
BROKER_RETRY = 5.0     # s between tries to reach the broker
BY_TRANSFER = {"installing": REBOOTING, "confirmed": CONFIRMED, "current": CURRENT,
               "refused": REFUSED, "rolled back": ROLLED_BACK}


class Counts(Progress):
    """The chunks each device asked for and the broker took (ota.Pusher tells them)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.wanted, self.sent = {}, {}

    def need(self, device, count):
        with self.lock:
            self.wanted[device], self.sent[device] = count, 0

    def chunk_sent(self, device):
        with self.lock:
            self.sent[device] = self.sent.get(device, 0) + 1

    def of(self, device):
        with self.lock:
            return self.wanted.get(device), self.sent.get(device, 0)


class Engine:
    """store: a Store of this thread's own (Store.connect). pusher(progress): an ota.Pusher
    on the gateway's broker account, not connected yet."""

    def __init__(self, store, pusher, health=None):
        self.store = store
        self.rollouts = Rollouts(store.db)
        self.make_pusher = pusher
        self.counts = Counts()
        self.pusher = None
        self.transfers = {}      # device -> Transfer, of the rollout in self.rollout_of
        self.rollout_of = {}
        self.written = {}        # device -> (state, chunks, sent) last written
        self.releases = {}       # bundle digest -> Release
        self._stop = threading.Event()
        registry = health or Registry()
        self.health = registry.component("rollouts")
        self.thread = registry.thread("rollouts", self._run, self._stop)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(10)

    def _run(self):
        self.pusher = self._connect()
        if self.pusher is None:
            return
        try:
            last = 0.0
            while not self._stop.is_set():
                self.pusher.pump(self.transfers)
                if time.monotonic() - last >= ROUND:
                    last = time.monotonic()
                    self.step(time.time())
                    self.health.progress()
        finally:
            self.pusher.close()
            self.transfers.clear()

    def _connect(self):
        while not self._stop.is_set():
            pusher = self.make_pusher(self.counts)
            try:
                pusher.connect()
                self.health.alive()
                return pusher
            except (OSError, queue.Empty) as e:
                self.health.waiting("broker", "rollouts wait for the broker: %s" % e)
                pusher.close()
            self._stop.wait(BROKER_RETRY)
        return None

    # -- one round -------------------------------------------------------------

    def step(self, now):
        """Bring every open rollout one round further."""
        open_ids = set()
        for r in self.rollouts.open():
            open_ids.add(r.id)
            try:
                self._follow(r, now)
                if r.status == RUNNING:
                    self._advance(r, now)
            except (OSError, ValueError, KeyError) as e:
                # its bundle is gone or unreadable: this rollout halts, the others go on
                why = "cannot send its bundle: %s" % e
                self.rollouts.set_status(r.id, (RUNNING, HALTED), HALTED, now, why)
                log.error("rollout %s halted: %s", r.id, why)
        for dev in [d for d, rid in self.rollout_of.items() if rid not in open_ids]:
            self._drop(dev)    # its rollout was aborted or is done

    def _follow(self, r, now):
        """Write each in-flight device's progress; mark those not confirmed in time."""
        for row in self.rollouts.devices(r.id):
            if row.state not in IN_FLIGHT + (TIMED_OUT,):
                continue
            state, why = self._observed(r, row)
            if state != row.state and not (row.state == TIMED_OUT and state in IN_FLIGHT):
                self.rollouts.set_device(r.id, row.device, state, now, why)
                log.info("rollout %s: %s %s%s", r.id, row.device, state, ": " + why if why else "")
            wanted, sent = self.counts.of(row.device)
            if wanted is not None and (wanted, sent) != (row.chunks, row.sent):
                self.rollouts.set_chunks(r.id, row.device, wanted, sent, now)
            if state in SUCCEEDED + FAILED:
                self._drop(row.device)
        for dev in plan.timed_out(self.rollouts.devices(r.id), r.confirm_seconds, now):
            self.rollouts.set_device(r.id, dev, TIMED_OUT, now,
                                     "not confirmed within %g s" % r.confirm_seconds)
            log.warning("rollout %s: %s did not confirm within %g s", r.id, dev, r.confirm_seconds)
            self._drop(dev)

    def _observed(self, r, row):
        """(state, why) of a device as its transfer, or else its status, shows it."""
        t = self.transfers.get(row.device)
        if t is None:
            return self._by_status(r, row)
        if t.state in BY_TRANSFER:
            return BY_TRANSFER[t.state], t.why
        wanted, sent = self.counts.of(row.device)
        if wanted is None:
            return OFFERED, None
        return (VERIFYING if sent >= wanted else CHUNKS), None

    def _by_status(self, r, row):
        """A device followed before this worker took over: what its status says, or offer
        again (it asks for what it still misses) unless it is rebooting into the release."""
        version = self._release(r.bundle).version
        d = self.store.device(row.device)
        health = (d and d["health"]) or {}
        if health.get("ota") == "rolled back from " + version:
            return ROLLED_BACK, "not confirmed (its status says it rolled back)"
        if health.get("fw") == version:
            return CONFIRMED, None
        if row.state in (OFFERED, CHUNKS, VERIFYING):
            self._offer(r, row.device)
        return row.state, row.why

    def _advance(self, r, now):
        """Offer the stage's waiting devices; judge the stage."""
        rows = [x for x in self.rollouts.devices(r.id) if x.stage == r.stage]
        for row in rows:
            if row.state == WAITING:
                self._start(r, row.device, now)
        rows = [x for x in self.rollouts.devices(r.id) if x.stage == r.stage]
        verdict, why = plan.verdict(rows, r.max_failed, r.accepted == r.stage)
        if verdict == plan.HALT:
            if self.rollouts.set_status(r.id, (RUNNING,), HALTED, now, why):
                log.warning("rollout %s halted at stage %d: %s", r.id, r.stage + 1, why)
        elif verdict == plan.GO_ON:
            last = r.stage + 1 >= r.stages
            if self.rollouts.set_status(r.id, (RUNNING,), DONE if last else RUNNING, now,
                                        why if last else None, None if last else r.stage + 1):
                log.info("rollout %s: stage %d of %d done (%s)", r.id, r.stage + 1, r.stages, why)

    def _start(self, r, device, now):
        d = self.store.device(device)
        if d is None or d["status"] != "active":
            self.rollouts.set_device(r.id, device, SKIPPED, now, "not an active device")
            return
        self._offer(r, device)
        self.rollouts.set_device(r.id, device, OFFERED, now, offered=True)

    def _offer(self, r, device):
        t = Transfer(device, self._release(r.bundle), r.force, self.counts)
        self.transfers[device], self.rollout_of[device] = t, r.id
        with self.counts.lock:
            self.counts.wanted.pop(device, None)
        if self.pusher is not None:
            self.pusher.know(device, self.store.device(device)["public_key"])
            self.pusher.start(t)

    def _drop(self, device):
        self.transfers.pop(device, None)
        self.rollout_of.pop(device, None)

    def _release(self, digest):
        if digest not in self.releases:
            self.releases[digest] = Release(bundles.bundle_dir(self.store.data_dir, digest))
        return self.releases[digest]

