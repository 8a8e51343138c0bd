"""The owner's keyring: per-device data keys in a passphrase-protected file.

File format (JSON): {"v": 1, "kdf": "scrypt", "n", "r", "p", "salt", "nonce", "ct"}, where
ct = AES-256-GCM(key = scrypt(passphrase, salt), nonce, JSON {device_hex: data_key_hex}).
A gateway's identity (its Ed25519 private key, docs/network.md) is kept under
"gateway:<name>", so that the keyring alone restores a lost gateway.
The gateway never holds this file; the owner's tools and browser do.
"""
import getpass
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1
PASSPHRASE_ENV = "EDGEKEEP_PASSPHRASE"
GATEWAY_PREFIX = "gateway:"  # a gateway identity's entry, beside the devices' hex ids


class KeyringError(Exception):
    pass


def _kdf(passphrase, salt, n, r, p):
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


class Keyring:
    def __init__(self, path, passphrase, keys=None):
        self.path = path
        self.passphrase = passphrase
        self.keys = dict(keys or {})

    @classmethod
    def open(cls, path, passphrase):
        try:
            with open(path) as f:
                d = json.load(f)
        except FileNotFoundError:
            raise KeyringError("keyring %s does not exist" % path)
        except ValueError:
            raise KeyringError("keyring %s is not a keyring file" % path)
        key = _kdf(passphrase, bytes.fromhex(d["salt"]), d["n"], d["r"], d["p"])
        try:
            plain = AESGCM(key).decrypt(bytes.fromhex(d["nonce"]), bytes.fromhex(d["ct"]), b"ek-keyring-v1")
        except InvalidTag:
            raise KeyringError("wrong passphrase for keyring %s (or the file is damaged)" % path)
        return cls(path, passphrase, {k: bytes.fromhex(v) for k, v in json.loads(plain).items()})

    @classmethod
    def open_or_create(cls, path, passphrase):
        if os.path.exists(path):
            return cls.open(path, passphrase)
        return cls(path, passphrase)

    def add(self, device_hex, data_key):
        self.keys[device_hex] = bytes(data_key)

    def get(self, device_hex):
        try:
            return self.keys[device_hex]
        except KeyError:
            raise KeyringError("keyring %s has no key for device %s" % (self.path, device_hex))

    def add_gateway(self, name, private_key):
        """Keep a gateway's identity (docs/network.md): what `edgekeep restore` needs."""
        self.keys[GATEWAY_PREFIX + name] = bytes(private_key)

    def gateways(self):
        """{name: private key} of the gateway identities kept here."""
        return {k[len(GATEWAY_PREFIX):]: v for k, v in self.keys.items()
                if k.startswith(GATEWAY_PREFIX)}

    def save(self):
        salt, nonce = os.urandom(16), os.urandom(12)
        key = _kdf(self.passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        plain = json.dumps({k: v.hex() for k, v in self.keys.items()}).encode()
        doc = {"v": 1, "kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
               "salt": salt.hex(), "nonce": nonce.hex(),
               "ct": AESGCM(key).encrypt(nonce, plain, b"ek-keyring-v1").hex()}
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, self.path)


def passphrase_from(args_file=None, confirm=False):
    """The passphrase from a file, $EDGEKEEP_PASSPHRASE, or a prompt (in that order)."""
    if args_file:
        with open(args_file) as f:
            return f.read().strip()
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    p = getpass.getpass("keyring passphrase: ")
    if confirm and getpass.getpass("again: ") != p:
        raise KeyringError("passphrases differ")
    return p
