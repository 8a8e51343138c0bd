"""The on-flash spool (agent/spool.py): order, acks, byte budget, recovery after damage."""
import os

import pytest

from agent.spool import Spool

pytestmark = pytest.mark.unit

RECORD = 13  # header bytes in front of each payload


class PowerCut(Exception):
    pass


def payload(seq):
    return b"reading-%04d" % seq  # 12 bytes: 25 on flash


def filled(path, n, **kw):
    spool = Spool(str(path), **kw)
    for seq in range(1, n + 1):
        spool.append(seq, payload(seq))
    return spool


def held(spool):
    return {seq: spool.read(seq) for seq in spool.pending()}


def segment_files(path):
    return sorted(n for n in os.listdir(path) if n.endswith(".seg"))


def test_records_come_back_in_order_until_acked(tmp_path):
    spool = filled(tmp_path / "q", 5)
    assert spool.pending() == [1, 2, 3, 4, 5]
    assert [spool.read(s) for s in spool.pending()] == [payload(s) for s in range(1, 6)]
    spool.ack(3)
    assert spool.pending() == [4, 5]
    spool.ack(2)  # an old ack changes nothing
    assert spool.pending() == [4, 5]
    assert Spool(str(tmp_path / "q")).pending() == [4, 5]
    with pytest.raises(ValueError):
        spool.append(5, b"again")


def test_acked_segments_are_deleted_from_flash(tmp_path):
    spool = filled(tmp_path, 8, segment_bytes=2 * (RECORD + 12))  # 2 records a segment
    assert len(segment_files(tmp_path)) == 4
    spool.ack(3)  # segment 1 is all acked, segment 2 still holds 4
    assert segment_files(tmp_path) == ["00000002.seg", "00000003.seg", "00000004.seg"]
    spool.ack(8)
    assert segment_files(tmp_path) == [] and spool.bytes_used() == 0


def test_budget_drops_whole_oldest_segments_and_counts_them_across_reopen(tmp_path):
    spool = filled(tmp_path, 20, max_bytes=200, segment_bytes=2 * (RECORD + 12))
    assert spool.bytes_used() <= 200
    assert spool.pending() == list(range(13, 21))  # 4 segments of 2 fit in 200 bytes
    assert spool.drops == 12
    assert spool.base() == 13
    reopened = Spool(str(tmp_path), max_bytes=200, segment_bytes=50)
    assert (reopened.drops, reopened.pending(), reopened.next_seq()) == (12, spool.pending(), 21)


def test_acked_records_are_not_counted_as_drops(tmp_path):
    spool = filled(tmp_path, 4, max_bytes=100, segment_bytes=50)  # segments: 1-2, 3-4
    spool.ack(1)
    spool.append(5, payload(5))  # over budget: segment 1 goes, with 1 acked and 2 not
    assert spool.pending() == [3, 4, 5] and spool.drops == 1


def test_sequence_keeps_rising_after_everything_is_acked_and_deleted(tmp_path):
    spool = filled(tmp_path, 3)
    spool.ack(3)
    assert segment_files(tmp_path) == []
    reopened = Spool(str(tmp_path))
    assert reopened.next_seq() == 4 and reopened.base() == 4 and reopened.pending() == []


def test_torn_tail_at_every_offset_yields_only_complete_records(tmp_path):
    filled(tmp_path / "whole", 3)
    with open(tmp_path / "whole" / "00000001.seg", "rb") as f:
        data = f.read()
    last = 2 * (RECORD + 12)
    for cut in range(last, len(data)):
        flash = tmp_path / ("cut%d" % cut)
        flash.mkdir()
        with open(flash / "00000001.seg", "wb") as f:
            f.write(data[:cut])
        spool = Spool(str(flash))
        assert held(spool) == {1: payload(1), 2: payload(2)}, cut
        spool.append(3, b"after the cut")  # the seq of the torn record was never committed
        assert held(Spool(str(flash))) == {1: payload(1), 2: payload(2), 3: b"after the cut"}


def test_flipped_byte_drops_that_record_and_the_rest_of_its_segment_only(tmp_path):
    filled(tmp_path / "whole", 6, segment_bytes=3 * (RECORD + 12))  # segments: 1-3, 4-6
    segments = {}
    for name in segment_files(tmp_path / "whole"):
        with open(tmp_path / "whole" / name, "rb") as f:
            segments[name] = f.read()
    second = RECORD + 12
    for at in range(second, 2 * second):  # every byte of record 2: header, check, payload
        flash = tmp_path / ("flip%d" % at)
        flash.mkdir()
        for name, data in segments.items():
            data = bytearray(data)
            if name == "00000001.seg":
                data[at] ^= 0x40
            with open(flash / name, "wb") as f:
                f.write(data)
        spool = Spool(str(flash))
        assert spool.pending() == [1, 4, 5, 6], at
        assert held(spool)[4] == payload(4)


def test_huge_length_in_a_damaged_header_is_not_read(tmp_path):
    filled(tmp_path, 2)
    with open(tmp_path / "00000001.seg", "r+b") as f:
        f.seek(RECORD + 12 + 5)
        f.write(b"\xff\xff\xff\xf0")  # record 2 claims to be 4 GB long
    assert Spool(str(tmp_path)).pending() == [1]


def test_lost_state_keeps_every_unacked_record(tmp_path):
    spool = filled(tmp_path, 6, segment_bytes=2 * (RECORD + 12))
    spool.ack(3)  # deletes segment 1; segment 2 still holds the acked 3
    with open(tmp_path / "state", "r+b") as f:
        f.seek(3)
        f.write(b"\x07")  # acked 3 becomes 7: the check no longer matches
    reopened = Spool(str(tmp_path))
    assert reopened.pending() == [3, 4, 5, 6]  # 3 goes again: a duplicate, nothing lost
    assert reopened.next_seq() == 7


def test_state_tmp_left_by_a_power_cut_is_used(tmp_path):
    spool = filled(tmp_path, 4)
    spool.ack(1)
    os.rename(tmp_path / "state", tmp_path / "state.old")
    spool.ack(3)  # as if cut after writing state.tmp, before renaming it (FAT path)
    os.rename(tmp_path / "state", tmp_path / "state.tmp")
    os.rename(tmp_path / "state.old", tmp_path / "state")
    assert Spool(str(tmp_path)).pending() == [4]


def test_rename_that_cannot_replace_a_file_still_saves_the_state(tmp_path, monkeypatch):
    rename = os.rename

    def fat_rename(src, dst):
        if os.path.exists(dst):
            raise OSError(17, "file exists")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", fat_rename)
    spool = filled(tmp_path, 5)
    spool.ack(2)
    spool.ack(4)
    assert sorted(os.listdir(tmp_path)) == ["00000001.seg", "state"]
    assert Spool(str(tmp_path)).pending() == [5]


@pytest.mark.parametrize("cause", ["ack", "budget"])
def test_power_cut_between_state_and_delete_neither_resends_nor_recounts(
        tmp_path, monkeypatch, cause):
    spool = filled(tmp_path, 4, max_bytes=100, segment_bytes=50)  # segments: 1-2, 3-4

    def cut(path):
        raise PowerCut(path)

    monkeypatch.setattr(os, "remove", cut)
    with pytest.raises(PowerCut):
        spool.ack(2) if cause == "ack" else spool.append(5, payload(5))
    monkeypatch.undo()
    reopened = Spool(str(tmp_path), max_bytes=100, segment_bytes=50)
    assert "00000001.seg" not in os.listdir(tmp_path)
    assert reopened.pending()[:2] == [3, 4]
    assert reopened.drops == (0 if cause == "ack" else 2)


def test_record_larger_than_a_segment_gets_one_to_itself(tmp_path):
    spool = filled(tmp_path, 1, segment_bytes=64)
    frame = bytes(range(256)) * 4
    spool.append(2, frame)
    spool.append(3, payload(3))
    assert segment_files(tmp_path) == ["00000001.seg", "00000002.seg", "00000003.seg"]
    assert held(Spool(str(tmp_path), segment_bytes=64)) == {1: payload(1), 2: frame,
                                                             3: payload(3)}


def test_record_larger_than_the_budget_is_refused(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=100)
    with pytest.raises(ValueError, match="exceeds the budget"):
        spool.append(1, bytes(100))
    assert spool.next_seq() == 1 and segment_files(tmp_path) == []


def test_base_is_the_lowest_seq_still_held(tmp_path):
    spool = Spool(str(tmp_path))
    assert spool.base() == 1
    for seq in (1, 2, 3):
        spool.append(seq, payload(seq))
    assert spool.base() == 1
    spool.ack(2)
    assert spool.base() == 3
    spool.ack(3)
    assert spool.base() == 4 == spool.next_seq()
