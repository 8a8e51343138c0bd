"""The gateway's identity: an Ed25519 key pair made at first start (docs/network.md).

Its name is the hex of the raw public key; `identity.crt` beside the key is a self-signed
certificate of it, the TLS certificate of the peer port. The storage key that seals what the
gateway puts on peers is derived from the private key, so the owner's keyring, which holds
the private key, is all a restore needs.
"""
import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from gateway.network import protocol

KEY_FILE, CERT_FILE = "identity.key", "identity.crt"
STORAGE_INFO = b"edgekeep-network-blob/1"


def directory(data_dir):
    return os.path.join(data_dir, "network")


class Identity:
    def __init__(self, private_key):
        """An identity from its Ed25519 private key; no I/O."""
        self.key = private_key
        self.public = private_key.public_key().public_bytes_raw()
        self.name = self.public.hex()
        self.short = self.name[:16]
        self.storage_key = HKDF(hashes.SHA256(), 32, b"", STORAGE_INFO).derive(self.private_bytes())

    @classmethod
    def generate(cls):
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw):
        if len(raw) != 32:
            raise ValueError("an Ed25519 private key is 32 bytes, got %d" % len(raw))
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def load_or_create(cls, data_dir):
        """The identity of a data directory, made (key and certificate) at its first use."""
        d = directory(data_dir)
        path = os.path.join(d, KEY_FILE)
        try:
            with open(path, "rb") as f:
                me = cls(serialization.load_pem_private_key(f.read(), None))
        except FileNotFoundError:
            me = cls.generate()
            me.save(data_dir)
        if not os.path.exists(os.path.join(d, CERT_FILE)):
            me._write_cert(d)
        return me

    def save(self, data_dir):
        """Write the key (mode 0600) and certificate into data_dir/network."""
        d = directory(data_dir)
        os.makedirs(d, mode=0o700, exist_ok=True)
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        _write_private(os.path.join(d, KEY_FILE), pem)
        self._write_cert(d)

    def private_bytes(self):
        return self.key.private_bytes_raw()

    def paths(self, data_dir):
        """(certificate, key) files for TLS."""
        d = directory(data_dir)
        return os.path.join(d, CERT_FILE), os.path.join(d, KEY_FILE)

    def sign(self, message):
        return self.key.sign(message)

    def hmac(self, data):
        h = HMAC(self.storage_key, hashes.SHA256())
        h.update(data)
        return h.finalize()

    def seal(self, blob, digest=None):
        """The blob sealed for the network (docs/network.md, "Network blobs")."""
        return protocol.seal(self.storage_key, blob, digest)

    def open(self, sealed):
        """The blob inside sealed bytes; protocol.Refused if they are not ours or damaged."""
        return protocol.open_sealed(self.storage_key, sealed)

    def _write_cert(self, d):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgekeep %s" % self.short)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=365 * 100))
                .sign(self.key, None))
        path = os.path.join(d, CERT_FILE)
        with open(path + ".tmp", "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        os.replace(path + ".tmp", path)


def cert_public_key(der):
    """The raw Ed25519 public key of a DER certificate, or None if it is not Ed25519."""
    key = x509.load_der_x509_certificate(der).public_key()
    return key.public_bytes_raw() if isinstance(key, Ed25519PublicKey) else None


def _write_private(path, data):
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
