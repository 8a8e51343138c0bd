"""The gateway's own shares on peers (tables offbox, placements, network_commits), on the
Store's connection (`store.placements`).

The protocol is docs/network.md; the placer that fills these is gateway/network/placement.py.
"""

import sqlite3


class Placements:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
