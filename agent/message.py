# Building signed EdgeKeep messages: envelope -> COSE_Sign1, with the payload sealed
# in a COSE_Encrypt0 for the owner.
from agent import cbor, cose
from agent.proto import (BOOT_ID_LEN, ENV_BASE, ENV_CIPHERTEXT, ENV_COUNT, ENV_DEVICE,
                         ENV_HEALTH, ENV_KIND, ENV_SEQ, ENV_TIME, ENV_VERSION, VERSION)


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
    env = {ENV_VERSION: VERSION, ENV_DEVICE: dev_id, ENV_SEQ: seq, ENV_TIME: t,
           ENV_KIND: kind, ENV_BASE: base}
    if count is not None:
        env[ENV_COUNT] = count
    if ciphertext is not None:
        env[ENV_CIPHERTEXT] = ciphertext
    if health is not None:
        env[ENV_HEALTH] = health
    return cbor.dumps(env)


def seal(identity, nonces, seq, t, kind, base, plaintext=None, count=None, health=None):
    """One complete message: optional plaintext encrypted for the owner, then signed."""
    ciphertext = None
    if plaintext is not None:
        ciphertext = cose.encrypt0(identity.data_key, nonces.next(), plaintext)
    payload = envelope(identity.device_id, seq, t, kind, base, count, ciphertext, health)
    return cose.sign1(identity.secret, identity.device_id, payload)
