# The agent loop: sample, batch, seal, spool, publish, and forget only what the gateway
# has acked as durably stored. Runs unchanged on MicroPython and CPython; the transport,
# the sensors and the clock are passed in.
from agent import cbor, clock, message
from agent.heap import collect
from agent.proto import (
    ACK_REJECTED,
    ACK_SEQ,
    ACK_VERSION,
    KIND_STATUS,
    KIND_TELEMETRY,
    VERSION,
    down_topic,
    up_topic,
)
from agent.readings import Batch

DEFAULTS = {
    "sample_interval": 10,   # s between readings (Pebble's default)
    "upload_interval": 30,   # s between batches
    "batch_max": 64,         # readings per batch at most (one signature each)
    "spool_bytes": 65536,    # flash budget for unacked messages
    "ack_timeout": 20,       # s before an unacked message is sent again
    "window": 8,             # messages in flight without an ack
    "status_every": 10,      # a status message every N batches (and at boot)
    "reconnect_max": 30,     # s, cap of the reconnect back-off
    "share": (),             # reading fields sent in plaintext for Home Assistant (opt-in)
}


def config_with_defaults(cfg):
    out = dict(DEFAULTS)
    out.update(cfg)
    return out


class Agent:
    def __init__(self, identity, transport, sensors, spool, config, urandom,
                 firmware="0.1.0", log=print):
        self.identity = identity
        self.transport = transport
        self.sensors = sensors
        self.spool = spool
        self.cfg = config_with_defaults(config)
        self.nonces = message.Nonces(urandom)
        self.batch = Batch(self.cfg["batch_max"])
        self.firmware = firmware
        self.log = log
        self.ack_topic = down_topic(identity.hex, "ack")
        self.sent = {}          # seq -> monotonic time it was last published
        self.session = -1       # transport session the sent times belong to
        self.lost = None        # why the link last dropped, as logged
        self.batches = 0
        self.battery = None
        self.shared = None      # the latest reading, kept only when the config shares fields
        self.bad_downlinks = 0  # downlinks ignored as malformed (health "bad")
        self.rejected = 0       # sequences the gateway refused although signed (health "rej")
        self.notes = {}         # more health keys for the status message (agent/ota.py: "ota")
        now = clock.monotonic()
        self.started = now
        self.next_sample = now
        self.next_upload = now + self.cfg["upload_interval"]
        self.retry_at = now
        self.backoff = 1
        self.status_due = True
        transport.on_message = self.downlink

    # -- the loop --------------------------------------------------------------

    def run(self, duration=None, stopped=None, flush_timeout=15):
        end = None if duration is None else clock.monotonic() + duration
        while not (stopped and stopped()):
            collect()
            wait = self.step()
            if end is not None and clock.monotonic() >= end:
                break
            self.transport.poll(max(0.0, min(wait, 0.5)))
        self.flush(flush_timeout)

    def flush(self, timeout):
        """Seal what is batched and deliver everything queued: a clean stop loses nothing."""
        if self.batch.count:
            self.seal_batch()
        end = clock.monotonic() + timeout
        while self.spool.pending() and clock.monotonic() < end:
            collect()
            self.pump(clock.monotonic())
            self.transport.poll(0.2)

    def step(self):
        """Do whatever is due; returns the seconds until something else is."""
        now = clock.monotonic()
        if now >= self.next_sample:
            self.sample()
            self.next_sample += self.cfg["sample_interval"]
            if self.next_sample < now:  # fell behind: skip, don't burst
                self.next_sample = now + self.cfg["sample_interval"]
        if self.batch.count and (now >= self.next_upload or self.batch.full()):
            self.seal_batch()
            self.next_upload = now + self.cfg["upload_interval"]
        if self.status_due:
            self.seal_status()
        self.pump(now)
        return min(self.next_sample, self.next_upload) - clock.monotonic()

    # -- producing -------------------------------------------------------------

    def sample(self):
        reading = self.sensors.read()
        self.battery = reading.get("batt")
        if self.cfg.get("share"):
            self.shared = reading
        self.batch.add(clock.unix_time(), reading)

    def seal_batch(self):
        self._spool(KIND_TELEMETRY, self.batch.t0, self.batch.plaintext(), self.batch.count, None)
        self.batch.clear()
        self.batches += 1
        if self.batches % self.cfg["status_every"] == 0:
            self.status_due = True

    def seal_status(self):
        pending = self.spool.pending()
        health = {"fw": self.firmware, "up": int(clock.monotonic() - self.started),
                  "q": len(pending), "qb": self.spool.bytes_used(), "drop": self.spool.drops,
                  "bad": self.bad_downlinks, "rej": self.rejected}
        if self.battery is not None:
            health["batt"] = self.battery
        if self.shared:
            health["share"] = dict((k, self.shared.get(k)) for k in self.cfg["share"])
        health.update(self.notes)
        self._spool(KIND_STATUS, int(clock.unix_time()), None, None, health)
        self.status_due = False

    def _spool(self, kind, t, plaintext, count, health):
        seq = self.spool.next_seq()
        msg = message.seal(self.identity, self.nonces, seq, t, kind, self.spool.base(),
                           plaintext, count, health)
        collect()  # the sealing's garbage, before the record copies the message
        self.spool.append(seq, kind.encode() + msg)

    # -- delivering ------------------------------------------------------------

    def pump(self, now):
        t = self.transport
        if not t.connected:
            if now >= self.retry_at:
                self._connect(now)
            if not t.connected:
                return
        if t.session != self.session:
            self.session = t.session
            self.sent = {}  # a new session: everything unacked goes again
        in_flight = 0
        for seq in self.spool.pending():
            at = self.sent.get(seq)
            if at is not None and now - at < self.cfg["ack_timeout"]:
                in_flight += 1
                continue
            if in_flight >= self.cfg["window"]:
                break
            collect()  # one record in memory at a time
            record = self.spool.read(seq)
            try:
                t.publish(up_topic(self.identity.hex, chr(record[0])), memoryview(record)[1:])
            except OSError as e:
                self.log("publish failed: %s" % e)
                return
            self.sent[seq] = now
            in_flight += 1

    def _connect(self, now):
        t = self.transport
        lost = getattr(t, "disconnect_reason", None)
        if lost and lost != self.lost:
            self.log("link lost (%s), reconnecting" % lost)
        self.lost = lost
        try:
            t.subscribe(down_topic(self.identity.hex, "#"))  # goes with the CONNECT
            t.connect()
            self.backoff = 1
        except OSError as e:
            self.log("connect failed (%s), retry in %d s" % (e, self.backoff))
            self.retry_at = now + self.backoff
            self.backoff = min(self.backoff * 2, self.cfg["reconnect_max"])

    # -- downlinks -------------------------------------------------------------
    #
    # Only the gateway's account may publish on the device's down topics, but a device must
    # outlive any byte that reaches it: every handler checks what it decoded, a malformed
    # downlink is counted (health "bad"), logged and ignored, and nothing a handler raises
    # reaches the transport (whose QoS 1 PUBACK follows the handler: a poison message
    # would otherwise come back at every reconnect) or the loop.

    def downlink(self, topic, payload):
        """The transport's on_message: on_message (which subclasses extend), guarded. Out of
        memory, it collects and tries once more (the handlers are idempotent: an ack, a chunk
        ack, an OTA chunk or the same offer again): a port that collects only when asked may
        have the room, and a good offer must not be lost to a full heap."""
        try:
            try:
                self.on_message(topic, payload)
            except MemoryError:
                collect()
                self.on_message(topic, payload)
        except Exception as e:
            self.bad_downlink(topic, e)

    def bad_downlink(self, topic, why):
        self.bad_downlinks += 1
        try:
            self.log("bad downlink on %s: %s" % (topic, why))
        except MemoryError:
            pass

    def on_message(self, topic, payload):
        """Handle one downlink; True if it was a good ack."""
        if topic == self.ack_topic:
            why = self.on_ack(payload)
            if why:
                self.bad_downlink(topic, why)
            return not why
        return False

    def on_ack(self, payload):
        """Apply an ack {0: 1, 2: acked, 3: [rejected, ...]}; returns why it is malformed, or
        None. A stale ack (below what is already acked) is no error: it is just old."""
        try:
            ack = cbor.loads(payload)
        except ValueError as e:
            return e
        if not isinstance(ack, dict) or ack.get(ACK_VERSION) != VERSION:
            return "not an ack map of version 1"
        seq = ack.get(ACK_SEQ)
        if not _is_uint(seq) or seq > self.spool.last_seq:
            return "acked seq %r is not 0..%d" % (seq, self.spool.last_seq)
        rejected = ack.get(ACK_REJECTED, ())
        if not isinstance(rejected, (list, tuple)):
            return "rejected is not a list"
        for s in rejected:
            if not _is_uint(s) or not 0 < s <= seq:
                return "rejected seq %r is not 1..%d" % (s, seq)
        previous = self.spool.acked
        for s in sorted(set(rejected)):
            if s > previous:  # released by this ack: each counted once, however often acked
                self.rejected += 1
                self.log("gateway refused seq %d (signed, unstorable)" % s)
        self.spool.ack(seq)
        for s in list(self.sent):
            if s <= seq:
                del self.sent[s]
        return None


def _is_uint(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0
