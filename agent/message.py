# Building signed EdgeKeep messages: envelope -> COSE_Sign1, with the payload sealed
# in a COSE_Encrypt0 for the owner.
from agent import cbor, cose
from agent.heap import collect
from agent.proto import (
    BOOT_ID_LEN,
    ENV_BASE,
    ENV_CIPHERTEXT,
    ENV_COUNT,
    ENV_DEVICE,
    ENV_HEALTH,
    ENV_KIND,
    ENV_SEQ,
    ENV_TIME,
    ENV_VERSION,
    VERSION,
)


class Nonces:
    """13-byte CCM nonces: a random 8-byte boot id || a 5-byte counter.

    The boot id comes from the RNG at every boot, so nonces stay unique across reboots
    and reflashes without trusting any persisted counter.
    """

    def __init__(self, urandom):
        self.boot_id = urandom(BOOT_ID_LEN)
        self.counter = 0

    def next(self):
        self.counter += 1
        return self.boot_id + self.counter.to_bytes(5, "big")


def envelope(dev_id, seq, t, kind, base, count=None, ciphertext=None, health=None):
    """The CBOR envelope map (a bytearray). Written field by field in key order (ENV_VERSION
    0 to ENV_HEALTH 8: ascending ints are canonical order), with no dict to build and sort."""
    fields = ((ENV_VERSION, VERSION), (ENV_DEVICE, dev_id), (ENV_SEQ, seq), (ENV_TIME, t),
              (ENV_KIND, kind), (ENV_BASE, base), (ENV_COUNT, count),
              (ENV_CIPHERTEXT, ciphertext), (ENV_HEALTH, health))
    n = 0
    for _, value in fields:
        if value is not None:
            n += 1
    out = bytearray(cbor.head(5, n))
    for key, value in fields:
        if value is not None:
            out.append(key)  # keys below 24 are their own one-byte head
            cbor.encode_into(out, value)
    return out


def seal(identity, nonces, seq, t, kind, base, plaintext=None, count=None, health=None):
    """One complete message: optional plaintext encrypted for the owner, then signed.
    Collects between the steps: at most two copies of the data are in memory at a time."""
    ciphertext = None
    if plaintext is not None:
        ciphertext = cose.encrypt0(identity.data_key, nonces.next(), plaintext)
        collect()
    payload = envelope(identity.device_id, seq, t, kind, base, count, ciphertext, health)
    ciphertext = None
    collect()  # the ciphertext is in the payload now: free it before signing
    return cose.sign1(identity.secret, identity.device_id, payload)
