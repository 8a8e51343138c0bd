"""https for the admin page: the owner's certificate (web_cert, web_key), or with web_tls a
self-signed one made at the first start in the data directory and kept."""
import datetime
import ipaddress
import logging
import os
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.config import Config
from gateway.web.hosts import allowed_hosts

CERT_FILE = "web-cert.pem"
KEY_FILE = "web-key.pem"
VALID_DAYS = 3650    # a self-signed certificate is trusted by its fingerprint, not its dates

log = logging.getLogger("edgekeep.web")


def tls_files(cfg: Config) -> tuple[str, str] | None:
    """(certificate, key) PEM files to serve the admin page with, or None for plain http.
    Makes the self-signed pair on the first start with web_tls. ValueError says what to fix."""
    if bool(cfg.web_cert) != bool(cfg.web_key):
        raise ValueError("web_cert and web_key go together: set both (your certificate and its "
                         "key, PEM files), or neither (web_tls = true makes a self-signed pair)")
    if cfg.web_cert:
        files = cfg.web_cert, cfg.web_key
    elif cfg.web_tls:
        files = os.path.join(cfg.data_dir, CERT_FILE), os.path.join(cfg.data_dir, KEY_FILE)
        if not all(os.path.exists(f) for f in files):
            make_self_signed(*files, sorted(allowed_hosts(cfg)))
            log.info("admin page: made a self-signed certificate, %s (delete it and %s for a "
                     "new one)", files[0], KEY_FILE)
    else:
        return None
    for key, path in zip(("web_cert", "web_key"), files):
        if not os.path.isfile(path):
            raise ValueError("%s %s: no such file" % (key, path))
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(*files)
    except (ssl.SSLError, OSError) as e:
        raise ValueError("the admin page's certificate %s and key %s do not load: %s"
                         % (files[0], files[1], e))
    return files


def fingerprint(cert_path: str) -> str:
    """The certificate's SHA-256 fingerprint as browsers show it: AB:CD:..."""
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return ":".join("%02X" % b for b in cert.fingerprint(hashes.SHA256()))


def make_self_signed(cert_path: str, key_path: str, names: list[str]) -> None:
    """An ECDSA P-256 certificate for `names` (DNS names and IP addresses), key file 0600."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EdgeKeep admin page")])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            ip = ipaddress.ip_address(name)
            if not ip.is_unspecified:
                alt.append(x509.IPAddress(ip))
        except ValueError:
            if name.isascii():
                alt.append(x509.DNSName(name))
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    os.makedirs(os.path.dirname(os.path.abspath(key_path)), exist_ok=True)
    _write(key_path, key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write(path: str, data: bytes, mode: int) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
