"""The Provider's erasure-coded store: shares over roots, integrity on read, rebuild."""
import hashlib
import os
import shutil

import pytest

from gateway.store import packs, provider
from gateway.store.database import Store
from gateway.store.provider import Provider, Unrecoverable

pytestmark = pytest.mark.unit  # its cases on PostgreSQL are integration (conftest)


def blob(n, seed=0):
    data = hashlib.sha256(b"%d" % seed).digest() * (n // 32 + 1)
    data = data[:n]
    return hashlib.sha256(data).digest(), data


@pytest.fixture
def prov(tmp_path, database_url):
    data = str(tmp_path / "gw")
    provider.configure(data, [], 2, 4)
    return open_provider(data, database_url)


def open_provider(data, url=None):
    """The Provider of data dir `data` on a Store of its own, as another process would (on
    SQLite or PostgreSQL: the URL this test opened data's store with)."""
    return Provider.open(Store.open(data, url))


def reopen(prov):
    return open_provider(prov.store.data_dir)


def flip(prov, digest, j, at=-7):
    """Flip one bit of share j's record in its pack file."""
    path, offset, length = prov.share_location(digest, j)
    with open(path, "r+b") as f:
        f.seek(offset + at % length)
        b = f.read(1)[0]
        f.seek(offset + at % length)
        f.write(bytes([b ^ 0x01]))


def test_shares_spread_over_both_roots_and_read_back(prov):
    digest, data = blob(10000)
    prov.put(digest, data)
    for j in range(4):
        path, _, _ = prov.share_location(digest, j)
        assert path.startswith(prov.roots[j % 2] + os.sep)
    assert prov.get(digest) == data
    assert prov.health(digest) == (4, 4)


def test_many_blobs_share_one_pack_per_root(prov):
    blobs = [blob(4096, i) for i in range(50)]
    for d, data in blobs:
        prov.put(d, data, sync=False)
    prov.flush()
    for root in prov.roots:
        assert len(os.listdir(os.path.join(root, "packs"))) == 1
    reopened = reopen(prov)
    assert all(reopened.get(d) == data for d, data in blobs)


def test_appends_are_readable_before_flush_and_survive_short_writes(prov, monkeypatch):
    real_writev = os.writev
    calls = []

    def short_writev(fd, buffers):  # a disk that takes at most 1000 bytes per call
        calls.append(len(buffers))
        room, out = 1000, []
        for b in buffers:
            out.append(bytes(b)[:room])
            room -= len(out[-1])
            if not room:
                break
        return real_writev(fd, out)
    monkeypatch.setattr(packs.os, "writev", short_writev)
    blobs = [blob(1000 + i, i) for i in range(300)]  # 600 records a root: over IOV_MAX buffers
    for d, data in blobs:
        prov.put(d, data, sync=False)
    assert prov.get(blobs[0][0]) == blobs[0][1]      # written for the read, not yet synced
    prov.flush()
    assert max(calls) <= packs.IOV_MAX
    reopened = reopen(prov)
    assert all(reopened.get(d) == data for d, data in blobs)


def test_a_flipped_byte_is_found_and_rebuilt(prov):
    digest, data = blob(4133)
    prov.put(digest, data)
    flip(prov, digest, 1)
    assert prov.get(digest) == data            # read from the good shares, checked
    assert sorted(prov.shares(digest)) == [0, 2, 3]
    assert prov.rebuild(digest) == [1]
    assert prov.health(digest) == (4, 4)


def test_a_damaged_header_counts_the_share_as_missing(prov):
    digest, data = blob(4133)
    prov.put(digest, data)
    for j, at in ((0, 0), (1, 8), (2, provider.HEADER.size - 1)):  # magic, size, checksum
        flip(prov, digest, j, at=at)
    assert sorted(prov.shares(digest)) == [3]
    with pytest.raises(Unrecoverable):
        prov.get(digest)


def test_a_new_store_has_no_missing_root_and_a_wiped_one_stays_missing(tmp_path, database_url):
    data = str(tmp_path / "gw")
    provider.configure(data, [str(tmp_path / "disk1"), str(tmp_path / "disk2")], 2, 4)
    prov = open_provider(data, database_url)
    assert prov.missing_roots() == [] and all(os.path.isdir(r) for r in prov.roots)
    d, blob_data = blob(5000)
    prov.put(d, blob_data)
    prov.close()
    shutil.rmtree(prov.roots[0])
    again = open_provider(data)  # a restart does not paper over a lost disk
    assert again.missing_roots() == [again.roots[0]] and again.get(d) == blob_data


def test_losing_a_root_loses_nothing(prov):
    blobs = [blob(n, n) for n in (1, 100, 4096, 70000)]
    for d, data in blobs:
        prov.put(d, data)
    shutil.rmtree(prov.roots[1])
    assert prov.missing_roots() == [prov.roots[1]]
    for d, data in blobs:
        assert prov.get(d) == data
        assert prov.rebuild(d) == [1, 3]
    assert prov.missing_roots() == []
    assert all(prov.health(d) == (4, 4) for d, _ in blobs)


def test_below_k_good_shares_is_unrecoverable(prov):
    digest, data = blob(500)
    prov.put(digest, data)
    for j in (0, 1, 2):
        flip(prov, digest, j, at=provider.HEADER.size)
    with pytest.raises(Unrecoverable):
        prov.get(digest)
    with pytest.raises(Unrecoverable):
        prov.rebuild(digest)


def test_put_refuses_bytes_that_do_not_match_their_name(prov):
    digest, data = blob(100)
    with pytest.raises(ValueError):
        prov.put(digest, data + b"x")
    with pytest.raises(LookupError):
        prov.get(digest)


def test_layout_checks():
    with pytest.raises(ValueError):
        provider.check_layout(["a", "b"], 3, 2)
    with pytest.raises(ValueError):
        provider.check_layout([], 1, 1)
    assert provider.check_layout(["a", "b"], 2, 4) is None
    assert "does not survive" in provider.check_layout(["a", "b"], 2, 3)
    assert provider.check_layout(["a", "b", "c"], 2, 3) is None


def test_compaction_frees_deleted_shares_and_keeps_the_live_ones(prov):
    blobs = [blob(20000, i) for i in range(20)]
    for d, data in blobs:
        prov.put(d, data, sync=False)
    prov.flush()
    prov.close()                        # a later writer compacts what an earlier one wrote
    before = disk_bytes(prov)
    for d, _ in blobs[:15]:
        prov.delete(d)
    later = reopen(prov)
    assert later.compact() > 0
    assert disk_bytes(later) < before / 2
    for d, data in blobs[15:]:
        assert later.get(d) == data and later.health(d) == (4, 4)
    assert later.compact() == 0          # nothing left to gain


def test_compaction_leaves_a_pack_another_writer_is_filling(prov):
    digest, data = blob(3000)
    prov.put(digest, data)               # prov keeps its pack open and locked
    prov.delete(digest)
    other = reopen(prov)
    assert other.compact() == 0
    assert all(os.listdir(os.path.join(r, "packs")) for r in prov.roots)


def test_a_wiped_root_under_a_running_writer_gets_a_new_pack(prov):
    first = blob(4000, 1)
    prov.put(*first)
    shutil.rmtree(prov.roots[1])
    second = blob(4000, 2)
    prov.put(*second)                   # must not go into the unlinked pack
    assert reopen(prov).health(second[0]) == (4, 4)
    assert prov.health(first[0]) == (2, 4)


def disk_bytes(prov):
    return sum(os.path.getsize(os.path.join(r, "packs", n))
               for r in prov.roots for n in os.listdir(os.path.join(r, "packs")))
