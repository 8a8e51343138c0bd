"""One bad message costs one message: a signed message that parses but must not (or cannot)
be stored is refused alone, over real Mosquitto, in a batch with other devices' traffic.

Each poison message is signed by a registered device and lands in one batch between good
messages from two other devices (the ingest's batch taking is held until all are in its
inbox). The batch commits: the others are stored and acked at once, process() saw them once
(no redelivery). The poisoned device's message is counted with its reason, recorded as
refused, acked past with its sequence in the ack's ACK_REJECTED, and the device's later
messages are stored. The stored messages all verify (gateway/keeper/verify.py).
"""
import hashlib
import os
import threading
import time

import pytest

from agent import cbor, cose, message
from agent.identity import Identity
from agent.objects import merkle_root, wrap_key
from agent.proto import ACK_REJECTED, ACK_SEQ
from gateway.ingest.pipeline import Ingest
from gateway.keeper.verify import Verifier
from gateway.store import database
from gateway.store.database import Store
from tests.helpers.mqtt import Subscriber
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

T = 1790000000
PROMPT = 5.0  # s: an ack well before the device's 20 s resend


class Device:
    def __init__(self):
        self.ident = Identity.create(os.urandom)
        self.nonces = message.Nonces(os.urandom)

    @property
    def hex(self):
        return self.ident.hex

    def msg(self, seq, base=None):
        return bytes(message.seal(self.ident, self.nonces, seq, T + seq, "t", base or seq,
                                  b"\x82hpebble/1@", 0))

    def signed(self, env):
        """Any envelope (a dict; version, device filled in), validly signed."""
        env = {0: 1, 1: self.ident.device_id, **env}
        return bytes(cose.sign1(self.ident.secret, self.ident.device_id, cbor.dumps(env)))

    def topic(self, kind="t"):
        return "ek/%s/up/%s" % (self.hex, kind)


def manifest_object():
    hashes = b"".join(hashlib.sha256(b"chunk %d" % i).digest() for i in range(3))
    obj = {0: os.urandom(8), 1: "motion", 2: "image/jpeg", 3: 10000, 4: 4096, 5: 3,
           6: merkle_root(hashes), 7: hashes,
           8: wrap_key(os.urandom(16), os.urandom(13), os.urandom(16)), 9: os.urandom(32)}
    return obj


def poison_envelope(case, seq):
    """(kind, envelope) of a signed message that parses but used to fail the batch."""
    base = {2: seq, 3: T + seq, 5: seq}
    telemetry = {**base, 4: "t", 6: 0, 7: b"\x00" * 40}
    return {
        "seq": ("t", {**telemetry, 2: 2**63, 5: 1}),
        "time": ("t", {**telemetry, 3: 2**63}),
        "count": ("t", {**telemetry, 6: 2**63}),
        "manifest []": ("m", {**base, 4: "m", 9: []}),
        "manifest short list": ("m", {**base, 4: "m", 9: [os.urandom(8), "motion"]}),
        "manifest size": ("m", {**base, 4: "m", 9: manifest_object() | {3: 2**63}}),
        "manifest cut short": ("m", {**base, 4: "m",
                                     9: {k: v for k, v in manifest_object().items() if k < 5}}),
        # a new manifest must carry its object's wrapped content key (object key 8)
        "manifest without key": ("m", {**base, 4: "m",
                                       9: {k: v for k, v in manifest_object().items() if k != 8}}),
        "health key": ("s", {**base, 4: "s", 8: {"fw": "0.1.0", 1: 2}}),
    }[case]


REASON = {"seq": "out_of_range", "time": "out_of_range", "count": "out_of_range",
          "manifest []": "bad_manifest", "manifest short list": "bad_manifest",
          "manifest size": "bad_manifest", "manifest cut short": "bad_manifest",
          "manifest without key": "bad_manifest",
          "health key": "bad_health"}


class FakeChain:
    """What the Verifier reads from the chain: the registered keys and the sealed roots,
    as if every epoch were anchored in block 1."""

    def __init__(self, store, devices):
        self.store = store
        self.keys = {d.hex: d.ident.public for d in devices}

    def anchor_of(self, epoch):
        e = self.store.epoch(epoch)
        return e and {"root": e["root"], "count": e["count"], "block_number": 1}

    def device_key(self, device):
        return self.keys.get(device)

    def revoked_in(self, device):
        return None


@pytest.fixture
def gw(tmp_path, broker, database_url):
    data = str(tmp_path / "gw")
    store = Store.open(data, database_url)
    devices = [Device() for _ in range(3)]  # poisoned, then two good ones
    for i, d in enumerate(devices):
        store.add_device(d.hex, d.ident.public, "dev%d" % i)
    ingest = Ingest(data, broker.url, max_bytes=65536, epoch_seconds=3600)

    # Hold the worker's batch taking until the whole batch is in its inbox, and record what
    # each process() call got.
    gate = threading.Event()
    take = ingest._take_batch

    def gated():
        if not gate.is_set():
            time.sleep(0.01)
            return []
        return take()
    ingest._take_batch = gated
    calls = []
    process = ingest.process

    def recording(batch):
        calls.append([hashlib.sha256(raw).digest() for _, raw, _, _ in batch])
        return process(batch)
    ingest.process = recording
    ingest.start()
    client = Subscriber(broker.port, "ek/+/down/ack")
    yield data, store, ingest, client, devices, gate, calls
    client.close()
    if not ingest._stop.is_set():
        ingest.stop()
    store.close()


def acks(client, dev):
    with client.lock:
        return [cbor.loads(p) for t, p in client.messages if t == "ek/%s/down/ack" % dev.hex]


def send_batch(client, ingest, gate, sends):
    """Publish sends [(topic, raw)], wait until all are in the ingest's inbox, let the
    worker take them as one batch; the time it was let go."""
    for topic, raw in sends:
        client.publish(topic, raw)
    wait_for(lambda: ingest.inbox.qsize() == len(sends), timeout=10,
             what="%d messages in the inbox" % len(sends))
    gate.set()
    return time.monotonic()


def assert_all_verify(data, devices):
    store = Store.open(data)
    try:
        rows = store.messages()
        assert rows and all(r["epoch"] is not None for r in rows)
        result = Verifier(store, FakeChain(store, devices)).run(rows)
        assert result.verdicts == [] and result.counts == {"ok": len(rows)}
    finally:
        store.close()


@pytest.mark.parametrize("case", list(REASON))
def test_a_poison_message_costs_only_itself(gw, case):
    data, store, ingest, client, (bad, b, c), gate, calls = gw
    kind, env = poison_envelope(case, 2)
    poison = bad.signed(env)
    good = [(b.topic(), b.msg(1)), (c.topic(), c.msg(1)), (bad.topic(), bad.msg(1)),
            (b.topic(), b.msg(2)), (c.topic(), c.msg(2))]
    later_seq = 2 if case == "seq" else 3  # a sequence out of range holds no place
    sends = good[:3] + [(bad.topic(kind), poison)] + good[3:] + [
        (bad.topic(), bad.msg(later_seq)), (b.topic(), b.msg(3)), (c.topic(), c.msg(3))]
    start = send_batch(client, ingest, gate, sends)

    for dev in (b, c):
        wait_for(lambda dev=dev: acks(client, dev) and acks(client, dev)[-1][ACK_SEQ] == 3,
                 timeout=PROMPT, what="device %s acked 3" % dev.hex)
    wait_for(lambda: acks(client, bad), timeout=PROMPT, what="the poisoned device's ack")
    assert time.monotonic() - start < PROMPT
    assert len(calls) == 1 and len(calls[0]) == len(sends)  # one batch, never redelivered

    reason = REASON[case]
    assert dict(ingest.rejects) == {reason: 1}
    assert store.reject_counts() == {reason: 1}
    assert ingest.stats["stored"] == len(sends) - 1
    for dev in (b, c):
        assert [m["seq"] for m in store.messages(device=dev.hex)] == [1, 2, 3]
        assert all(ACK_REJECTED not in a for a in acks(client, dev))
    assert [m["seq"] for m in store.messages(device=bad.hex)] == [1, later_seq]
    ack = acks(client, bad)[-1]
    assert ack[ACK_SEQ] == later_seq
    if case == "seq":  # nothing to ack past: counted, the device's next seq is stored
        assert ACK_REJECTED not in ack and store.refused() == []
    else:
        assert ack[ACK_REJECTED] == [2]
        assert [(r["device"], r["seq"], r["reason"]) for r in store.refused()] == [
            (bad.hex, 2, reason)]
        assert store.gaps() == []

    # The device's next message is stored and acked, with nothing more refused.
    client.publish(bad.topic(), bad.msg(later_seq + 1))
    wait_for(lambda: acks(client, bad)[-1][ACK_SEQ] == later_seq + 1, timeout=PROMPT,
             what="the poisoned device's next message acked")
    assert ACK_REJECTED not in acks(client, bad)[-1]
    ingest.stop()
    assert_all_verify(data, [bad, b, c])


def test_a_refused_message_sent_again_is_acked_again_as_a_duplicate(gw):
    """The device missed the ack (or resent before it came): the same bytes are refused
    again without a second record or reject, and acked with the sequence listed again."""
    data, store, ingest, client, (bad, b, _), gate, calls = gw
    kind, env = poison_envelope("time", 2)
    poison = bad.signed(env)
    send_batch(client, ingest, gate, [(bad.topic(), bad.msg(1)), (bad.topic(kind), poison),
                                      (b.topic(), b.msg(1))])
    wait_for(lambda: acks(client, bad), timeout=PROMPT, what="ack")
    assert acks(client, bad)[-1] == {0: 1, ACK_SEQ: 2, ACK_REJECTED: [2]}
    client.publish(bad.topic(kind), poison)
    wait_for(lambda: len(acks(client, bad)) == 2, timeout=PROMPT, what="the second ack")
    assert acks(client, bad)[-1] == {0: 1, ACK_SEQ: 2, ACK_REJECTED: [2]}
    assert dict(ingest.rejects) == {"out_of_range": 1}
    assert store.counts()["duplicates"] == 1
    assert len(store.refused()) == 1

    # Other signed bytes under the refused sequence are a replay: counted, never acked.
    _, other = poison_envelope("count", 2)
    client.publish(bad.topic(), bad.signed(other))
    wait_for(lambda: ingest.rejects["replay"] == 1, timeout=PROMPT, what="the replay")
    assert len(acks(client, bad)) == 2


def test_a_refused_sequence_above_a_hole_is_listed_when_the_ack_passes_it(gw):
    data, store, ingest, client, (bad, _, _), gate, calls = gw
    kind, env = poison_envelope("health key", 3)
    send_batch(client, ingest, gate, [(bad.topic(), bad.msg(1)),
                                      (bad.topic(kind), bad.signed(env))])
    wait_for(lambda: acks(client, bad), timeout=PROMPT, what="ack 1")
    assert acks(client, bad)[-1] == {0: 1, ACK_SEQ: 1}  # 2 is missing: 3 is not released yet
    client.publish(bad.topic(), bad.msg(2))
    wait_for(lambda: len(acks(client, bad)) == 2, timeout=PROMPT, what="ack 3")
    assert acks(client, bad)[-1] == {0: 1, ACK_SEQ: 3, ACK_REJECTED: [3]}


def test_an_unauthentic_poison_message_is_never_acked(gw):
    """Refused before its signature verified: nothing proves the device sent it."""
    data, store, ingest, client, (bad, b, _), gate, calls = gw
    kind, env = poison_envelope("time", 1)
    forged = bytearray(bad.signed(env))
    forged[-3] ^= 0x40
    send_batch(client, ingest, gate, [(bad.topic(kind), bytes(forged)), (b.topic(), b.msg(1))])
    wait_for(lambda: acks(client, b), timeout=PROMPT, what="the good device's ack")
    wait_for(lambda: ingest.rejects["bad_signature"] == 1, timeout=PROMPT, what="the reject")
    time.sleep(0.3)
    assert acks(client, bad) == [] and store.refused() == []


def test_a_message_that_fails_when_stored_is_undone_alone_as_unstorable(gw, caplog):
    """Whatever still fails while one message is stored (here an OverflowError from its
    object's row, after its message row was written): that message's writes are rolled back
    to its savepoint, it is refused as unstorable, and the batch commits."""
    data, store, ingest, client, (bad, b, c), gate, calls = gw
    doomed = os.urandom(8)
    register = ingest.objects.register

    def failing(env, m, now):
        register(env, m, now)  # the object's row is written, then the failure
        if m.oid == doomed.hex():
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
    ingest.objects.register = failing
    env = {2: 2, 3: T + 2, 4: "m", 5: 2, 9: manifest_object() | {0: doomed}}
    send_batch(client, ingest, gate, [
        (b.topic(), b.msg(1)), (bad.topic(), bad.msg(1)), (bad.topic("m"), bad.signed(env)),
        (c.topic(), c.msg(1)), (bad.topic(), bad.msg(3))])
    for dev in (b, c):
        wait_for(lambda dev=dev: acks(client, dev), timeout=PROMPT, what="ack %s" % dev.hex)
    wait_for(lambda: acks(client, bad), timeout=PROMPT, what="ack")
    assert acks(client, bad)[-1] == {0: 1, ACK_SEQ: 3, ACK_REJECTED: [2]}
    assert len(calls) == 1
    assert dict(ingest.rejects) == {"unstorable": 1}
    assert [m["seq"] for m in store.messages(device=bad.hex)] == [1, 3]
    assert store.objects.list() == []  # the object's row went with the message's
    refused = store.refused(bad.hex)
    assert [(r["seq"], r["reason"]) for r in refused] == [(2, "unstorable")]
    assert "OverflowError" in refused[0]["detail"]
    assert any("unstorable" in r.getMessage() and "OverflowError" in r.getMessage()
               for r in caplog.records)
    ingest.stop()
    assert_all_verify(data, [bad, b, c])


# Triggers that fail as a message is stored: a telemetry message's INSERT after the trigger
# wrote a row, a status message's health update after its message row was written.
FAILING_TRIGGERS = {
    "sqlite": [
        "CREATE TRIGGER poison_t AFTER INSERT ON messages WHEN NEW.device = '{dev}' AND "
        "NEW.seq = 2 BEGIN INSERT INTO counters (name, count) VALUES ('poison', 1); "
        "SELECT RAISE(ABORT, 'poisoned insert'); END",
        "CREATE TRIGGER poison_s AFTER UPDATE OF health ON devices WHEN NEW.id = '{dev}' "
        "BEGIN SELECT RAISE(ABORT, 'poisoned health'); END"],
    "postgresql": [
        "CREATE FUNCTION poison_t() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO counters (name, count) VALUES ('poison', 1); "
        "RAISE EXCEPTION 'poisoned insert'; END $$",
        "CREATE TRIGGER poison_t AFTER INSERT ON messages FOR EACH ROW "
        "WHEN (NEW.device = '{dev}' AND NEW.seq = 2) EXECUTE FUNCTION poison_t()",
        "CREATE FUNCTION poison_s() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'poisoned health'; END $$",
        "CREATE TRIGGER poison_s AFTER UPDATE OF health ON devices FOR EACH ROW "
        "WHEN (NEW.id = '{dev}') EXECUTE FUNCTION poison_s()"],
}


def test_database_errors_undo_only_their_own_message(gw, database_url):
    """Real failures of the database, from triggers: the failed statement is undone by the
    database, the message's earlier writes by its savepoint; the batch commits."""
    data, store, ingest, client, (bad, b, _), gate, calls = gw
    backend = "postgresql" if database_url else "sqlite"
    for sql in FAILING_TRIGGERS[backend]:
        store.db.execute(sql.format(dev=bad.hex))
    status = bad.signed({2: 3, 3: T + 3, 4: "s", 5: 3, 8: {"fw": "0.1.0", "up": 5}})
    send_batch(client, ingest, gate, [
        (bad.topic(), bad.msg(1)), (bad.topic(), bad.msg(2)), (b.topic(), b.msg(1)),
        (bad.topic("s"), status), (bad.topic(), bad.msg(4)), (b.topic(), b.msg(2))])
    wait_for(lambda: acks(client, b) and acks(client, b)[-1][ACK_SEQ] == 2, timeout=PROMPT,
             what="the good device acked")
    wait_for(lambda: acks(client, bad), timeout=PROMPT, what="ack")
    assert acks(client, bad)[-1] == {0: 1, ACK_SEQ: 4, ACK_REJECTED: [2, 3]}
    assert len(calls) == 1
    assert dict(ingest.rejects) == {"unstorable": 2}
    assert [m["seq"] for m in store.messages(device=bad.hex)] == [1, 4]
    assert "poison" not in store.counts()
    assert store.device(bad.hex)["health"] is None
    assert [(r["seq"], r["reason"]) for r in store.refused(bad.hex)] == [
        (2, "unstorable"), (3, "unstorable")]
    assert "poisoned health" in store.refused(bad.hex)[1]["detail"]


@pytest.mark.unit
def test_errors_of_the_disk_or_the_file_fail_the_batch_not_the_message():
    import sqlite3
    for e in (sqlite3.OperationalError("database or disk is full"), OSError(28, "No space"),
              sqlite3.DatabaseError("database disk image is malformed"), MemoryError(),
              KeyboardInterrupt()):
        assert database.environmental(e), e
    for e in (sqlite3.IntegrityError("UNIQUE constraint failed"), OverflowError("too large"),
              TypeError("keys must be str"), IndexError("list index"),
              sqlite3.ProgrammingError("Error binding parameter 1"), ValueError("x")):
        assert not database.environmental(e), e
