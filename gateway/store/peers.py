"""The gateway's peers and what it holds for them (tables peers, invitations, peer_nonces,
held, held_commits, held_catalogs), on the Store's connection (`store.peers`).

The protocol is docs/network.md; the server that fills these is gateway/network/server.py.
"""

import sqlite3


class Peers:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
