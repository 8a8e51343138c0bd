"""Ingest: MQTT uplinks -> verify -> sequence check -> durable commit -> ack.

One worker thread owns the write connection. It takes messages in batches, verifies each
signature before any other work, stores the new ones in one transaction, and only after
the commit sends each device `ek/<id>/down/ack` with its highest contiguous durable
sequence. The broker's PUBACK is also held back until the commit (paho manual acks), so a
gateway killed mid-batch gets the batch again from its persistent session. The ingest speaks
MQTT v5 and tells the broker it takes at most RECEIVE_MAXIMUM unacked messages (flow
control): the next batch arrives while one commits, and a slow database stops the broker
sending rather than growing the inbox.

Several ingest processes (workers, gateway/workers.py) share the uplinks through an MQTT v5
shared subscription, `$share/<group>/ek/+/up/#`: a device's messages may reach any of them,
in any order. So nothing a batch decides comes from this process's memory: each batch reads
its devices' acked sequences under the database's write lock (one writer at a time, on
SQLite and PostgreSQL alike) and decides duplicates, gaps and acks from the rows. Sealing an
epoch is a one-of-a-kind job: only the worker holding the lease does it (`lease`).
"""
import itertools
import logging
import os
import queue
import shutil
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from agent import cbor
from agent.objects import KIND_CHUNK, KIND_MANIFEST
from agent.proto import ACK_REJECTED, ACK_SEQ, ACK_VERSION, KIND_STATUS, VERSION, down_topic
from gateway.anchor import epochs as anchor
from gateway.health import DISK_FULL, MB, Backoff, Registry, disk_full
from gateway.ingest import malloc, objects
from gateway.mqtt.client import new_client, v5_session
from gateway.store import database as store
from gateway.store import erasure
from gateway.wire import objects as wire_objects
from gateway.wire import protocol, verify
from gateway.wire.protocol import REPLAY, UNSTORABLE, Refused, Reject

log = logging.getLogger("edgekeep.ingest")

UP_FILTER = "ek/+/up/#"
RECEIVE_MAXIMUM = 1024   # unacked messages the broker may have out to one ingest
CHUNK_TOPIC = "/up/" + KIND_CHUNK
BATCH_MAX = 512
SPACE_CHECK = 1.0   # seconds between free-space checks, running or paused
VERIFY_THREADS = max(1, min(4, os.cpu_count() or 1))


class RateLimitedLog:
    """At most one line per reason per interval; says how many were held back."""

    def __init__(self, logger, interval=10.0):
        self.logger = logger
        self.interval = interval
        self.last = {}
        self.held = Counter()

    def warn(self, reason, text):
        now = time.monotonic()
        if now - self.last.get(reason, -1e9) < self.interval:
            self.held[reason] += 1
            return
        self.last[reason] = now
        held = self.held.pop(reason, 0)
        self.logger.warning("rejected (%s): %s%s", reason, text,
                            " (+%d more since last report)" % held if held else "")


class Ingest:
    def __init__(self, data_dir, broker, max_bytes=65536, epoch_seconds=10.0,
                 client_id="edgekeep-gateway", username=None, password=None,
                 on_sealed=None, object_keep_days=30, object_max_bytes=None,
                 min_free_bytes=0, health=None, group=None, lease=None):
        """group: share the uplinks with the other ingest workers of this group (an MQTT
        shared subscription); None: this ingest takes them all. lease: the worker's
        gateway.workers.LeaseHolder; epochs are sealed only while it holds the lease
        (None: always)."""
        self.store = store.Store.connect(data_dir)  # the write connection
        self.filter = UP_FILTER if group is None else "$share/%s/%s" % (group, UP_FILTER)
        self.lease = lease
        self.data_dir = data_dir
        self.objects = objects.ObjectStore.open(self.store, object_keep_days, object_max_bytes)
        self.max_bytes = max_bytes
        self.epoch_seconds = epoch_seconds
        self.on_sealed = on_sealed or (lambda epoch: None)
        self.inbox = queue.Queue(maxsize=20000)
        self.rejects = Counter()
        self.stats = Counter()
        self.reject_log = RateLimitedLog(log)
        self.keys = {}
        self.acked = {}
        self._devices_store = store.Store.connect(data_dir)  # reloads come from other threads too
        self._devices_lock = threading.Lock()
        self._load_devices()
        self.pool = ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="verify")
        self._stop = threading.Event()
        # Disk full pauses the ingest (see _disk_paused): the batch in hand is kept, unacked.
        self.min_free_bytes = min_free_bytes
        self.paused = None          # None, or why the ingest takes no messages ("disk_full")
        self._held = None           # the batch a full disk stopped, retried on resume
        self._in_hand = 0           # messages of the batch being processed
        self._next_space_check = 0.0
        self._retry_at = 0.0
        self._retry = Backoff(2, 60)
        registry = health or Registry()
        self.health = registry.component("ingest", critical=True, fail_limit=5)
        self._worker = registry.thread("ingest", self._run, self._stop, critical=True,
                                       fail_limit=5)
        self.client, b = new_client(broker, client_id, username, password, v5=True)
        self.host, self.port = b.host, b.port
        self.last_progress = time.monotonic()
        self.client.manual_ack_set(True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 10)
        self.connected = threading.Event()

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout=15):
        malloc.keep_freed_memory()
        if erasure.ISAL is None:
            log.warning("ISA-L (libisal2) not found: chunks are erasure-coded with zfec, 7x "
                        "slower (apt-get install libisal2)")
        self.client.connect(self.host, self.port, keepalive=30, clean_start=False,
                            properties=v5_session(RECEIVE_MAXIMUM))
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise RuntimeError("ingest: no CONNACK from broker %s:%d" % (self.host, self.port))
        self._worker.start()

    def stop(self):
        """Finish the batch in hand, disconnect, seal the last epoch.

        Messages received but not yet processed were never PUBACKed, so the broker hands
        them to this persistent session again on the next start.
        """
        self._stop.set()
        if self._worker.ident is not None:
            self._worker.join()
        self.client.disconnect()
        self.client.loop_stop()
        self.pool.shutdown()
        try:
            self.seal_epoch()
        except Exception as e:
            if not disk_full(e):
                raise
            log.warning("last epoch not sealed: disk full (%s); it is sealed on the next start", e)
        self.objects.provider.close()
        self._devices_store.close()

    def is_connected(self):
        return self.client.is_connected()

    def reload_devices(self):
        """Pick up registrations and revocations made by other processes."""
        self._load_devices()

    # -- MQTT callbacks (paho's thread) ------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker refused the gateway: %s", reason_code)
            return
        if self.filter != UP_FILTER:  # a session from before the workers had the plain one
            client.unsubscribe(UP_FILTER)
        client.subscribe(self.filter, qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        self.stats["received"] += 1
        self.inbox.put((msg.topic, msg.payload, msg.mid, msg.qos))

    def inflight(self):
        """(messages taken from the broker and not yet acked, seconds since the last batch
        committed while there were any): what a worker reports of its backlog."""
        waiting = self.inbox.qsize() + (len(self._held) if self._held else self._in_hand)
        return waiting, (time.monotonic() - self.last_progress) if waiting else 0.0

    # -- worker ----------------------------------------------------------------

    def _run(self):
        """The worker's loop, supervised (gateway/health.py): an exception that escapes it
        is logged and counted, and the loop restarts after a back-off with the batch it
        had in hand (never PUBACKed, so nothing is lost meanwhile). A full disk is not a
        failure: the ingest pauses (_disk_paused) and retries the same batch on resume."""
        next_seal = time.monotonic() + self.epoch_seconds
        next_reload = time.monotonic() + 2
        while not self._stop.is_set():
            if self._disk_paused():
                self._stop.wait(SPACE_CHECK)
                continue
            batch, self._held = self._held or self._take_batch(), None
            self._in_hand = len(batch)
            if batch:
                try:
                    self.process(batch)
                except Exception as e:
                    self._held = batch  # not acked: retried after the pause or the restart
                    if not disk_full(e):
                        raise
                    self._pause_disk_full(e)
                    continue
                for _, _, mid, qos in batch:
                    if qos:
                        self.client.ack(mid, qos)
                self._retry.reset()
                self.health.progress()
                self._in_hand = 0
                self.last_progress = time.monotonic()
            now = time.monotonic()
            if now >= next_reload:
                self._load_devices()
                next_reload = now + 2
            if now >= next_seal:
                try:
                    self.seal_epoch()
                except Exception as e:
                    if not disk_full(e):
                        raise
                    self._pause_disk_full(e)
                    continue  # sealed after the pause
                next_seal = now + self.epoch_seconds

    # -- disk full: pause, resume --------------------------------------------------

    def _free_bytes(self):
        return shutil.disk_usage(self.data_dir).free

    def _disk_paused(self):
        """True while the ingest must not take messages: free space on the data directory's
        filesystem below min_free_bytes, or a write failed with the disk full and its retry
        time has not come. Checked every SPACE_CHECK seconds; resumes by itself."""
        now = time.monotonic()
        if now < self._next_space_check:
            return self.paused is not None
        self._next_space_check = now + SPACE_CHECK
        free = self._free_bytes()
        if self.min_free_bytes and free < self.min_free_bytes:
            self._pause(free, "below the %d MB minimum (min_free_bytes)"
                        % (self.min_free_bytes // MB))
            self._retry_at = 0.0
            return True
        if self.paused is None:
            return False
        if now < self._retry_at:
            return True
        log.warning("ingest resumed: %d MB free on %s; taking messages again",
                    free // MB, self.data_dir)
        self.paused = None
        self.health.resume()
        return False

    def _pause_disk_full(self, exc):
        """A write failed with the disk full: cleanup has run, nothing was acked; pause and
        retry after a back-off (2 s doubling to 60 s) or once space is above the minimum."""
        self._retry_at = time.monotonic() + self._retry.next()
        self._next_space_check = 0.0
        self._pause(self._free_bytes(), "a write failed: %s" % str(exc)[:200])

    def _pause(self, free, why):
        detail = "disk full, %d MB free" % (free // MB)
        if self.paused is None:
            log.warning("ingest paused: %s on %s, %s; messages wait on the devices and in the "
                        "broker, and the ingest resumes by itself when space is freed",
                        detail, self.data_dir, why)
        self.paused = DISK_FULL
        self.health.pause(DISK_FULL, detail)

    def _take_batch(self):
        try:
            first = self.inbox.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < BATCH_MAX:  # what came in meanwhile: batches grow with the load
            try:
                batch.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        return batch

    def process(self, batch):
        """Verify, sequence-check and store one batch; then ack the devices.

        Each signed message is stored in its own savepoint (`_store`): one that passes its
        checks but cannot be stored is undone alone and refused, and the rest of the batch
        commits. A message refused after its signature verified (protocol.Refused:
        out_of_range, bad_health, bad_manifest, unstorable) is recorded like a gap and acked
        past, its sequence listed in the ack's ACK_REJECTED so the device drops it."""
        verified = []
        rejects = Counter()
        for outcome in self._verify_all(batch):
            if isinstance(outcome, Reject) and not isinstance(outcome, Refused):
                rejects[outcome.reason] += 1
                self.reject_log.warn(outcome.reason, outcome.detail)
            else:
                verified.append(outcome)  # Refused ones are recorded in the transaction
        now = time.time()
        to_ack = set()
        refused = {}  # device -> sequences refused (again) in this batch
        stored = duplicates = 0
        try:
            with self.store.transaction():
                self.acked.update(self.store.acked_of(_devices(verified)))
                known = self.store.message_digests(
                    (item[1].device, item[1].seq) for item in verified if type(item) is tuple)
                telemetry = []   # the new telemetry's rows, inserted together after the loop
                bases = {}
                for item in verified:
                    try:
                        if isinstance(item, wire_objects.Chunk):
                            self.objects.add_chunk(item, now)
                            continue
                        if not isinstance(item, Refused):
                            signed, env = item
                            try:
                                if self._store(signed, env, now, known, telemetry):
                                    stored += 1
                                    bases[env.device] = max(bases.get(env.device, 0), env.base)
                                else:
                                    duplicates += 1
                                to_ack.add(env.device)
                                continue
                            except Refused as r:
                                item = r
                        if self._refuse(item, now):
                            rejects[item.reason] += 1
                            self.reject_log.warn(item.reason, item.detail)
                        else:
                            duplicates += 1  # refused already: acked again, dropped
                        refused.setdefault(item.device, set()).add(item.seq)
                        to_ack.add(item.device)
                    except Reject as r:
                        rejects[r.reason] += 1
                        self.reject_log.warn(r.reason, r.detail)
                for r in self._insert(telemetry):
                    stored -= 1
                    self._refuse(r, now)   # new: neither stored nor refused before
                    rejects[r.reason] += 1
                    self.reject_log.warn(r.reason, r.detail)
                    refused.setdefault(r.device, set()).add(r.seq)
                acked, released = {}, {}
                for dev in to_ack:
                    acked[dev] = self._advance(dev, bases.get(dev, 0), now)
                    released[dev] = self._released(dev, acked[dev], refused.get(dev, ()))
                self.store.set_acked(acked, now)
                rejects.update(self.objects.take_rejects())  # pending chunks a manifest refused
                self.store.add_rejects(rejects)
                self.store.add_counts({"duplicates": duplicates})
                self.objects.flush()
        except BaseException:
            self.objects.discard()
            raise
        self.objects.publish(self.client)
        self.acked.update(acked)
        self.rejects.update(rejects)
        self.stats["stored"] += stored
        self.stats["duplicates"] += duplicates
        for dev, seq in acked.items():
            ack = {ACK_VERSION: VERSION, ACK_SEQ: seq}
            if released[dev]:
                ack[ACK_REJECTED] = released[dev]
            self.client.publish(down_topic(dev, "ack"), cbor.dumps(ack), qos=1)
        self.stats["acks"] += len(acked)

    def _verify_all(self, batch):
        """The outcome of each message, in order. Signatures are checked all over the pool:
        OpenSSL releases the GIL for nearly all of a check. A camera chunk's hash and erasure
        coding release it for only about half its time, so a batch's chunks go to one
        thread: two would mostly wait on each other, and on the MQTT and worker threads
        (bench/camera, 300 paired uploads: 0.3 ms less per 2 MB clip on 2 cores)."""
        is_chunk = [topic.endswith(CHUNK_TOPIC) for topic, _, _, _ in batch]
        signed = [m for m, chunk in zip(batch, is_chunk) if not chunk]
        step = -(-len(signed) // VERIFY_THREADS) or 1
        parts = [[m for m, chunk in zip(batch, is_chunk) if chunk]]
        parts += [signed[i:i + step] for i in range(0, len(signed), step)]
        done = list(self.pool.map(self._verify_part, parts))
        chunks, others = iter(done[0]), itertools.chain(*done[1:])
        return [next(chunks) if chunk else next(others) for chunk in is_chunk]

    def _verify_part(self, items):
        out = []
        for topic, raw, _, _ in items:
            try:
                out.append(self.check(topic, raw))
            except Reject as r:
                out.append(r)
        return out

    def check(self, topic, raw):
        """The ingest's check of one uplink: a chunk ready to store, or (signed, envelope)
        through the one verification path; Reject with the reason otherwise."""
        if topic.endswith(CHUNK_TOPIC):  # not signed: bound by its signed manifest
            chunk = wire_objects.parse_chunk(topic, raw, self.max_bytes)
            verify.check_key(chunk.device, self._key(chunk.device))
            return self.objects.prepare(chunk)
        signed = verify.check_message(topic, raw, self._key(_device_of(topic)),
                                      self.max_bytes)
        return signed, protocol.open_envelope(signed)

    UNKNOWN_RELOAD = 0.5   # seconds: at most one reload this often for unknown devices

    def _key(self, dev):
        """The device's key; for a device not known yet, reload the table first (it may
        have been registered since the last reload: its first message is not refused)."""
        key = self.keys.get(dev)
        if key is None and dev:
            self._load_devices(unknown=dev)
            key = self.keys.get(dev)
        return key

    def _store(self, signed, env, now, known, telemetry):
        """Take a new message: telemetry goes into rows for _insert, a manifest or a status
        is inserted (with its object or its health) in its own savepoint. known: the batch's
        stored {(device, seq): digest}, which this keeps up to date. False for a duplicate
        (acked and dropped). Reject(REPLAY) for a sequence already taken; Refused for a
        signed message that cannot be stored (bad_manifest, unstorable), with whatever it
        wrote undone, or for a refused one sent again."""
        digest = signed.digest
        stored = known.get((env.device, env.seq))
        if stored is not None:
            if stored != digest:
                raise Reject(REPLAY, "device %s reused sequence %d with other content"
                             % (env.device, env.seq))
            return False
        if env.seq <= self.acked.get(env.device, 0):
            if self.store.refused_digest(env.device, env.seq) == digest:
                raise Refused(UNSTORABLE, "refused already", env.device, env.seq, digest)
            raise Reject(REPLAY, "device %s sequence %d is behind its acked %d"
                         % (env.device, env.seq, self.acked[env.device]))
        row = (env.device, env.seq, env.kind, env.time, env.count, digest, signed.raw, now)
        try:
            manifest = (wire_objects.parse_manifest(signed.payload)
                        if env.kind == KIND_MANIFEST else None)
            health = env.health if env.kind == KIND_STATUS else None
            if manifest is None and health is None:
                telemetry.append(row)
            else:
                with self.objects.savepoint():  # the store's, and the objects' events
                    self.store.add_message(*row)
                    if health is not None:
                        self.store.set_health(env.device, dict(health))
                    if manifest:
                        self.objects.register(env, manifest, now)
        except Reject as r:  # the manifest's object map: signed, so refused and acked past
            raise Refused(r.reason, r.detail, env.device, env.seq, digest)
        except Exception as e:
            raise _unstorable(e, row)
        known[env.device, env.seq] = digest
        return True

    def _insert(self, rows):
        """Insert the batch's new telemetry rows in one statement; if that fails, each in its
        own savepoint: a row that cannot be stored is undone alone. The Refused of those."""
        if not rows:
            return []
        try:
            with self.store.savepoint():
                self.store.add_messages(rows)
            return []
        except Exception as e:
            if store.environmental(e):
                raise
        refused = []
        for row in rows:
            try:
                with self.store.savepoint():
                    self.store.add_messages([row])
            except Exception as e:
                refused.append(_unstorable(e, row))
        return refused

    def _refuse(self, r, now):
        """Record Refused r (a signed message the gateway will not store) so that acked moves
        past its sequence: True, or False if that very message was refused already.
        Reject(REPLAY) if its sequence holds another message or is acked already."""
        seen = self.store.refused_digest(r.device, r.seq)
        if seen is not None:
            if seen != r.digest:
                raise Reject(REPLAY, "device %s reused refused sequence %d with other content"
                             % (r.device, r.seq))
            return False
        if (r.seq <= self.acked.get(r.device, 0)
                or self.store.message_digest(r.device, r.seq) is not None):
            raise Reject(REPLAY, "device %s sequence %d is taken (refused: %s)"
                         % (r.device, r.seq, r.detail))
        self.store.add_refused(r.device, r.seq, r.digest, r.reason, r.detail[:500], now)
        return True

    def _released(self, dev, acked, again):
        """The refused sequences the device's new ack releases: those recorded above its
        last ack up to the new one, and those refused again in this batch."""
        seqs = set(self.store.refused_seqs(dev, self.acked.get(dev, 0), acked))
        return sorted(seqs.union(s for s in again if s <= acked))

    def _advance(self, dev, base, now):
        """The new highest contiguous sequence; what the device says it dropped is a gap.
        Sequences the gateway refused count as done (they are neither stored nor lost)."""
        acked = self.acked.get(dev, 0)
        if base - 1 > acked:
            stored = self.store.stored_seqs(dev, acked, base)
            prev = acked
            for seq in stored + [base]:
                if seq > prev + 1:
                    self.store.add_gap(dev, prev + 1, seq - 1, now)
                    log.warning("device %s: sequences %d..%d lost on the device", dev,
                                prev + 1, seq - 1)
                prev = seq
            acked = base - 1
        return self.store.contiguous_seq(dev, acked)

    def seal_epoch(self):
        """Seal the next epoch if this worker holds the lease (retention first); the epoch,
        or None."""
        if self.lease is not None and not self.lease.held:
            return None
        self.objects.retain()
        epoch = anchor.seal_epoch(self.store, self.lease and self.lease.fence)
        if epoch is not None:
            self.on_sealed(epoch)
        return epoch

    def _load_devices(self, unknown=None):
        """The worker reloads every 2 s and reload_devices() may come meanwhile: one at a
        time, so a reload that read the table before a registration cannot replace the keys
        of one that read it after (the new device would be unknown until the next).

        unknown: a device id check() does not know. Reloads for those come at most every
        UNKNOWN_RELOAD seconds, whatever the ids (a flood of them costs two reads a second);
        a check that waited here while another reloaded finds its key without one."""
        with self._devices_lock:
            if unknown is not None:
                now = time.monotonic()
                if unknown in self.keys or now < getattr(self, "_unknown_reload_at", 0.0):
                    return
                self._unknown_reload_at = now + self.UNKNOWN_RELOAD
            keys, acked = {}, {}
            for dev, pub, status, seq in self._devices_store.device_keys():
                old = self.keys.get(dev)
                if status != "active":
                    keys[dev] = protocol.REVOKED
                elif old is not None and old != protocol.REVOKED:
                    keys[dev] = old
                else:
                    keys[dev] = protocol.load_public_key(pub)
                acked[dev] = seq
            self.keys = keys
            for dev, seq in acked.items():
                self.acked.setdefault(dev, seq)


def _unstorable(error, row):
    """Refused(UNSTORABLE) for the message of row that error kept out of the store; error
    is raised again if it would fail any message (the disk, the database): the batch fails."""
    if store.environmental(error):
        raise error
    device, seq, digest = row[0], row[1], row[5]
    return Refused(UNSTORABLE, "device %s sequence %d: %s: %s" % (
        device, seq, type(error).__name__, str(error)[:200]), device, seq, digest)


def _devices(verified):
    """The devices of a batch's signed messages and refusals (chunks have no sequence)."""
    for item in verified:
        if isinstance(item, Refused):
            yield item.device
        elif not isinstance(item, wire_objects.Chunk):
            yield item[1].device


def _device_of(topic):
    """The device id an uplink topic names ("" if none: the parse rejects the topic)."""
    m = protocol.UP_TOPIC.match(topic)
    return m.group(1) if m else ""
