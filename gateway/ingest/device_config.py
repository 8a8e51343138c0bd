"""Config over the air on the gateway (docs/protocol.md, "Config over the air"; the device
side is agent/config_update.py): the gateway's config key, the signed config message, and a
sender that publishes it and waits for the device's verdict.

The config key is a P-256 key the gateway makes at first use (<data dir>/config-signing.key,
0600; its public half, config-signing.key.pub, is what provisioning writes to a device as
gateway.pub). It is the gateway's own, not the owner's offline release key, so the gateway
can change settings on its own, and it opens nothing: a secret setting (the Wi-Fi password)
is sealed to the device's public key with an ephemeral ECDH key, so only the device reads it.
"""
import hashlib
import hmac
import logging
import os
import queue
import time

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from agent import cbor, ota
from agent import config_update as cu
from agent.proto import device_id, down_topic
from firmware import signing
from gateway.mqtt.client import new_client
from gateway.wire import protocol

log = logging.getLogger("edgekeep.config")

KEY_FILE = "config-signing.key"
VERSIONS_FILE = "config-versions.txt"  # device version, one a line: the last sent to each
REPORTS = "ek/+/up/" + ota.KIND
DONE = ("applied", "rolled back", "refused")


def key_path(data_dir: str) -> str:
    return os.path.join(data_dir, KEY_FILE)


def config_key(data_dir: str) -> ec.EllipticCurvePrivateKey:
    """The gateway's config signing key, made at its first use."""
    path = key_path(data_dir)
    if not os.path.exists(path):
        os.makedirs(data_dir, exist_ok=True)
        signing.keygen(path)
    return signing.load_private(path)


def public_hex(data_dir: str) -> str:
    """The config key's public half, hex of the 65-byte point (a device's gateway.pub)."""
    return signing.public_hex(config_key(data_dir))


def next_version(data_dir: str, device: str) -> int:
    """Above every version sent to the device before: Unix time, or one more than the last
    (so a restored data directory does not send versions the device takes for replays)."""
    path = os.path.join(data_dir, VERSIONS_FILE)
    versions = {}
    if os.path.exists(path):
        with open(path) as f:
            versions = dict(line.split() for line in f if line.strip())
    version = max(int(time.time()), int(versions.get(device, 0)) + 1)
    versions[device] = str(version)
    with open(path + ".tmp", "w") as f:
        f.writelines("%s %s\n" % kv for kv in sorted(versions.items()))
    os.replace(path + ".tmp", path)
    return version


def seal(secrets: dict, device_public: bytes) -> list:
    """secrets sealed to the device: [ephemeral public key, nonce, AES-CCM ciphertext]."""
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), device_public)
    shared = ephemeral.exchange(ec.ECDH(), peer)
    key = hmac.new(shared, cu.SEAL_INFO, hashlib.sha256).digest()[:16]
    nonce = os.urandom(13)
    sealed = AESCCM(key, tag_length=16).encrypt(nonce, cbor.dumps(secrets),
                                                device_id(device_public))
    return [bytes.fromhex(signing.public_hex(ephemeral)), nonce, sealed]


def message(key: ec.EllipticCurvePrivateKey, device_public: bytes, version: int,
            settings: dict, trial: int | None = None) -> bytes:
    """The signed config message for one device; secret settings go sealed."""
    plain = {k: v for k, v in settings.items() if k not in cu.SECRETS}
    secret = {k: v for k, v in settings.items() if k in cu.SECRETS}
    body: dict = {cu.BODY_DEVICE: device_id(device_public), cu.BODY_CONFIG: version,
                  cu.BODY_SET: plain}
    if trial is not None:
        body[cu.BODY_TRIAL] = trial
    if secret:
        body[cu.BODY_SEALED] = seal(secret, device_public)
    raw = cbor.dumps(body)
    return cbor.dumps({cu.MSG_VERSION: cu.VERSION, cu.MSG_BODY: raw,
                       cu.MSG_SIGNATURE: signing.sign(key, raw)})


class Sender:
    """Publishes a config message to a device and waits for its verdict, over one MQTT
    connection. step(text) is told each report as it comes."""

    def __init__(self, broker: str, username: str | None, password: str | None) -> None:
        self.reports: queue.Queue = queue.Queue()
        self.client, b = new_client(broker, "edgekeep-config-%d" % os.getpid(), username,
                                    password)
        self.client.on_message = lambda c, u, msg: self.reports.put((msg.topic, msg.payload))
        self.host, self.port = b.host, b.port

    def send(self, device: str, public_key: bytes, version: int, payload: bytes,
             timeout: float, step=log.info) -> dict:
        """The device's last report on this version ({"st": ..., "why": ...}); {"st":
        "timeout"} if it gave no verdict within timeout."""
        subscribed: queue.Queue = queue.Queue()
        self.client.on_subscribe = lambda *a: subscribed.put(True)
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        try:
            self.client.subscribe(REPORTS, qos=1)
            subscribed.get(timeout=15)
            self.client.publish(down_topic(device, "config"), payload, qos=1)
            key = protocol.load_public_key(public_key)
            last: dict = {"st": "timeout"}
            end = time.monotonic() + timeout
            while last["st"] not in DONE and time.monotonic() < end:
                report = self._report(device, key, version)
                if report:
                    last = report
                    step(report)
            return last
        finally:
            self.client.disconnect()
            self.client.loop_stop()

    def _report(self, device, key, version):
        try:
            topic, raw = self.reports.get(timeout=0.5)
        except queue.Empty:
            return None
        try:
            signed = protocol.parse(topic, raw, 65536)
            if signed.device != device:
                return None
            protocol.verify_signature(signed, key)
            report = dict(protocol.open_envelope(signed).health or {})
        except protocol.Reject as r:
            log.warning("ignored a report: %s", r)
            return None
        return report if report.get("cfg") == version else None
