"""A device outlives any byte on its down topics (issue "Never silently stop", 6 and 7): every
malformed downlink is counted (status health `bad`), logged and ignored, on CPython and on
MicroPython, and the device's data keeps arriving and verifying. fuzz/corpus.py holds the
payloads; fuzz/downlinks.py the handlers on a fake transport."""
import os
import textwrap
import threading
import time

import pytest

from agent import cbor
from agent.identity import Identity
from agent.proto import ACK_REJECTED, ACK_SEQ, ACK_VERSION, down_topic
from fuzz.corpus import MALFORMED, corpus
from tests.helpers.mqtt import Peer
from tests.helpers.wait import wait_for

PAYLOADS = list(MALFORMED.values())


# -- the decoder -----------------------------------------------------------------------

@pytest.mark.unit
def test_cbor_loads_raises_only_value_error_on_a_mutated_corpus():
    outcomes = {"ok": 0, "ValueError": 0}
    for data in corpus(5000):
        try:
            cbor.loads(data)
            outcomes["ok"] += 1
        except ValueError:
            outcomes["ValueError"] += 1
    assert outcomes["ok"] > 100 and outcomes["ValueError"] > 1000  # both paths exercised


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(n for n in MALFORMED
                                        if not n.startswith(("ack ", "chunk ack", "ota "))))
def test_cbor_loads_refuses_each_malformed_item_with_value_error(name):
    if name in ("empty array", "{2: b''}", "a text string"):
        cbor.loads(MALFORMED[name])  # well formed, just not what any handler expects
        return
    with pytest.raises(ValueError):
        cbor.loads(MALFORMED[name])


@pytest.mark.unit
def test_cbor_loads_takes_only_bytes_and_bounds_its_work():
    for data in (None, "a1c10000", 5, [1]):
        with pytest.raises(ValueError):
            cbor.loads(data)
    with pytest.raises(ValueError, match="truncated"):  # no 2^64-byte allocation first
        cbor.loads(bytes.fromhex("5bffffffffffffffff") + b"x" * 100)
    with pytest.raises(ValueError, match="deep"):
        cbor.loads(b"\x81" * 100000 + b"\x00")
    with pytest.raises(ValueError, match="key"):
        cbor.loads(bytes.fromhex("a1800000"))   # a list as a key
    with pytest.raises(ValueError, match="duplicate"):
        cbor.loads(bytes.fromhex("a2020002 01".replace(" ", "")))


# -- the handlers, in process --------------------------------------------------------------

@pytest.fixture
def harness(tmp_path, monkeypatch):
    from fuzz.downlinks import Harness
    monkeypatch.chdir(tmp_path)
    return Harness(str(tmp_path))


@pytest.mark.unit
@pytest.mark.parametrize("agent_name,topics", [("tracker", ("ack", "ota")),
                                               ("camera", ("ack", "chunks"))])
def test_every_malformed_downlink_is_counted_and_the_agent_carries_on(harness, agent_name,
                                                                      topics):
    agent = getattr(harness, agent_name)
    spool = agent.spool
    acked, last = spool.acked, spool.last_seq
    for topic in topics:
        for name, payload in MALFORMED.items():
            before = agent.bad_downlinks
            agent.downlink(down_topic(agent.identity.hex, topic), payload)  # as the transport calls it
            assert agent.bad_downlinks == before + 1, (topic, name)
    assert agent.bad_downlinks == len(topics) * len(MALFORMED)
    assert spool.acked == acked and spool.pending()  # nothing was acked by any of it
    assert spool.last_seq >= last
    if agent_name == "camera":
        assert agent.objects.entries  # the object is still queued
    else:
        assert agent.updater.receiver.release == "9.9.9"  # the transfer under way is intact
    agent.seal_status()
    health = _last_health(agent)
    assert health["bad"] == len(topics) * len(MALFORMED) and health["rej"] == 0


@pytest.mark.unit
def test_an_exception_in_a_handler_is_counted_not_raised(harness, monkeypatch):
    agent = harness.tracker

    def boom(payload):
        raise MemoryError("no room")
    monkeypatch.setattr(agent, "on_ack", boom)
    agent.downlink(agent.ack_topic, cbor.dumps({0: 1, 2: 1}))
    assert agent.bad_downlinks == 1 and "no room" in harness.logs[-1]


@pytest.mark.unit
def test_rejected_sequences_are_counted_once_and_logged(harness):
    agent = harness.tracker
    last = agent.spool.last_seq
    assert last >= 3
    ack = cbor.dumps({ACK_VERSION: 1, ACK_SEQ: last, ACK_REJECTED: [2, 1, 2]})
    agent.downlink(agent.ack_topic, ack)
    agent.downlink(agent.ack_topic, ack)  # the same ack again: nothing new
    assert agent.rejected == 2 and agent.bad_downlinks == 0
    assert agent.spool.acked == last and not agent.spool.pending()
    assert any("refused seq 2" in line for line in harness.logs)
    agent.seal_status()
    assert _last_health(agent)["rej"] == 2


@pytest.mark.unit
def test_stale_and_legitimate_acks_are_not_bad(harness):
    agent = harness.tracker
    last = agent.spool.last_seq
    agent.downlink(agent.ack_topic, cbor.dumps({0: 1, 2: last}))
    agent.downlink(agent.ack_topic, cbor.dumps({0: 1, 2: 1}))      # stale: already acked
    agent.downlink(agent.ack_topic, cbor.dumps({0: 1, 2: 0, 3: []}))
    assert agent.bad_downlinks == 0 and agent.spool.acked == last


def _last_health(agent):
    """The health map of the newest status in the agent's spool."""
    import cbor2
    seq = agent.spool.last_seq
    record = agent.spool.read(seq)
    assert record[:1] == b"s"
    env = cbor2.loads(cbor2.loads(record[1:]).value[2])
    return env[8]


# -- running agents over Mosquitto, with the gateway's ingest -------------------------------

class LocalChain:
    """The keeper's chain interface answered from the store itself: device keys from the
    registry, each sealed epoch's root as if anchored (gateway.keeper.verify.Verifier)."""

    def __init__(self, store):
        self.store = store

    def anchor_of(self, epoch):
        e = self.store.epoch(epoch)
        return {"root": e["root"], "count": e["count"], "block_number": 1} if e else None

    def device_key(self, device):
        d = self.store.device(device)
        return bytes.fromhex(d["public_key"]) if isinstance(d["public_key"], str) else d["public_key"]

    def revoked_in(self, device):
        return None


class Gateway:
    """A store with one registered device and the real ingest on the broker."""

    def __init__(self, tmp_path, broker, ident, kind):
        from gateway.ingest.pipeline import Ingest
        from gateway.store.database import Store
        self.data = str(tmp_path / "gw")
        self.ident = ident
        store = Store.open(self.data)
        store.add_device(ident.hex, ident.public, "dev", kind)
        store.close()
        self.ingest = Ingest(self.data, broker.url, epoch_seconds=3600)
        self.ingest.start()

    def acked(self):
        return self.ingest.acked.get(self.ident.hex, 0)

    def stop_and_verify(self, last_seq):
        """Stop the ingest (which seals the epoch) and check every message the device sent
        is stored and verifies; returns the device's last health."""
        from gateway.keeper.verify import Verifier
        from gateway.store.database import Store
        self.ingest.stop()
        store = Store.open(self.data)
        try:
            messages = store.messages(self.ident.hex)
            assert sorted(m["seq"] for m in messages) == list(range(1, last_seq + 1))
            result = Verifier(store, LocalChain(store)).run(messages)
            assert result.counts["failed"] == 0, result.verdicts[:5]
            assert result.counts["ok"] == len(messages), result.verdicts[:5]
            return store.device(self.ident.hex)["health"]
        finally:
            store.close()


def inject(port, dev_hex, topics):
    peer = Peer(port)
    try:
        for topic in topics:
            for payload in PAYLOADS:
                peer.publish(down_topic(dev_hex, topic), payload)
    finally:
        peer.close()


class Once:
    """Motion once, at the first look after armed() is true."""

    def __init__(self, armed):
        self.armed = armed
        self.fired = False

    def check(self):
        if self.fired or not self.armed():
            return False
        self.fired = True
        return True


class Frames:
    def capture(self):
        return bytes(range(256)) * 12


def _cpython_agent(kind, ident, flash, port, armed):
    from agent.camera import CameraAgent
    from agent.mqtt import MQTTClient
    from agent.objects import ObjectQueue
    from agent.spool import Spool
    from tests.helpers.device import Sensors
    transport = MQTTClient("ek-" + ident.hex, "127.0.0.1", port, keepalive=5)
    cfg = {"sample_interval": 0.2, "upload_interval": 1, "status_every": 1, "ack_timeout": 5}
    if kind == "tracker":
        from agent.boot import Device
        return Device(ident, transport, Sensors(), Spool(str(flash / "spool")), cfg, os.urandom)
    cfg.update({"frame_interval": 0.1, "chunk_size": 1024, "cooldown": 3600})
    return CameraAgent(ident, transport, Frames(), Once(armed), Spool(str(flash / "spool")),
                       ObjectQueue(str(flash / "objects")), cfg, os.urandom, log=lambda m: None)


TOPICS = {"tracker": ("ack", "ota", "chunks"), "camera": ("ack", "chunks", "ota")}
HANDLED = {"tracker": 2, "camera": 2}  # ack and ota; ack and chunks (the third is not theirs)


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["tracker", "camera"])
def test_cpython_agent_outlives_malformed_downlinks(tmp_path, broker, monkeypatch, kind):
    flash = tmp_path / "flash"
    flash.mkdir()
    monkeypatch.chdir(flash)  # agent/ota.py's files are relative to the flash
    ident = Identity.create(os.urandom)
    gw = Gateway(tmp_path, broker, ident, "camera" if kind == "camera" else "tracker")
    armed = threading.Event()  # the camera captures once the bad downlinks are in
    agent = _cpython_agent(kind, ident, flash, broker.port, armed.is_set)
    if kind == "tracker":
        agent.log = agent.updater.log = lambda m: None
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, kwargs={"stopped": stop.is_set,
                                                        "flush_timeout": 20})
    runner.start()
    try:
        assert wait_for(lambda: gw.acked() > 0, 20), "the gateway acked nothing"
        inject(broker.port, ident.hex, TOPICS[kind])
        expected = HANDLED[kind] * len(PAYLOADS)
        assert wait_for(lambda: agent.bad_downlinks >= expected, 30), agent.bad_downlinks
        agent.status_due = True  # a status with the count (a camera seals none on its own)
        seen = agent.spool.last_seq
        armed.set()
        # it keeps sending: newer messages acked by the gateway, the object uploaded
        assert wait_for(lambda: gw.acked() > seen, 30), (gw.acked(), seen)
        if kind == "camera":
            assert wait_for(lambda: agent.captures == 1 and not agent.objects.entries, 30)
    finally:
        stop.set()
        runner.join(60)
    assert not runner.is_alive()
    agent.transport.close()
    assert wait_for(lambda: gw.acked() == agent.spool.last_seq, 20)
    health = gw.stop_and_verify(agent.spool.last_seq)
    assert agent.bad_downlinks == expected
    assert health["bad"] == expected and health["rej"] == 0


MP_MAIN = """
import gc, os
from agent import clock
from agent.identity import Identity
from agent.mqtt import MQTTClient
from agent.spool import Spool
KIND, PORT, EXPECTED = {kind!r}, {port}, {expected}

ident = Identity.load("identity.json")
transport = MQTTClient("ek-" + ident.hex, "127.0.0.1", PORT, keepalive=10)
cfg = {{"sample_interval": 0.5, "upload_interval": 2, "status_every": 1, "ack_timeout": 10}}
if KIND == "tracker":
    import agent.boot
    from agent.simsensors import SimTracker
    agent = agent.boot.Device(ident, transport, SimTracker("x"), Spool("spool"), cfg, os.urandom)
    agent.seal_batch = lambda: agent.__class__.__bases__[0].seal_batch(agent)  # quiet heap lines
else:
    from agent.camera import CameraAgent
    from agent.objects import ObjectQueue

    class Once:
        fired = False
        def check(self):  # motion once the bad downlinks are in
            if self.fired or agent.bad_downlinks < EXPECTED:
                return False
            self.fired = True
            return True

    class Frames:
        def capture(self):
            return bytes(range(256)) * 12

    cfg.update({{"frame_interval": 0.2, "chunk_size": 1024, "cooldown": 3600}})
    agent = CameraAgent(ident, transport, Frames(), Once(), Spool("spool"), ObjectQueue("objects"),
                        cfg, os.urandom)
agent.log = lambda m: None
ready = False
end = clock.monotonic() + 120
while clock.monotonic() < end:
    gc.collect()
    wait = agent.step()
    transport.poll(max(0.0, min(wait, 0.2)))
    if not ready and agent.spool.acked > 0:
        ready = True
        print("READY")
    if agent.bad_downlinks >= EXPECTED:
        break
agent.status_due = True  # a status with the count (a camera seals none on its own)
seen = agent.spool.last_seq
while clock.monotonic() < end and (agent.spool.acked <= seen or getattr(agent, "captures", 1) < 1):
    gc.collect()
    wait = agent.step()
    transport.poll(max(0.0, min(wait, 0.2)))
agent.flush(30)
print("DONE", agent.bad_downlinks, agent.spool.last_seq, agent.spool.acked,
      len(agent.spool.pending()), getattr(agent, "captures", 0))
transport.close()
"""


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["tracker", "camera"])
def test_micropython_agent_outlives_malformed_downlinks(tmp_path, broker, kind):
    from agent.runtime.micropython import MicroPythonDevice
    flash = tmp_path / "flash"
    flash.mkdir()
    ident = Identity.create(os.urandom)
    ident.save(str(flash / "identity.json"))
    gw = Gateway(tmp_path, broker, ident, "camera" if kind == "camera" else "tracker")
    expected = HANDLED[kind] * len(PAYLOADS)
    injected = threading.Event()

    def on_line(stream, line):
        if line == "READY" and not injected.is_set():
            injected.set()
            threading.Thread(target=inject, args=(broker.port, ident.hex, TOPICS[kind]),
                             daemon=True).start()

    dev = MicroPythonDevice(str(flash), heap=192 * 1024 if kind == "camera" else 98304,
                            on_line=on_line, compiled=True)
    try:
        rc, out, err = dev.run(textwrap.dedent(MP_MAIN.format(kind=kind, port=broker.port,
                                                              expected=expected)), timeout=200)
    finally:
        time.sleep(0.5)
    assert (rc, err) == (0, ""), out[-3000:] + err[-3000:]
    done = [line.split() for line in out.splitlines() if line.startswith("DONE")]
    assert done, out[-3000:]
    bad, last, acked, pending, captures = (int(x) for x in done[0][1:])
    assert bad == expected, out[-3000:]
    assert acked == last and pending == 0
    if kind == "camera":
        assert captures == 1
    health = gw.stop_and_verify(last)
    assert health["bad"] == expected and health["rej"] == 0


MP_CORPUS = """
import gc, struct
from agent import cbor
counts = {"ok": 0, "ValueError": 0}
other = []
outcome = bytearray()
with open("corpus.bin", "rb") as f:
    while True:
        head = f.read(4)
        if not head:
            break
        data = f.read(struct.unpack(">I", head)[0])
        gc.collect()  # this build collects only when asked
        try:
            cbor.loads(data)
            counts["ok"] += 1
            outcome.append(0x31)
        except ValueError:
            counts["ValueError"] += 1
            outcome.append(0x30)
        except Exception as e:
            other.append("%s %s" % (type(e).__name__, e))
            outcome.append(0x32)
print("ok", counts["ok"])
print("ValueError", counts["ValueError"])
print("other", len(other), other[:5])
gc.collect()
print("outcome", outcome.decode())
"""


@pytest.mark.integration
def test_cbor_loads_raises_only_value_error_on_micropython(tmp_path):
    """The same corpus on the MicroPython WebAssembly build: the same outcome for each input."""
    import struct

    from agent.runtime.micropython import MicroPythonDevice
    flash = tmp_path / "flash"
    flash.mkdir()
    inputs = corpus(3000)
    with open(flash / "corpus.bin", "wb") as f:
        for data in inputs:
            f.write(struct.pack(">I", len(data)) + data)
    rc, out, err = MicroPythonDevice(str(flash), heap=98304).run(textwrap.dedent(MP_CORPUS),
                                                                 timeout=120)
    assert (rc, err) == (0, ""), out[-2000:] + err[-2000:]
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert lines["other"].startswith("0 "), lines["other"]
    want = ""
    for data in inputs:
        try:
            cbor.loads(data)
            want += "1"
        except ValueError:
            want += "0"
    differ = [i for i, (a, b) in enumerate(zip(lines["outcome"], want)) if a != b]
    assert not differ, [(inputs[i].hex(), lines["outcome"][i]) for i in differ[:5]]
    assert int(lines["ok"]) > 100 and int(lines["ValueError"]) > 1000
