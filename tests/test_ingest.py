"""Ingest over real Mosquitto: store and ack, duplicates, gaps, and every reject reason."""
import logging
import os
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from agent import cbor, cose, message
from agent.identity import Identity
from agent.proto import ACK_SEQ
from gateway.ingest.pipeline import RECEIVE_MAXIMUM, Ingest
from gateway.store.database import Store
from gateway.wire import protocol
from gateway.wire.protocol import Reject
from tests.helpers.mqtt import Subscriber
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration


class Device:
    def __init__(self):
        self.ident = Identity.create(os.urandom)
        self.nonces = message.Nonces(os.urandom)

    def msg(self, seq, base=None, plaintext=b"\x82hpebble/1@", kind="t"):
        return message.seal(self.ident, self.nonces, seq, 1790000000 + seq, kind,
                            base or seq, plaintext, 0)

    def topic(self, kind="t"):
        return "ek/%s/up/%s" % (self.ident.hex, kind)


@pytest.fixture
def setup(tmp_path, broker, database_url):
    data = str(tmp_path / "gw")
    store = Store.open(data, database_url)
    a, revoked, stranger = Device(), Device(), Device()
    store.add_device(a.ident.hex, a.ident.public, "a")
    store.add_device(revoked.ident.hex, revoked.ident.public, "b")
    store.revoke_device(revoked.ident.hex)
    ingest = Ingest(data, broker.url, max_bytes=4096, epoch_seconds=3600)
    ingest.start()
    client = Subscriber(broker.port, "ek/+/down/ack")
    yield ingest, store, client, a, revoked, stranger
    client.close()
    ingest.stop()


def acks_for(client, dev):
    with client.lock:
        return [cbor.loads(p)[ACK_SEQ] for t, p in client.messages if t == "ek/%s/down/ack" % dev.ident.hex]


def test_store_then_ack_highest_contiguous(setup):
    ingest, store, client, a, _, _ = setup
    client.publish(a.topic(), a.msg(1))
    client.publish(a.topic(), a.msg(3, base=1))
    wait_for(lambda: ingest.stats["stored"] == 2, what="two stored")
    wait_for(lambda: acks_for(client, a) and acks_for(client, a)[-1] == 1, what="ack 1")
    client.publish(a.topic(), a.msg(2, base=1))
    wait_for(lambda: acks_for(client, a)[-1] == 3, what="ack 3 once 2 fills the hole")
    assert [m["seq"] for m in store.messages(device=a.ident.hex)] == [1, 2, 3]


def test_duplicate_is_acked_and_dropped(setup):
    ingest, store, client, a, _, _ = setup
    m = a.msg(1)
    client.publish(a.topic(), m)
    wait_for(lambda: acks_for(client, a) == [1], what="ack 1")
    client.publish(a.topic(), m)  # the device missed the ack and sends again
    wait_for(lambda: ingest.stats["duplicates"] == 1, what="duplicate counted")
    wait_for(lambda: acks_for(client, a) == [1, 1], what="the copy acked too")
    assert store.message_count() == 1
    assert not ingest.rejects
    assert store.counts()["duplicates"] == 1     # kept across restarts: /metrics reads it


def test_device_dropped_batches_become_a_gap(setup):
    ingest, store, client, a, _, _ = setup
    client.publish(a.topic(), a.msg(1))
    client.publish(a.topic(), a.msg(6, base=5))   # 2..4 were dropped on the device
    wait_for(lambda: ingest.stats["stored"] == 2, what="both stored")
    client.publish(a.topic(), a.msg(5, base=5))
    wait_for(lambda: acks_for(client, a)[-1] == 6, what="ack past the gap")
    assert [(g["first"], g["last"]) for g in store.gaps(a.ident.hex)] == [(2, 4)]


def test_every_reject_reason_is_counted_and_ingest_keeps_going(setup):
    ingest, store, client, a, revoked, stranger = setup
    client.publish(a.topic(), a.msg(1))
    wait_for(lambda: ingest.stats["stored"] == 1, what="first message")

    forged = bytearray(a.msg(2))
    forged[-5] ^= 0x40
    v2_env = cbor.dumps({0: 2, 1: a.ident.device_id, 2: 3, 3: 1790000003, 4: "t", 5: 3})
    sends = [
        ("malformed", a.topic(), b"\xff\x00not cbor"),
        ("malformed", "ek/%s/up/t" % ("0" * 16), cbor.dumps([1, 2])),
        ("bad_signature", a.topic(), bytes(forged)),
        ("unknown_device", stranger.topic(), stranger.msg(1)),
        ("revoked", revoked.topic(), revoked.msg(1)),
        ("replay", a.topic(), a.msg(1, plaintext=b"\x82hpebble/1A\x01")),  # seq 1, other content
        ("oversize", a.topic(), b"\x00" * 5000),
        ("unsupported_version", a.topic(), cose.sign1(a.ident.secret, a.ident.device_id, v2_env)),
    ]
    for _, topic, payload in sends:
        client.publish(topic, payload)
    want = {}
    for reason, _, _ in sends:
        want[reason] = want.get(reason, 0) + 1
    wait_for(lambda: dict(ingest.rejects) == want, what="reject counters %s" % want)
    assert store.reject_counts() == want
    assert store.message_count() == 1

    client.publish(a.topic(), a.msg(2))
    wait_for(lambda: ingest.stats["stored"] == 2, what="valid message after the rejects")
    wait_for(lambda: acks_for(client, a)[-1] == 2, what="ack 2")


def test_a_batch_of_chunks_and_signed_messages_keeps_each_outcome_with_its_message(tmp_path,
                                                                                   database_url):
    """Chunks are verified on one thread, signatures across the pool; the outcomes must
    still line up with the messages, in order."""
    data = str(tmp_path / "gw")
    a, stranger = Device(), Device()
    store = Store.open(data, database_url)
    store.add_device(a.ident.hex, a.ident.public, "a")
    store.close()
    ingest = Ingest(data, "mqtt://127.0.0.1:1")  # never connected: only its verification
    batch = [(a.topic(), a.msg(1)), (a.topic("c"), b"\xff not cbor"), (a.topic(), a.msg(2)),
             (stranger.topic("c"), cbor.dumps([b"\0" * 8, 0, b"sealed"])),
             (a.topic(), a.msg(3))]
    try:
        out = ingest._verify_all([(topic, raw, 0, 1) for topic, raw in batch])
    finally:
        ingest.pool.shutdown()
        ingest.store.close()
    assert [o.reason if isinstance(o, Reject) else o[1].seq for o in out] == [
        1, protocol.MALFORMED, 2, protocol.UNKNOWN_DEVICE, 3]


def test_a_device_registered_while_the_worker_reloads_is_never_forgotten(tmp_path, database_url):
    """The worker reloads the devices every 2 s; reload_devices() comes from other threads
    (the demo, the benches). A reload that read the table before a registration must not
    replace the keys of one that read it after: the new device's messages would be rejected
    as unknown until the next reload."""
    data = str(tmp_path / "gw")
    store = Store.open(data, database_url)
    ingest = Ingest(data, "mqtt://127.0.0.1:1")
    stop = threading.Event()

    def worker_reloads():
        while not stop.is_set():
            ingest._load_devices()
    worker = threading.Thread(target=worker_reloads)
    worker.start()
    forgotten = []
    try:
        for i in range(50):
            dev = Device()
            store.add_device(dev.ident.hex, dev.ident.public, "cam%d" % i)
            ingest.reload_devices()
            for _ in range(200):  # a stale reload lands within a few of its own durations
                if dev.ident.hex not in ingest.keys:
                    forgotten.append(i)
                    break
    finally:
        stop.set()
        worker.join()
        ingest.pool.shutdown()
        ingest.store.close()
        store.close()
    assert not forgotten, "registered devices dropped by a concurrent reload: %s" % forgotten


def test_a_device_registered_on_a_running_gateway_is_accepted_at_once(setup):
    """`devices add` (or the web API) writes the table from another process; the device's
    first message may come before the worker's next reload (every 2 s). An unknown device
    makes the ingest reload before it rejects, so that message is stored the first time."""
    ingest, store, client, _, _, _ = setup
    for i in range(3):
        dev = Device()
        store.add_device(dev.ident.hex, dev.ident.public, "new%d" % i)
        client.publish(dev.topic(), dev.msg(1))
        wait_for(lambda d=dev: acks_for(client, d) == [1], what="the new device's first ack")
        time.sleep(Ingest.UNKNOWN_RELOAD)  # the next one's reload is not rate-limited away
    assert ingest.stats["stored"] == 3
    assert not ingest.rejects


def test_unknown_devices_cannot_make_the_ingest_reload_constantly(setup):
    ingest, store, client, a, _, _ = setup
    reloads = []
    device_keys = ingest._devices_store.device_keys
    ingest._devices_store.device_keys = lambda: reloads.append(1) or device_keys()
    raw = a.msg(1)
    t0 = time.monotonic()
    for _ in range(300):
        with pytest.raises(Reject):   # 300 ids, none of them registered
            ingest.check("ek/%s/up/t" % os.urandom(8).hex(), raw)
    elapsed = time.monotonic() - t0
    # The worker's own reload (every 2 s) may come meanwhile too.
    assert 1 <= len(reloads) <= elapsed / Ingest.UNKNOWN_RELOAD + 1 + elapsed / 2 + 1, reloads


def test_replay_behind_the_acked_sequence(setup):
    ingest, store, client, a, _, _ = setup
    client.publish(a.topic(), a.msg(4, base=4))  # device says 1..3 are gone
    wait_for(lambda: acks_for(client, a) and acks_for(client, a)[-1] == 4, what="ack 4")
    client.publish(a.topic(), a.msg(2, base=2))
    wait_for(lambda: ingest.rejects["replay"] == 1, what="replay counted")


def test_rejects_are_logged_without_flooding(setup, caplog):
    ingest, store, client, a, _, _ = setup
    caplog.set_level(logging.WARNING, logger="edgekeep.ingest")
    for i in range(40):
        client.publish(a.topic(), b"junk %d" % i, qos=0)
    wait_for(lambda: ingest.rejects["malformed"] == 40, what="40 malformed")
    lines = [r for r in caplog.records if "rejected (malformed)" in r.getMessage()]
    assert 1 <= len(lines) <= 2


def test_broker_lets_the_gateway_hold_many_messages_unacked_while_it_commits(broker):
    """The ingest PUBACKs only after its commit; Mosquitto's default of 20 unacked messages
    would stall a camera upload at every commit. Both brokers we ship allow 1024."""
    held = []
    subscribed = threading.Event()
    gw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="slow-gateway")
    gw.manual_ack_set(True)   # and never acks
    gw.on_message = lambda c, u, m: held.append(m.mid)
    gw.on_connect = lambda c, u, f, rc, p: c.subscribe("ek/+/up/#", qos=1)
    gw.on_subscribe = lambda *a: subscribed.set()
    gw.connect("127.0.0.1", broker.port)
    gw.loop_start()
    dev = Subscriber(broker.port, "nothing/here")
    try:
        assert subscribed.wait(10), "the gateway's subscription was not confirmed"
        for i in range(100):
            dev.publish("ek/dev/up/c", b"%d" % i)
        wait_for(lambda: len(held) == 100, what="100 unacked messages at the gateway")
    finally:
        gw.disconnect()
        gw.loop_stop()
        dev.close()
    with open(os.path.join(os.path.dirname(__file__), "..", "hw", "rpi", "mosquitto.conf")) as f:
        assert "\nmax_inflight_messages 1024\n" in f.read()


def test_a_slow_database_stops_the_broker_sending_rather_than_growing_memory(setup):
    """While another writer holds the database, the ingest holds at most RECEIVE_MAXIMUM
    unacked messages; the broker keeps the rest. Once the database is free all are stored,
    each once, and acked."""
    ingest, store, client, a, _, _ = setup
    sent = 3000
    blocker = Store.connect(ingest.data_dir)
    try:
        with blocker.transaction():
            for seq in range(1, sent + 1):
                client.client.publish(a.topic(), bytes(a.msg(seq)), qos=1)
            wait_for(lambda: ingest.stats["received"] >= RECEIVE_MAXIMUM, timeout=30,
                     what="the ingest's receive maximum reached")
            time.sleep(2)   # the broker has had the time to send more, if it would
            waiting, lag = ingest.inflight()
            assert ingest.stats["received"] == RECEIVE_MAXIMUM
            assert waiting == RECEIVE_MAXIMUM and lag > 1.5
            assert store.message_count() == 0
    finally:
        blocker.close()
    wait_for(lambda: store.message_count() == sent, timeout=60, what="every message stored")
    wait_for(lambda: acks_for(client, a) and acks_for(client, a)[-1] == sent, timeout=30,
             what="the last message acked")
    wait_for(lambda: ingest.inflight() == (0, 0.0), timeout=10, what="nothing left in flight")
    assert ingest.stats["received"] == sent
    assert [m["seq"] for m in store.messages(device=a.ident.hex)] == list(range(1, sent + 1))
