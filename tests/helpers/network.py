"""Gateways of the Provider network in one test process: real stores, real HTTPS on loopback.

    a, b = PeerNode(tmp_path / "a"), PeerNode(tmp_path / "b")
    try:
        pair(a, b)                        # a invites, b adds: both are peers of the other
        a.client_to(b).put_slot(0, record)
        b.refused("slot_gap")             # b's counter peer_refused_slot_gap
    finally:
        a.close(); b.close()

or `with PeerNode(path) as a:`. A node is a data directory with its Store (Store.open),
its Identity and a started PeerServer on 127.0.0.1 and a free port (`url`). Keyword
arguments of PeerNode go to PeerServer (quota_default, rate, burst, ...).
"""
import os

from gateway.network import pairing
from gateway.network.client import PeerClient
from gateway.network.identity import Identity
from gateway.network.server import PeerServer
from gateway.store.database import Store

GB = 10 ** 9


class PeerNode:
    def __init__(self, data_dir, **server_options):
        self.data_dir = str(data_dir)
        os.makedirs(self.data_dir, exist_ok=True)
        self.store = Store.open(self.data_dir)
        self.identity = Identity.load_or_create(self.data_dir)
        self.name, self.short = self.identity.name, self.identity.short
        try:
            self.server = PeerServer(self.data_dir, self.identity, "127.0.0.1", 0,
                                     **server_options).start()
        except BaseException:
            self.store.close()
            raise
        self.url = self.server.url
        self.clients = []

    def __repr__(self):
        return "PeerNode(%s at %s)" % (self.short, self.url)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def client_to(self, other, timeout=10):
        """A PeerClient from this node to another (pinned to its name), closed with this
        node."""
        c = PeerClient(self.identity, other.name, other.url, timeout)
        self.clients.append(c)
        return c

    def refused(self, reason):
        """How many requests this node's server refused for reason (its store counter)."""
        self.server.flush()
        return self.store.counts().get("peer_refused_%s" % reason, 0)

    def close(self):
        for c in self.clients:
            c.close()
        self.server.stop()
        self.store.close()


def pair(a, b, capacity=GB, back=None):
    """A real invitation from a, added by b: a holds up to `capacity` bytes of b's, b up to
    `back` (default the same) of a's. Returns b's row of a (store.peers)."""
    text = pairing.invite(a.store, a.identity, a.url, capacity, 3600)
    return pairing.add(b.store, b.identity, text, b.url, capacity if back is None else back)
