"""Pairing two gateways (docs/network.md, "Pairing").

The inviter makes an invitation (`invite`: a signed, single-use token with the capacity it
offers); the invitee `add`s it: checks it, calls POST /v1/pair on the inviter pinned to its
key, and records the peer. The inviter's side of /v1/pair is PeerServer.pair
(gateway/network/server.py), which records the invitee.

On each side the peer's row has `capacity` = what the peer holds for us at most and `quota`
= what we hold for it at most.
"""
import os
import time

from gateway.network import protocol
from gateway.network.client import PeerClient, PeerError
from gateway.store.peers import TERM


def invite(store, identity, endpoint, capacity, ttl_seconds, now=None):
    """A new invitation's text (ekinv1....), recorded in the store: whoever adds it within
    ttl_seconds pairs with us, and we hold up to `capacity` bytes of its."""
    if not endpoint.startswith("https://"):
        raise ValueError("the endpoint to invite to is this gateway's https://host:port "
                         "(its peer port as the other gateway reaches it), not %r" % endpoint)
    if capacity < 0 or ttl_seconds <= 0:
        raise ValueError("capacity is >= 0 bytes, the expiry > 0 s")
    now = time.time() if now is None else now
    token = os.urandom(16)
    expires = int(now + ttl_seconds)
    with store.transaction():
        store.peers.add_invitation(token, capacity, expires, now)
    return protocol.make_invitation(identity, endpoint, capacity, expires, token)


def add(store, identity, invitation_text, my_endpoint, capacity, term_seconds=TERM,
        timeout=30, now=None):
    """Pair with the inviter of invitation_text: the new peer's row (store.peers.get).
    We offer it `capacity` bytes (our quota for it); it holds up to the invitation's capacity
    of ours. protocol.Refused (bad_invitation, expired_invitation) for an invitation that is
    no good here, PeerError for the inviter's refusal or silence."""
    now = time.time() if now is None else now
    inv = protocol.parse_invitation(invitation_text, int(now))
    if inv.name == identity.name:
        raise protocol.Refused("bad_invitation", "this is this gateway's own invitation: add "
                               "it on the other gateway")
    if not my_endpoint.startswith("https://"):
        raise ValueError("our endpoint is this gateway's https://host:port as the inviter "
                         "reaches it, not %r" % my_endpoint)
    with PeerClient(identity, inv.name, inv.endpoint, timeout) as client:
        client.pair(inv.token, my_endpoint, capacity)
    paired = time.time()
    with store.transaction():
        store.peers.add(inv.name, inv.endpoint, inv.capacity, capacity, paired,
                        paired + term_seconds)
        store.peers.seen(inv.name, paired)
    return store.peers.get(inv.name)


__all__ = ["invite", "add", "PeerError", "TERM"]
