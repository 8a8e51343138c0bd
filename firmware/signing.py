"""Release signing: an ES256 (P-256) key signs a bundle's manifest; devices and tools/flash.py
check the signature against the owner's trusted public key.

Key files: the private key is PKCS#8 PEM (mode 0600); KEY.pub holds the public key as hex of
the 65-byte uncompressed point. A signature is hex of r || s (64 bytes) over SHA-256 of the
manifest's exact bytes, the form agent/p256.py verifies on a device.
"""
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)


class SigningError(Exception):
    pass


def keygen(path):
    """Write a new release key to path (private) and path + '.pub'; returns the public hex."""
    if os.path.exists(path):
        raise SigningError("%s exists: refusing to overwrite a release key" % path)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = public_hex(key)
    with open(path + ".pub", "w") as f:
        f.write(public + "\n")
    return public


def public_hex(private_key):
    return private_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint).hex()


def load_private(path):
    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
    except (OSError, ValueError) as e:
        raise SigningError("cannot read release key %s: %s" % (path, e))
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SigningError("%s is not a P-256 release key" % path)
    return key


def load_public(path):
    """The public key (65 bytes) from a .pub file or from the private key file itself."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SigningError("cannot read release key %s: %s" % (path, e.strerror))
    if b"PRIVATE KEY" in data:
        return bytes.fromhex(public_hex(load_private(path)))
    try:
        public = bytes.fromhex(data.decode().strip())
    except ValueError:
        public = b""
    if len(public) != 65 or public[0] != 4:
        raise SigningError("%s is not a release public key (hex of 65 bytes, 04||X||Y)" % path)
    return public


def sign(private_key, data):
    r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify(public, data, signature):
    """True if signature (r || s) is public's over data."""
    if len(signature) != 64:
        return False
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public)
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                               int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
