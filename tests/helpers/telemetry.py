"""A tracker's stored telemetry history: real messages, sealed and signed by the agent's own
code, at the times a test chooses, stored as the ingest stores them.

    store_history(store, times, name)   registers a new device and stores one message a time
                                        (2 readings, 30 s apart); returns (identity, messages)
    store_messages(store, ident, times, first_seq)   more messages of that device
    reading(seq, j)                     the values of message seq's j-th reading
"""
import hashlib
import math
import os
import time

from agent import message
from agent.identity import Identity
from agent.readings import Batch

PER_MESSAGE = 2
GAP = 30           # seconds between a message's readings


def reading(seq, j):
    """Every field, in protocol units, varying with seq; some absent as a device sends them:
    every 7th message has no GPS fix, every 11th no gas reading."""
    k = seq * PER_MESSAGE + j
    fix = seq % 7 != 0
    return {"temp": 2000 + (k * 37) % 900 - 300, "hum": 4000 + (k * 53) % 2000,
            "pres": 100000 + (k * 11) % 3000, "gas": None if seq % 11 == 0 else 50000 + k,
            "light": (k * 997) % 100000, "ax": (k % 40) - 20, "ay": -(k % 30), "az": 1000 - k % 9,
            "lat": round(473977420 + 200000 * math.sin(k / 40)) if fix else None,
            "lon": round(85455940 + 300000 * math.cos(k / 40)) if fix else None,
            "batt": 4200 - k % 600}


def store_history(store, times, name="chart-tracker"):
    """A new device with one telemetry message at each of `times` (seq 1, 2, ... in that
    order). Returns (identity, [{"seq", "time", "readings"}])."""
    ident = Identity.create(os.urandom)
    store.add_device(ident.hex, ident.public, name)
    return ident, store_messages(store, ident, times)


def store_messages(store, ident, times, first_seq=1):
    """One telemetry message of the device `ident` at each of `times`, seq first_seq, ..."""
    nonces = message.Nonces(os.urandom)
    rows, out = [], []
    for seq, t in enumerate(times, first_seq):
        batch = Batch(PER_MESSAGE)
        values = [reading(seq, j) for j in range(PER_MESSAGE)]
        for j, r in enumerate(values):
            batch.add(t + j * GAP, r)
        raw = bytes(message.seal(ident, nonces, seq, batch.t0, "t", 5, batch.plaintext(),
                                 batch.count))
        rows.append((ident.hex, seq, "t", batch.t0, batch.count, hashlib.sha256(raw).digest(),
                     raw, time.time()))
        out.append({"seq": seq, "time": batch.t0, "readings": values})
    store.add_messages(rows)
    return out
