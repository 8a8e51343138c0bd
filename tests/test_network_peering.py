"""The peer transport, pairing and the provider side (docs/network.md): two or three
gateways (tests/helpers/network.py) over real HTTPS on loopback, real SQLite."""
import hashlib

import pytest

from gateway.network import protocol
from tests.helpers.network import PeerNode, pair

pytestmark = pytest.mark.integration


def record(i, size=100, k=2, m=3):
    """A share record: share i % m of a made-up sealed blob numbered i."""
    body = bytes([i % 256]) * -(-size // k)
    return protocol.make_record(k, m, i % m, size, hashlib.sha256(b"blob %d" % i).digest(),
                                body)


@pytest.fixture
def nodes(tmp_path):
    made = []

    def node(name, **options):
        n = PeerNode(tmp_path / name, **options)
        made.append(n)
        return n
    yield node
    for n in made:
        n.close()


def test_put_get_list(nodes):
    a, b = nodes("a"), nodes("b")
    pair(a, b)
    to_a = b.client_to(a)
    recs = [record(i) for i in range(3)]
    for i, r in enumerate(recs):
        to_a.put_slot(i, r)
    assert [to_a.get_slot(i) for i in range(3)] == recs
    listed = list(to_a.slots())
    assert [s["slot"] for s in listed] == [0, 1, 2]
    assert listed[1]["digest"] == protocol.parse_record(recs[1]).sealed
    assert listed[1]["size"] == len(recs[1])
    hello = to_a.hello()
    assert hello == {"name": a.name, "quota": 10 ** 9, "used": sum(map(len, recs)), "slots": 3}
