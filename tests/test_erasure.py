"""gateway/store/erasure.py: ISA-L's parity shares are zfec's, byte for byte, and any k shares
rebuild the blob."""
import os

import pytest
import zfec

from gateway.store import erasure
from tests.helpers import vectors

pytestmark = pytest.mark.unit

VECTORS = vectors.load("erasure.json")["vectors"]
LAYOUTS = [(1, 1), (1, 2), (2, 2), (2, 3), (2, 4), (2, 6), (3, 5), (4, 8), (10, 20)]
SIZES = [1, 2, 3, 31, 32, 33, 63, 64, 65, 4097, 61456, 61457]


@pytest.fixture(params=["isal", "zfec"])
def coder(request, monkeypatch):
    if request.param == "zfec":
        monkeypatch.setattr(erasure, "ISAL", None)
    return request.param


def zfec_shares(data, k, m):
    n = -(-len(data) // k)
    blocks = [data[i * n:(i + 1) * n].ljust(n, b"\0") for i in range(k)]
    return [bytes(s) for s in zfec.Encoder(k, m).encode(blocks)]


def test_isal_is_what_encodes_here():
    assert erasure.ISAL is not None, (
        "ISA-L (libisal2) not found: `make setup` installs it (tools/ensure_system.py)")


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: "k%d-m%d-%dB" % (v["k"], v["m"],
                                                                     len(v["data"]) // 2))
def test_shares_match_the_vectors(coder, v):
    shares = erasure.encode(bytes.fromhex(v["data"]), v["k"], v["m"])
    assert [bytes(s).hex() for s in shares] == v["shares"]


@pytest.mark.parametrize("k,m", LAYOUTS)
def test_shares_are_zfecs_and_any_k_rebuild_the_blob(coder, k, m):
    for size in SIZES:
        data = os.urandom(size)
        shares = [bytes(s) for s in erasure.encode(data, k, m)]
        assert shares == zfec_shares(data, k, m), (k, m, size)
        for first in range(m - k + 1):  # lose all but k consecutive shares
            good = {j: shares[j] for j in range(first, first + k)}
            assert erasure.decode(good, size, k, m) == data
        good = {j: shares[j] for j in range(m - k, m)}  # parity (and the last blocks) only
        assert erasure.decode(good, size, k, m) == data


def test_any_buffer_and_the_empty_blob(coder):
    data = os.urandom(1001)
    for buf in (bytearray(data), memoryview(data)):
        assert [bytes(s) for s in erasure.encode(buf, 2, 4)] == zfec_shares(data, 2, 4)
    assert [bytes(s) for s in erasure.encode(b"", 2, 4)] == [b""] * 4
    assert erasure.decode({2: b"", 3: b""}, 0, 2, 4) == b""
