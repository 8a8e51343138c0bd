"""The Store and its rows classes (objects, audits, blobs, peers, placements) give the same
answers, of the same Python types, on SQLite and on PostgreSQL: every method once, with
what SQLite gave before the second backend existed."""
import hashlib

import pytest

from gateway.store.audits import Record
from gateway.store.database import Store
from gateway.store.placements import Offbox, Placement

pytestmark = pytest.mark.unit

DEV, CAM = "aa" * 8, "bb" * 8
T = 1765000000.5


@pytest.fixture
def store(tmp_path, database_url):
    s = Store.open(str(tmp_path / "gw"), database_url)
    yield s
    s.close()


def h(x):
    return hashlib.sha256(str(x).encode()).digest()


def test_devices_messages_and_the_ingests_queries(store):
    store.add_device(DEV, b"\x04" + bytes(64), None)
    store.add_device(CAM, b"\x04" + bytes(range(64)), "camera-1", "camera")
    store.add_device(DEV, b"\x05", "again")                 # known: nothing changes
    assert [d["id"] for d in store.devices()] == [DEV, CAM]  # a NULL name first, as on SQLite
    dev = store.device(DEV)
    assert type(dev["public_key"]) is bytes and dev["public_key"] == b"\x04" + bytes(64)
    assert dev["name"] is None and dev["acked"] == 0 and type(dev["registered_at"]) is float
    assert store.rename_device(DEV, "tracker-1") and not store.rename_device("cc" * 8, "x")
    store.set_health(DEV, {"battery": 3.9, "fw": "0.2.0"})
    assert store.device(DEV)["health"] == {"battery": 3.9, "fw": "0.2.0"}
    with store.transaction():
        for seq in (1, 2, 4):
            store.add_message(DEV, seq, "t", 1765000000 + seq, 3, h(seq), b"raw%d" % seq, T)
        store.add_refused(DEV, 5, h(5), "bad_health", "detail", T)
        store.add_gap(DEV, 3, 3, T)
        store.set_acked({DEV: 2}, T + 1)
        store.add_counts({"duplicates": 2})
        store.add_counts({"duplicates": 1, "none": 0})
        store.add_rejects({"malformed": 4})
        store.add_rejects({"malformed": 1, "bad_signature": 2})
    assert store.message_count() == 3 and store.latest_message_id() == 3
    assert store.device_keys()[0].public_key in (b"\x04" + bytes(64), b"\x04" + bytes(range(64)))
    assert {k.id: k.acked for k in store.device_keys()} == {DEV: 2, CAM: 0}
    assert store.message_digest(DEV, 2) == h(2) and store.message_digest(DEV, 3) is None
    assert type(store.message_digest(DEV, 2)) is bytes
    assert store.stored_seqs(DEV, 0, 10) == [1, 2, 4, 5]
    assert store.contiguous_seq(DEV, 2) == 2 and store.contiguous_seq(DEV, 3) == 5
    assert store.refused_digest(DEV, 5) == h(5) and store.refused_seqs(DEV, 0, 5) == [5]
    assert store.refused() == [{"device": DEV, "seq": 5, "reason": "bad_health",
                                "detail": "detail", "recorded_at": T}]
    assert store.gaps(DEV) == [{"device": DEV, "first": 3, "last": 3, "recorded_at": T}]
    assert store.counts() == {"duplicates": 3} and \
        store.reject_counts() == {"malformed": 5, "bad_signature": 2}
    m = store.message(DEV, 4)
    assert (m["raw"], m["epoch"], m["time"], m["received_at"]) == (b"raw4", None, 1765000004, T)
    assert [r["seq"] for r in store.messages(DEV)] == [1, 2, 4]
    assert [r["seq"] for r in store.recent_messages(DEV, "t", 2)] == [4, 2]
    assert [r["id"] for r in store.messages_after(1)] == [2, 3]
    assert [m.raw for m in store.messages_from(0)] == [b"raw1", b"raw2", b"raw4"]
    assert [m.id for m in store.messages_from(1, 1)] == [2]
    assert store.revoke_device(CAM) and store.device(CAM)["status"] == "revoked"


def test_epochs_sealing_and_the_outbox(store):
    with store.transaction():
        for seq in (1, 2):
            store.add_message(DEV, seq, "t", 1765000000, None, h(seq), b"r", T)
        unsealed = store.unsealed()
        assert [u.digest for u in unsealed] == [h(1), h(2)]
        epoch = store.next_epoch()
        store.add_epoch(epoch, b"\x11" * 32, [u.id for u in unsealed], T)
    assert epoch == 1 and store.next_epoch() == 2 and store.unsealed() == []
    assert store.epoch_leaves(1) == [h(1), h(2)]
    assert store.message_at(1, 1)["digest"] == h(2)
    assert [r["leaf"] for r in store.sealed_messages()] == [0, 1]
    assert store.unmined_epochs() == [1] and store.pending_epochs() == 1
    store.epoch_sent(1, "0xabc")
    store.epoch_failed(1, "nonce too low")
    store.epoch_mined(1, 17, "0x" + "22" * 32, None, T + 5)
    e = store.epoch(1)
    assert (e["status"], e["attempts"], e["block"], e["gas"], e["root"]) == \
        ("mined", 2, 17, None, b"\x11" * 32)
    store.epoch_mined(1, 17, "0x" + "22" * 32, 50000, T + 5)
    assert store.last_anchor()["gas"] == 50000 and store.pending_epochs() == 0
    assert [e["epoch"] for e in store.recent_epochs()] == [1] == [e["epoch"] for e in store.epochs()]


def test_a_transaction_is_all_or_nothing_and_a_savepoint_costs_only_itself(store):
    with pytest.raises(RuntimeError), store.transaction():
        store.add_message(DEV, 1, "t", 0, None, h(1), b"r", T)
        raise RuntimeError("midway")
    assert store.message_count() == 0 and not store.db.in_transaction
    with store.transaction():
        store.add_message(DEV, 1, "t", 0, None, h(1), b"r", T)
        with pytest.raises(Exception, match="(?i)unique"), store.savepoint():
            store.add_message(DEV, 2, "t", 0, None, h(2), b"r", T)
            store.add_message(DEV, 1, "t", 0, None, h(1), b"r", T)   # the same (device, seq)
        store.add_message(DEV, 3, "t", 0, None, h(3), b"r", T)
    assert [r["seq"] for r in store.messages()] == [1, 3]


def test_objects(store):
    with store.transaction():
        for oid, t in (("0011", 5), ("0022", 4)):
            store.objects.register(CAM, oid, 4, 1765000000 + t, "motion", "image/jpeg", 100, 50,
                                   2, b"\x01" * 32, b"\x02" * 64, T)
        store.objects.register(CAM, "0011", 9, 0, None, None, 1, 1, 1, b"", b"", T)  # known
        assert store.objects.add_chunk(CAM, "0011", 0, h("c0"))
        assert not store.objects.add_chunk(CAM, "0011", 0, h("c0"))
        store.objects.add_chunk(CAM, "0022", 0, h("c0"))          # the same chunk bytes
        store.objects.set_progress([(CAM, "0011", 1, 60, T + 1, None)])
    state = store.objects.upload_state(CAM, "0011")
    assert state == (2, b"\x02" * 64, 1) and type(state.hashes) is bytes
    assert store.objects.upload_state(CAM, "0033") is None
    assert store.objects.chunk_indexes(CAM, "0011") == [0]
    assert store.objects.has_chunk(CAM, "0011", 0) and not store.objects.has_chunk(CAM, "0011", 1)
    assert [o["oid"] for o in store.objects.list()] == ["0022", "0011"]
    o = store.objects.get(CAM, "0011")
    assert (o["bytes"], o["stored"], o["root"], o["event"]) == (60, 1, b"\x01" * 32, "motion")
    assert store.objects.find("0011")["oid"] == "0011"
    assert store.objects.find(CAM + "-0022")["oid"] == "0022"
    with pytest.raises(KeyError):
        store.objects.find("0044")
    assert [o["oid"] for o in store.objects.recent(CAM, 1, ("oid", "time"))] == ["0011"]
    assert [c.oid for c in store.objects.retention_candidates(T + 0.5)] == ["0022"]
    assert store.objects.total_bytes() == 60 and type(store.objects.total_bytes()) is int
    with store.transaction():
        assert store.objects.delete(CAM, "0011") == []     # its chunk is 0022's too
        assert store.objects.delete(CAM, "0022") == [h("c0")]


def test_audits_and_the_keepers_counters(store):
    assert store.audits.last() is None and store.audits.state("next") == 0
    first = store.audits.start(T, "sample", 12, "0x" + "33" * 32)
    second = store.audits.start(T + 1, "all", 13, "0x" + "44" * 32)
    assert (first, second) == (1, 2)
    records = [Record(0, 1, 0, -1, h(0), "ok", None, h("r0")),
               Record(1, 1, 1, 2, None, "failed", "gone", h("r1"))]
    store.audits.add_records(second, records)
    assert store.audits.records(second) == records
    store.audits.finish(second, 2, 1, 0, "ab" * 32, 0)
    store.audits.set_repaired(second, 1, 1, None)
    store.audits.set_error(second, "chain down")
    store.audits.set_error(second, "later")            # the first alarm stays
    a = store.audits.last()
    assert (a["id"], a["status"], a["alarm"], a["repaired"], a["ok"]) == \
        (2, "error", "chain down", 1, 1)
    store.audits.set_anchored(first, "0xdef", 20)
    store.audits.set_empty(second)
    assert store.audits.get(first)["tx_hash"] == "0xdef" and store.last_audit()["status"] == "empty"
    store.blobs.add(h("b"), 10, 2, 4, T)
    store.audits.add_repair(T, h("b"), 1, "lost", "below k")
    store.audits.add_repair(T, h("gone"), 1, "lost", None)   # not held: not counted
    assert store.audits.repair_count() == 2 and store.audits.unrepairable() == 1
    store.audits.add_repair(T + 1, h("b"), 2, "repaired", None)
    assert store.audits.unrepairable() == 0
    store.audits.set_state("next", 7)
    store.audits.set_state("next", 8)
    assert store.audits.state("next") == 8


def test_blobs_and_shares(store):
    for i in (3, 1, 2):                                 # oldest first is insertion order
        assert store.blobs.add(h(i), 100 + i, 2, 4, T - i)
    assert not store.blobs.add(h(1), 1, 1, 1, T)
    assert store.blobs.digests() == [h(3), h(1), h(2)]
    assert store.blobs.get(h(1)) == (101, 2, 4) and store.blobs.get(h(9)) is None
    store.blobs.add_shares([(h(1), j, "p1", 10 * j, 7) for j in range(4)])
    store.blobs.add_shares([(h(1), 0, "p2", 0, 8)])      # replaces share 0's location
    assert store.blobs.location(h(1), 0) == ("p2", 0, 8) and store.blobs.location(h(1), 9) is None
    assert store.blobs.root_used(1, 2) and not store.blobs.root_used(4, 5)
    assert store.blobs.live_bytes("p1") == 21 and type(store.blobs.live_bytes("p1")) is int
    assert sorted(store.blobs.in_pack("p1")) == [(h(1), j, 10 * j, 7) for j in (1, 2, 3)]
    store.blobs.move_shares([("p3", 0, h(1), 1, "p1"), ("p3", 9, h(1), 2, "elsewhere")])
    assert store.blobs.location(h(1), 1) == ("p3", 0, 7)
    assert store.blobs.location(h(1), 2) == ("p1", 20, 7)
    store.blobs.delete(h(1))
    assert store.blobs.get(h(1)) is None and store.blobs.live_bytes("p1") == 0


def test_peers_invitations_nonces_and_what_is_held_for_them(store):
    peers = store.peers
    peers.add("ab" * 32, "https://a:8443", 1000, 500, T, T + 10)
    peers.add("cd" * 32, "https://c:8443", 1, 1, T, T + 10)
    assert peers.set_status("ab" * 32, "failed")
    peers.add("ab" * 32, "https://a2:8443", 2000, 600, T, T + 20)    # paired again: active
    p = peers.get("ab" * 32)
    assert (p.endpoint, p.capacity, p.status, p.term_end) == ("https://a2:8443", 2000, "active",
                                                              T + 20)
    assert peers.restore([{"name": "ab" * 32, "endpoint": "x"},
                          {"name": "ef" * 32, "endpoint": "https://e"}], now=T) == 1
    assert [q.name for q in peers.all()] == ["ab" * 32, "cd" * 32, "ef" * 32]
    assert [q.name for q in peers.find("CD")] == ["cd" * 32]
    assert peers.update("cd" * 32, quota=5, last_error="x") and not peers.update("00", quota=1)
    peers.unreachable("cd" * 32, T, "refused")
    peers.unreachable("cd" * 32, T + 5, "again")
    assert peers.get("cd" * 32).unreachable_since == T
    peers.seen("cd" * 32, T + 6)
    peers.audited("cd" * 32, T + 7, 2)
    peers.audited("cd" * 32, T + 8, 1)
    c = peers.get("cd" * 32)
    assert (c.unreachable_since, c.last_error, c.audit_failures) == (None, None, 3)
    assert [q.name for q in peers.all("active")] == ["ab" * 32, "cd" * 32, "ef" * 32]

    peers.add_invitation(b"\x01" * 16, 50, T + 100, T)
    assert peers.take_invitation(b"\x01" * 16, "ab" * 32, T) == \
        (b"\x01" * 16, 50, T + 100, T, "ab" * 32)
    assert peers.take_invitation(b"\x01" * 16, "cd" * 32, T) is None
    assert peers.invitation(b"\x01" * 16).used_by == "ab" * 32 and len(peers.invitations()) == 1

    assert peers.remember_nonce("ab" * 32, b"n1", T + 60, T)
    assert not peers.remember_nonce("ab" * 32, b"n1", T + 60, T + 1)   # a replay
    assert peers.remember_nonce("ab" * 32, b"n1", T + 200, T + 61)     # expired: new again
    assert peers.forget_nonces(T + 1000) == 1

    assert peers.next_slot("ab" * 32) == 0
    for slot in range(3):
        peers.add_held("ab" * 32, slot, h(slot), slot, h("leaf%d" % slot), 100, "pk", slot * 100, T)
    assert peers.next_slot("ab" * 32) == 3
    held = peers.held("ab" * 32, 1)
    assert (held.digest, held.offset, held.pack) == (h(1), 100, "pk") and type(held.leaf) is bytes
    assert [x.slot for x in peers.held_after("ab" * 32, 0, 1)] == [1]
    assert peers.leaves("ab" * 32, 2) == [h("leaf0"), h("leaf1")]
    assert peers.release("ab" * 32, 1, '{"sig": 1}')
    assert not peers.release("ab" * 32, 1, '{"sig": 2}')
    assert peers.held("ab" * 32, 1)[6:9] == (None, None, '{"sig": 1}')
    assert peers.used("ab" * 32) == 200 and peers.used_by_owner() == {"ab" * 32: 200}

    path = [h("p0"), h("p1")]
    assert peers.set_commit("ab" * 32, 5, 3, h("root"), 0, 4, path)
    assert not peers.set_commit("ab" * 32, 4, 9, h("old"), 0, 4, path)
    commit = peers.commit("ab" * 32)
    assert (commit.epoch, commit.count, commit.root, commit.path) == (5, 3, h("root"), path)
    peers.set_catalog("ab" * 32, b"cbor", T)
    peers.set_catalog("ab" * 32, b"cbor2", T + 1)
    assert peers.catalog("ab" * 32) == (b"cbor2", T + 1) and peers.catalog("00") is None


def test_placements_offbox_and_the_network_commits(store):
    pl = store.placements
    for i in (2, 1, 3):
        store.blobs.add(h(i), 1000 * i, 2, 4, T)
    assert pl.unqueued(10) == [h(2), h(1), h(3)]
    assert pl.queue(h(2), h("s2"), 10, 2, 3, T) and not pl.queue(h(2), h("x"), 1, 1, 1, T)
    pl.queue(h(1), h("s1"), 11, 2, 3, T)
    assert pl.unqueued(10) == [h(3)]
    assert pl.get(h(2)) == Offbox(h(2), h("s2"), 10, 2, 3, T, None, None)
    assert pl.digest_of_sealed(h("s1")) == h(1) and pl.digest_of_sealed(h("no")) is None
    for slot, peer in enumerate(("p1", "p2")):
        pl.add(Placement(peer, 0, h(2), slot, h("l%d" % slot), 50, "sending", None))
    assert [p.peer for p in pl.sending()] == ["p1", "p2"]
    assert [o.digest for o in pl.incomplete(10)] == [h(1), h(2)]   # fewest shares first
    pl.set_state("p1", 0, "placed", T + 1)
    pl.set_state("p2", 0, "placed")
    s = pl.state(h(2))
    assert (s.placed, s.sending, s.offbox.durable_at) == (2, 0, None)
    s = pl.refresh(h(2), T + 2)
    assert (s.offbox.durable_at, s.offbox.complete_at) == (T + 2, None)
    assert pl.counts() == {"queued": 2, "durable": 1, "complete": 0}
    assert pl.incomplete_count() == 2
    assert pl.not_offbox() == (2, 1000 + 3000)          # h(1) queued, h(3) not yet
    assert pl.of_blob(h(2))[0].placed_at == T + 1 and pl.of_blob(h(2))[1].placed_at is None
    assert [p.slot for p in pl.of_peer("p1", ["placed"])] == [0] and pl.of_peer("p1", ["x"]) == []
    assert pl.next_slot("p1") == 1 and pl.bytes_on("p1") == 50
    assert pl.peers() == ["p1", "p2"] and pl.peers_holding() == {"p1": 1, "p2": 1}
    assert pl.leaves("p1") == [h("l0")]
    pl.add(Placement("p1", 1, h(1), 0, h("l9"), 5, "sending", None))
    pl.forget("p1", 1)
    assert pl.next_slot("p1") == 1
    pl.restore_blob(h(3), h("s3"), 30, 2, 3, [("p3", 0, 0, None, None), ("p3", 1, 1, h("x"), 9)],
                    now=T)
    assert pl.leaves("p3") == []                         # slot 0's leaf is not known
    pl.restore_released([("p4", 0, h("s9"), 0, h("l"), 3)])
    pl.restore_released([("p4", 0, h("s9"), 0, h("l"), 3)])   # again: nothing
    assert [p.state for p in pl.of_peer("p4")] == ["released"]
    assert pl.mark_failed("p1") == [h(2)] and pl.of_peer("p1")[0].state == "failed"
    store.blobs.delete(h(1))
    assert pl.orphans(10) == [h(1)] and type(pl.orphans(10)[0]) is bytes
    assert pl.drop(h(2)) == 1 and pl.get(h(2)) is None

    pl.add_commit(1, h("r1"), b"L" * 72, b"c", T)
    pl.commit_sent(1, "0x1")
    pl.set_snapshot(1, h("snap"))
    pl.add_commit(1, h("r1b"), b"M" * 144, b"d", T + 1)     # taken over: a fresh row
    c = pl.commit(1)
    assert (c.root, c.status, c.tx_hash, c.snapshot, c.leaves) == \
        (h("r1b"), "pending", None, None, b"M" * 144)
    pl.add_commit(2, h("r2"), b"", b"", T)
    pl.commit_sent(1, "0x2")
    pl.commit_mined(1, 30, None)
    pl.commit_failed(2, "reverted")
    assert [c.epoch for c in pl.unmined_commits()] == [2]
    assert pl.last_commit().epoch == 2 and pl.last_mined().epoch == 1
    pl.drop_commit(1)                                    # mined: kept
    pl.drop_commit(2)
    assert pl.commit(1) is not None and pl.commit(2) is None
