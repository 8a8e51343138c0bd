"""OTA on the gateway: offer a signed bundle to devices, send the chunks each asks for, and
wait for each to confirm the new release (docs/protocol.md, "OTA"; the device side is
agent/ota.py and agent/ota_receive.py).

The device drives the transfer: it answers an offer, and every reconnect, with the chunks
it still needs, so a transfer resumes where it stopped and only missing chunks go again.
"""
import json
import logging
import os
import queue
import time

from agent import cbor, ota
from agent import ota_receive as rx
from agent.proto import down_topic
from firmware import bundle
from gateway.mqtt.client import new_client
from gateway.wire import protocol

log = logging.getLogger("edgekeep.ota")

REPORTS = "ek/+/up/" + ota.KIND
REOFFER = 30.0           # s without a word from a device before the offer goes again
DEFAULT_CHUNK = 2048     # fits the device client's 16 KiB packets with room to spare
DONE_OK = ("confirmed", "current")
DONE_FAILED = ("refused", "rolled back")


class Release:
    """A bundle as OTA sends it. Release(dir) trusts nothing; verified() checks it first."""

    def __init__(self, bundle_dir, chunk_size=DEFAULT_CHUNK):
        if not 0 < chunk_size <= rx.MAX_CHUNK:
            raise ValueError("chunk size must be 1..%d bytes" % rx.MAX_CHUNK)
        self.dir = bundle_dir
        self.chunk_size = chunk_size
        with open(os.path.join(bundle_dir, bundle.MANIFEST), "rb") as f:
            self.manifest_bytes = f.read()
        with open(os.path.join(bundle_dir, bundle.SIGNATURE)) as f:
            self.signature = bytes.fromhex(f.read().strip())
        manifest = json.loads(self.manifest_bytes)
        if manifest.get("runtime") != "micropython":
            raise ValueError("bundle %s is for %s, which runs CPython: OTA updates MicroPython "
                             "devices" % (bundle_dir, manifest.get("board")))
        self.version = manifest["version"]
        rx.parse_version(self.version)
        self.size = sum(f["size"] for f in manifest["files"].values())
        self.table, self.count = rx.layout(manifest["files"], chunk_size)

    @classmethod
    def verified(cls, bundle_dir, public_key, chunk_size=DEFAULT_CHUNK):
        """The release, once its signature is public_key's and every file matches it."""
        bundle.load(bundle_dir, public_key)
        return cls(bundle_dir, chunk_size)

    def offer(self, force=False):
        return cbor.dumps({rx.OFFER_VERSION: rx.VERSION, rx.OFFER_MANIFEST: self.manifest_bytes,
                           rx.OFFER_SIGNATURE: self.signature, rx.OFFER_CHUNK: self.chunk_size,
                           rx.OFFER_FORCE: force})

    def chunk(self, index):
        path, offset, length = rx.locate(self.table, self.chunk_size, index)
        with open(os.path.join(self.dir, path), "rb") as f:
            f.seek(offset)
            data = f.read(length)
        return cbor.dumps([self.version, index, data])


class Progress:
    """What a Pusher tells as it goes; this one logs. `ota push` prints (cli/ota_progress.py)."""

    def step(self, device, text):
        """A step of the device's transfer: offered, installing, confirmed, ..."""
        log.info("%s: %s", device, text)

    def need(self, device, count):
        """The device asked for count chunks; chunk_sent follows for each."""

    def chunk_sent(self, device):
        """The broker took one of the chunks the device asked for (its PUBACK)."""


class Transfer:
    """One device's update: what has happened, and what to send next. publish(topic, payload,
    chunk_of=None): chunk_of names the device a chunk is for."""

    def __init__(self, device, release, force, progress):
        self.device = device
        self.release = release
        self.force = force
        self.progress = progress
        self.topic = down_topic(device, "ota")
        self.state = "offered"
        self.why = None
        self.sent = 0            # chunks published
        self.last_seq = 0
        self.heard = 0.0         # when the device last reported, or the offer went out

    @property
    def done(self):
        return self.state in DONE_OK + DONE_FAILED

    @property
    def ok(self):
        return self.state in DONE_OK

    def offer(self, publish, now):
        publish(self.topic, self.release.offer(self.force))
        self.heard = now

    def on_report(self, seq, report, publish, now):
        if report.get("ota") not in (self.release.version, "?") or seq <= self.last_seq:
            return  # about another release, or older than what was handled
        self.last_seq = seq
        self.heard = now
        st = report.get("st")
        if st == "need":
            indexes = [i for first, last in report.get("need", ())
                       for i in range(first, last + 1) if 0 <= i < self.release.count]
            self.progress.step(self.device, "needs %d of %d chunks"
                               % (len(indexes), self.release.count))
            self.progress.need(self.device, len(indexes))
            for i in indexes:
                publish(self.topic, self.release.chunk(i), self.device)
            self.sent += len(indexes)
            return
        if st not in ("installing",) + DONE_OK + DONE_FAILED:
            return
        self.state = st
        self.why = report.get("why")
        self.progress.step(self.device, {"installing": "verified %s, installing and rebooting",
                               "confirmed": "confirmed %s",
                               "current": "already runs %s",
                               "refused": "refused %s",
                               "rolled back": "rolled back %s"}[st] % self.release.version
                 + (": " + self.why if self.why else ""))

    def tick(self, publish, now):
        """Offer again when the device has been silent (offline, or the offer was lost);
        not while it installs, when it is rebooting."""
        if self.state == "offered" and now - self.heard >= REOFFER:
            self.offer(publish, now)


class Pusher:
    """Runs transfers to many devices over one MQTT connection. keys: device id -> its
    65-byte public key, to check the reports' signatures."""

    def __init__(self, broker, keys, username=None, password=None, progress=None,
                 client_id=None):
        self.keys = {dev: protocol.load_public_key(pub) for dev, pub in keys.items()}
        self.progress = progress or Progress()
        self.unacked = []        # (paho MessageInfo, device) of the chunks not yet PUBACKed
        self.reports = queue.Queue()
        self.client, b = new_client(broker, client_id or "edgekeep-ota-%d" % os.getpid(),
                                    username, password)
        self.client.on_message = lambda c, u, msg: self.reports.put((msg.topic, msg.payload))
        self.host, self.port = b.host, b.port

    def run(self, release, devices, force=False, timeout=900.0):
        """Update devices; returns {device: Transfer} once all are done or timeout passes."""
        self.connect()
        try:
            transfers = {dev: Transfer(dev, release, force, self.progress) for dev in devices}
            for t in transfers.values():
                self.start(t)
            end = time.monotonic() + timeout
            while not all(t.done for t in transfers.values()) and time.monotonic() < end:
                self.pump(transfers)
            return transfers
        finally:
            self.close()

    def connect(self):
        """Connect and subscribe to the devices' reports (queue.Empty if the broker does not
        confirm the subscription, OSError if it cannot be reached)."""
        subscribed = queue.Queue()
        self.client.on_subscribe = lambda *a: subscribed.put(True)
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self.client.subscribe(REPORTS, qos=1)
        subscribed.get(timeout=15)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()

    def know(self, device, public_key):
        """Check the reports of device (one added after the Pusher was made) with its key."""
        self.keys[device] = protocol.load_public_key(public_key)

    def start(self, transfer):
        """Offer the transfer's release to its device."""
        release = transfer.release
        transfer.offer(self._publish, time.monotonic())
        self.progress.step(transfer.device, "offered %s (%d files, %d bytes, %d chunks)" % (
            release.version, len(release.table), release.size, release.count))

    def pump(self, transfers):
        """One round: a report handled (waiting up to 0.5 s for one), the chunks the broker
        took told, and an offer again to each device silent too long."""
        self._handle_reports(transfers)
        self._tell_chunks_sent()
        for t in transfers.values():
            if not t.done:
                t.tick(self._publish, time.monotonic())

    def _handle_reports(self, transfers):
        try:
            topic, raw = self.reports.get(timeout=0.5)
        except queue.Empty:
            return
        try:
            signed = protocol.parse(topic, raw, 65536)
            transfer = transfers.get(signed.device)
            if transfer is None or transfer.done:
                return
            protocol.verify_signature(signed, self.keys[signed.device])
            env = protocol.open_envelope(signed)
        except protocol.Reject as r:
            log.warning("ignored a report: %s", r)
            return
        transfer.on_report(env.seq, dict(env.health or {}), self._publish, time.monotonic())

    def _publish(self, topic, payload, chunk_of=None):
        info = self.client.publish(topic, payload, qos=1)
        if chunk_of:
            self.unacked.append((info, chunk_of))

    def _tell_chunks_sent(self):
        still = []
        for info, device in self.unacked:
            if info.is_published():
                self.progress.chunk_sent(device)
            else:
                still.append((info, device))
        self.unacked = still
