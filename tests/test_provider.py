"""The Provider's erasure-coded store: shares over roots, integrity on read, rebuild."""
import hashlib
import os
import shutil

import pytest

from gateway import provider
from gateway.provider import Provider, Unrecoverable


def blob(n, seed=0):
    data = hashlib.sha256(b"%d" % seed).digest() * (n // 32 + 1)
    data = data[:n]
    return hashlib.sha256(data).digest(), data


@pytest.fixture
def prov(tmp_path):
    data = str(tmp_path / "gw")
    provider.configure(data, [], 2, 4)
    return Provider(data)


def test_shares_spread_over_both_roots_and_read_back(prov):
    digest, data = blob(10000)
    prov.put(digest, data)
    for root in prov.roots:
        assert len(os.listdir(os.path.join(root, digest.hex()[:2]))) == 2
    assert prov.get(digest) == data
    assert prov.health(digest) == (4, 4)


def test_a_flipped_byte_is_found_and_rebuilt(prov):
    digest, data = blob(4133)
    prov.put(digest, data)
    path = prov.share_path(digest, 1)
    raw = bytearray(open(path, "rb").read())
    raw[-7] ^= 0x01
    open(path, "wb").write(bytes(raw))
    assert prov.get(digest) == data            # read from the good shares, checked
    assert sorted(prov.shares(digest)) == [0, 2, 3]
    assert prov.rebuild(digest) == [1]
    assert prov.health(digest) == (4, 4)


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
        os.remove(prov.share_path(digest, j))
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


def test_single_copy_chunks_of_an_older_gateway_are_migrated(tmp_path):
    data = str(tmp_path / "gw")
    digest, chunk = blob(4096)
    flat = os.path.join(data, "objects", digest.hex()[:2])
    os.makedirs(flat)
    open(os.path.join(flat, digest.hex()), "wb").write(chunk)
    prov = Provider(data)
    assert prov.get(digest) == chunk
    assert not os.path.exists(os.path.join(flat, digest.hex()))
