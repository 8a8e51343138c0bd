"""store.backup: the metadata deltas a restore replays (gateway/store/backup.py), on SQLite
and PostgreSQL."""
import hashlib

import pytest

from gateway.anchor.epochs import seal_epoch
from gateway.store.backup import Mark
from gateway.store.database import Store

pytestmark = pytest.mark.unit


def message(store, device, seq):
    raw = b"message %s %d" % (device.encode(), seq)
    digest = hashlib.sha256(raw).digest()
    with store.transaction():
        store.add_message(device, seq, "t", 1765000000 + seq, 3, digest, raw, 1765000000.5)
    return digest, raw


def blobs_of(store):
    """{digest: bytes} of every message: what the restored Provider would hold."""
    return {m.digest: m.raw for m in store.messages_from(0)}


def tables(store):
    return {t: sorted(map(tuple, store.db.execute("SELECT * FROM %s" % t)))
            for t in ("devices", "messages", "epochs", "objects", "object_chunks", "gaps",
                      "refused", "counters")}


@pytest.fixture
def source(tmp_path, new_database_url):
    s = Store.open(str(tmp_path / "lost"), new_database_url())
    s.add_device("aa" * 8, b"\x04" + bytes(64), "tracker-1")
    s.add_device("bb" * 8, b"\x04" + bytes(range(64)), "camera-1", "camera")
    yield s
    s.close()


@pytest.fixture
def replay(tmp_path, new_database_url):
    """replay(deltas, raw_of): a new store (on the same backend) the deltas are replayed
    into, and the messages left out."""
    def replay(deltas, raw_of):
        s = Store.open(str(tmp_path / "restored"), new_database_url())
        with s.transaction():
            lost = sum(s.backup.apply(d, raw_of) for d in deltas)
        return s, lost
    return replay


def test_deltas_replayed_in_order_rebuild_the_tables(source, replay):
    for seq in range(1, 4):
        message(source, "aa" * 8, seq)
    seal_epoch(source)
    source.epoch_mined(1, 10, "0x" + "11" * 32, 50000, 1765000100.0)
    with source.transaction():
        source.objects.register("bb" * 8, "0011", 4, 1765000000, "motion", "image/jpeg", 100,
                                50, 2, bytes(32), bytes(64), 1765000001.0)
        source.objects.add_chunk("bb" * 8, "0011", 0, b"\x01" * 32)
        source.add_gap("aa" * 8, 7, 8, 1765000002.0)
        source.add_counts({"duplicates": 2})
    first, mark = source.backup.delta(Mark(0, 0, 0.0), 1765000050.0)
    assert mark == Mark(1, 1, 1765000050.0)
    for seq in range(4, 6):
        message(source, "aa" * 8, seq)
    seal_epoch(source)                                 # epoch 2, not mined yet
    second, mark2 = source.backup.delta(mark, 1765000060.0)
    assert [e[0] for e in second["epochs"]] == [2] and len(second["messages"]) == 2
    assert second["objects"] == [] and second["gaps"] == []     # nothing new there
    source.epoch_mined(2, 12, "0x" + "22" * 32, 50000, 1765000200.0)
    third, _ = source.backup.delta(mark2, 1765000070.0)
    assert [e[0] for e in third["epochs"]] == [2]     # sent again, now mined

    raws = blobs_of(source)
    restored, lost = replay([first, second, third], raws.get)
    assert lost == 0
    assert tables(restored) == tables(source)
    assert restored.epoch_leaves(1) == source.epoch_leaves(1)
    restored.close()


def test_a_message_whose_blob_is_lost_is_left_out_and_counted(source, replay):
    kept = message(source, "aa" * 8, 1)
    message(source, "aa" * 8, 2)
    seal_epoch(source)
    delta, _ = source.backup.delta(Mark(0, 0, 0.0), 1765000050.0)
    restored, lost = replay([delta], {kept[0]: kept[1]}.get)
    assert lost == 1 and restored.message_count() == 1
    restored.close()


def test_an_object_deleted_by_retention_is_deleted_on_a_replay(source, replay):
    with source.transaction():
        for oid in ("0011", "0022"):
            source.objects.register("bb" * 8, oid, 4, 1765000000, "motion", "image/jpeg", 100,
                                    50, 2, bytes(32), bytes(64), 1765000001.0)
            source.objects.add_chunk("bb" * 8, oid, 0, hashlib.sha256(oid.encode()).digest())
    first, mark = source.backup.delta(Mark(0, 0, 0.0), 1765000050.0)
    with source.transaction():
        source.objects.delete("bb" * 8, "0011")
    second, _ = source.backup.delta(mark, 1765000060.0)
    restored, _ = replay([first, second], {}.get)
    assert [o["oid"] for o in restored.objects.list()] == ["0022"]
    assert tables(restored)["object_chunks"] == tables(source)["object_chunks"]
    restored.close()


def test_acked_follows_the_messages_restored(source, replay):
    for seq in (1, 2, 3):
        message(source, "aa" * 8, seq)
    seal_epoch(source)
    source.set_acked({"aa" * 8: 3}, 1765000000.0)
    delta, _ = source.backup.delta(Mark(0, 0, 0.0), 1765000050.0)
    restored, _ = replay([delta], blobs_of(source).get)
    with restored.transaction():
        restored.backup.fix_acked()
    assert restored.device("aa" * 8)["acked"] == 3
    restored.close()


def test_after_a_replay_the_next_message_gets_the_next_id(source, replay):
    for seq in (1, 2, 3):
        message(source, "aa" * 8, seq)
    seal_epoch(source)
    delta, _ = source.backup.delta(Mark(0, 0, 0.0), 1765000050.0)
    restored, _ = replay([delta], blobs_of(source).get)
    message(restored, "aa" * 8, 4)
    assert [m.id for m in restored.messages_from(0)] == [1, 2, 3, 4]
    restored.close()
