"""The owner's certificate authority: what signs the C2PA manifests of evidence files.

A P-256 root (CA, keyCertSign) and one P-256 end-entity signer under it (digitalSignature,
extended key usage id-kp-emailProtection, one C2PA accepts for claim signing; a CA
certificate may not sign a claim). Both private keys and both certificates live in the
owner's keyring, so they are encrypted like the data keys and the keyring alone restores
them; the root's certificate is also written beside the keyring as `<keyring>-root.pem`,
the trust anchor to hand to whoever checks an evidence file (docs/evidence.md).
"""
import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Keyring entries (docs/protocol.md, "The owner keyring file"): DER certificates and the
# keys' 32-byte private scalars.
ROOT_KEY, ROOT_CERT = "owner:root-key", "owner:root-cert"
SIGNER_KEY, SIGNER_CERT = "owner:signer-key", "owner:signer-cert"
ROOT_YEARS, SIGNER_YEARS = 30, 5
RENEW_BEFORE = datetime.timedelta(days=30)   # a signer this close to expiry is replaced
SIGNER_EKU = ExtendedKeyUsageOID.EMAIL_PROTECTION


def root_pem_path(keyring_path):
    return os.path.splitext(keyring_path)[0] + "-root.pem"


class OwnerCA:
    def __init__(self, root, signer, signer_key):
        self.root = root
        self.signer = signer
        self.signer_key = signer_key

    def chain_pem(self):
        """The signer's certificate then the root's, PEM: what the C2PA manifest carries."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM)
                        for c in (self.signer, self.root))

    def key_pem(self):
        return self.signer_key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())

    def root_pem(self):
        return self.root.public_bytes(serialization.Encoding.PEM)


def ensure(ring, owner="EdgeKeep owner"):
    """The keyring's CA, made (and the keyring saved) if it has none, its signer renewed if
    it is about to expire; the root's PEM written beside the keyring if it is missing."""
    changed = False
    if ROOT_KEY not in ring.keys:
        key = ec.generate_private_key(ec.SECP256R1())
        ring.keys[ROOT_KEY] = _scalar(key)
        ring.keys[ROOT_CERT] = _der(_root_cert(key, owner))
        ring.keys.pop(SIGNER_KEY, None)
        changed = True
    root_key = _load_key(ring.keys[ROOT_KEY])
    root = x509.load_der_x509_certificate(ring.keys[ROOT_CERT])
    if SIGNER_KEY not in ring.keys or _expiring(
            x509.load_der_x509_certificate(ring.keys[SIGNER_CERT])):
        key = ec.generate_private_key(ec.SECP256R1())
        ring.keys[SIGNER_KEY] = _scalar(key)
        ring.keys[SIGNER_CERT] = _der(_signer_cert(key, root, root_key))
        changed = True
    if changed:
        ring.save()
    ca = OwnerCA(root, x509.load_der_x509_certificate(ring.keys[SIGNER_CERT]),
                 _load_key(ring.keys[SIGNER_KEY]))
    path = root_pem_path(ring.path)
    if changed or not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(ca.root_pem())
    return ca


def _now():
    return datetime.datetime.now(datetime.UTC)


def _expiring(cert):
    return cert.not_valid_after_utc - RENEW_BEFORE < _now()


def _scalar(key):
    return key.private_numbers().private_value.to_bytes(32, "big")


def _load_key(scalar):
    return ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())


def _der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def _name(owner, role):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, owner),
                      x509.NameAttribute(NameOID.COMMON_NAME, "%s %s" % (owner, role))])


def _usage(sign=False, ca=False):
    return x509.KeyUsage(digital_signature=sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                         decipher_only=False)


def _builder(subject, issuer, public_key, years):
    start = _now() - datetime.timedelta(minutes=5)   # a verifier's clock a little behind
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=365 * years))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def _root_cert(key, owner):
    name = _name(owner, "evidence root")
    return (_builder(name, name, key.public_key(), ROOT_YEARS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(ca=True), critical=True)
            .sign(key, hashes.SHA256()))


def _signer_cert(key, root, root_key):
    owner = root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    return (_builder(_name(owner, "evidence signer"), root.subject, key.public_key(),
                     SIGNER_YEARS)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(sign=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([SIGNER_EKU]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
