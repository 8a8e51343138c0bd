"""The owner's export: decrypt a device's readings with the owner's keyring (never on the gateway)."""
import csv
import json
import sys

import cbor2
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from agent.proto import (
    ALG_AES_CCM_16_128_128,
    COSE_ALG,
    COSE_IV,
    ENV_CIPHERTEXT,
    ENV_TIME,
    KIND_TELEMETRY,
    READING_FIELDS,
    TAG_ENCRYPT0,
)
from agent.readings import unpack


def decrypt_encrypt0(key: bytes, encrypt0: bytes) -> bytes:
    """Open a tagged COSE_Encrypt0 (AES-CCM-16-128-128, empty external AAD)."""
    msg = cbor2.loads(encrypt0)
    if not (isinstance(msg, cbor2.CBORTag) and msg.tag == TAG_ENCRYPT0):
        raise ValueError("not a COSE_Encrypt0")
    protected, unprotected, ciphertext = msg.value
    if cbor2.loads(protected).get(COSE_ALG) != ALG_AES_CCM_16_128_128:
        raise ValueError("unsupported content encryption algorithm")
    aad = cbor2.dumps(["Encrypt0", protected, b""])
    return AESCCM(key, tag_length=16).decrypt(unprotected[COSE_IV], ciphertext, aad)


def envelope_of(raw):
    return cbor2.loads(cbor2.loads(raw).value[2])


def readings(store, device, key):
    """Every reading of a device, in sequence order, decrypted."""
    out = []
    for m in store.messages(device=device, kind=KIND_TELEMETRY):
        env = envelope_of(m["raw"])
        plain = decrypt_encrypt0(key, env[ENV_CIPHERTEXT])
        for r in unpack(plain, env[ENV_TIME]):
            r["device"] = device
            r["seq"] = m["seq"]
            out.append(r)
    return out


def write(rows, fmt, out=sys.stdout):
    if fmt == "json":
        json.dump(rows, out, indent=1)
        out.write("\n")
        return
    cols = ["device", "seq", "time"] + list(READING_FIELDS[1:])
    w = csv.DictWriter(out, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow(r)
