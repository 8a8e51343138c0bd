"""Device registration: the gateway's table and the on-chain DeviceRegistry, kept in step;
and enrollment, the same from another machine with a single-use token (docs/flashing.md,
"Provision from another machine")."""
import hashlib
import re
import secrets
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from agent.proto import device_id

DEVICE_HEX = re.compile(r"[0-9a-f]{16}")


class RegistryError(Exception):
    pass


def register(store, chain, public_key, name=None, kind="tracker", owner=None):
    """Register a device by its public key on chain and locally; returns its hex id."""
    return register_many(store, chain, [(public_key, name, kind)], owner)[0]


def register_many(store, chain, devices, owner=None):
    """Register [(public_key, name, kind)] on chain and locally; their hex ids. Every
    registration is sent before any is waited for, so a hundred devices take a block or two,
    not a hundred. A device already on chain with the same key is only added locally."""
    owner = owner or chain.address
    ids, sent = [], []
    for public_key, _, _ in devices:
        if len(public_key) != 65 or public_key[0] != 4:
            raise RegistryError("public key must be 65-byte uncompressed P-256 (04||X||Y)")
        dev = device_id(public_key)
        on_chain = chain.device(dev)
        if on_chain is None:
            sent.append(chain.send_register_device(dev, public_key, owner))
        elif on_chain["pubkey"] != public_key:
            raise RegistryError("device id %s is registered on chain with another key" % dev.hex())
        elif not on_chain["active"]:
            raise RegistryError("device %s was revoked, and a revoked key never comes back: "
                                "give the device a new key (edgekeep-flash provision --force)"
                                % dev.hex())
        ids.append(dev.hex())
    for tx_hash in sent:
        chain.wait_mined(tx_hash)
    for dev, (public_key, name, kind) in zip(ids, devices):
        store.add_device(dev, public_key, name, kind, owner)
    return ids


def revoke(store, chain, dev_hex, broker=None):
    """Revoke on chain and locally; with broker (gateway.mqtt.broker.Credentials), its MQTT account too."""
    dev = bytes.fromhex(dev_hex)
    on_chain = chain.device(dev)
    if on_chain is None and store.device(dev_hex) is None:
        raise RegistryError("no device %s" % dev_hex)
    if on_chain and on_chain["active"]:
        chain.revoke_device(dev)
    store.revoke_device(dev_hex)
    if broker is not None and dev_hex in broker.users():
        broker.revoke_device(dev_hex)


def rename(store, dev_hex, name):
    """Change the local display name (the chain holds keys, not names)."""
    name = (name or "").strip()
    if not name or len(name) > 64:
        raise RegistryError("a device name has 1 to 64 characters")
    if not store.rename_device(dev_hex, name):
        raise RegistryError("no device %s" % dev_hex)


# -- enrollment: a device added from another machine, with a single-use token -----------------

TOKEN_PREFIX = "ekenroll1."
TOKEN = re.compile(r"ekenroll1\.[A-Za-z0-9_-]{43}")
DEFAULT_TTL = 600          # s: long enough to walk to the device, short enough to not linger
MAX_TTL = 86400
RETIRE_CONTEXT = b"EdgeKeep retire v1\n"
BROKER_URL = re.compile(r"mqtts?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?/?")
ISSUE_FIX = ("issue a new one: `edgekeep devices enroll --config gateway.toml` on the gateway "
             "(or POST /api/enroll/tokens from the admin page)")


class EnrollmentError(RegistryError):
    """An enrollment refused: str() says what happened, .fix what to do, .status the HTTP
    status the API answers with."""

    def __init__(self, status, message, fix):
        super().__init__(message)
        self.status, self.fix = status, fix


def token_digest(token):
    """The hex SHA-256 the store keeps in place of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_enrollment(store, ttl=DEFAULT_TTL, issued_by="cli", broker=None, now=None):
    """A new enrollment token, valid ttl seconds, for one use: (token, expires). Only its
    digest is stored. broker: the URL devices reach the gateway's broker at (else the API
    derives it from the gateway's broker and the address the flash tool used)."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 1 <= ttl <= MAX_TTL:
        raise RegistryError("an enrollment token lives 1 to %d s (a day), not %r" % (MAX_TTL, ttl))
    if broker is not None and not BROKER_URL.fullmatch(broker):
        raise RegistryError("the devices' broker must be mqtt://HOST:PORT (or mqtts://), "
                            "not %r" % broker[:100])
    now = time.time() if now is None else now
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.enrollments.add(token_digest(token), now, now + ttl, issued_by, broker)
    return token, now + ttl


def provision_command(url, fingerprint):
    """The flash tool's command for a token from the admin page at url (https pinned by the
    certificate's fingerprint): what `devices enroll` and the API print."""
    return ("edgekeep-flash provision --port PORT --gateway %s --token-file TOKEN-FILE%s"
            % (url, " --fingerprint %s" % fingerprint if fingerprint else ""))


def _when(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _refusal(found, token, now):
    """Why a token cannot be spent, as an EnrollmentError (401)."""
    if not TOKEN.fullmatch(token):
        return EnrollmentError(401, "that is not an enrollment token (they look like "
                               "%s... with 43 more characters)" % TOKEN_PREFIX,
                               "copy the whole token; " + ISSUE_FIX)
    if found is None:
        return EnrollmentError(401, "this gateway issued no such enrollment token (or forgot "
                               "it: a week after it expired)", ISSUE_FIX)
    if found.used_at is not None:
        what = found.device and "enrolled device %s" % found.device or \
            found.retired and "revoked device %s" % found.retired or "is being used"
        return EnrollmentError(401, "this enrollment token was already used, at %s (it %s): a "
                               "token is good for one device, once"
                               % (_when(found.used_at), what), ISSUE_FIX)
    if found.expires <= now:
        return EnrollmentError(401, "this enrollment token expired at %s (%d s after it was "
                               "issued)" % (_when(found.expires), found.expires - found.created_at),
                               ISSUE_FIX + "; give it more time with --ttl SECONDS")
    return None


def check_enrollment(store, token, now=None):
    """The token's row if it can be spent now, without spending it; else EnrollmentError."""
    now = time.time() if now is None else now
    found = store.enrollments.get(token_digest(token)) if TOKEN.fullmatch(token) else None
    refusal = _refusal(found, token, now)
    if refusal:
        raise refusal
    return found


def retire_statement(dev_hex, new_public=b""):
    """What a device signs (ES256, with the key it is giving up) to have itself revoked:
    the context, its 8-byte id, and the 65-byte public key replacing it (nothing when it is
    decommissioned). Signing needs the device: a token alone revokes nothing."""
    return RETIRE_CONTEXT + bytes.fromhex(dev_hex) + new_public


def check_retire(public_key, dev_hex, new_public, signature):
    """True if signature (r || s, 64 bytes) is the device's over retire_statement."""
    if len(signature) != 64:
        return False
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                               int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, retire_statement(dev_hex, new_public), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def enroll(store, chain, broker, token, client, public_key=None, name=None, kind="tracker",
           retire=None, now=None):
    """Spend the token: register public_key (store, chain and, with broker, a broker account
    of its own) and/or revoke the device retire = (dev_hex, signature) proves it held.

    Returns {"device", "name", "mqtt_user", "mqtt_password", "retired", "retire_error",
    "broker"} (None where not applicable; "retire_error": why the device replaced could not be
    revoked, the new one being enrolled all the same; "broker": the URL the token's issuer
    gave, else None). EnrollmentError
    (with its fix) when refused; the token stays unspent unless something changed."""
    now = time.time() if now is None else now
    if public_key is None and retire is None:
        raise EnrollmentError(400, "nothing to do: send public_key (enroll a device) and/or "
                              "retire (revoke the one it replaces)", "send public_key")
    rows = store.enrollments
    digest = token_digest(token)
    claimed = rows.claim(digest, now, client) if TOKEN.fullmatch(token) else None
    if claimed is None:
        raise _refusal(rows.get(digest) if TOKEN.fullmatch(token) else None, token, now)
    try:
        dev = _check_new(store, chain, public_key, name, kind) if public_key is not None else None
        old = _check_retire(store, chain, retire, public_key) if retire is not None else None
        if dev is not None:
            register(store, chain, public_key, name, kind)
    except BaseException:
        rows.release(digest)
        raise
    password = None
    if dev is not None:
        rows.finish(digest, dev, None)
        if broker is not None:
            try:
                password = broker.add_device(dev)
            except Exception as e:
                raise EnrollmentError(502, "enrolled %s, but its broker account could not be "
                                      "made: %s" % (dev, e),
                                      "on the gateway: `edgekeep broker add-device --dir "
                                      "DATA_DIR/broker --device %s`, and put the password it "
                                      "prints in the device's config.json" % dev)
    retire_error = None
    if old is not None:
        try:
            revoke(store, chain, old, broker)
        except Exception as e:
            if dev is None:
                rows.release(digest)
                raise EnrollmentError(502, "revoking %s failed: %s" % (old, e),
                                      "try again; the token is still good until it expires")
            # The new device is enrolled and needs its account: it is answered, with this.
            retire_error, old = "revoking %s, the device it replaces, failed: %s" % (old, e), None
        else:
            rows.finish(digest, dev, old)
    return {"device": dev, "name": name if dev else None, "mqtt_user": password and dev,
            "mqtt_password": password, "retired": old, "retire_error": retire_error,
            "broker": claimed.broker}


def _check_new(store, chain, public_key, name, kind):
    """The id of a key that may be enrolled; EnrollmentError if it may not."""
    if len(public_key) != 65 or public_key[0] != 4:
        raise EnrollmentError(400, "public_key must be the device's 65-byte uncompressed P-256 "
                              "key (04||X||Y) in hex", "send the key the device made")
    if kind not in ("tracker", "camera"):
        raise EnrollmentError(400, "kind must be tracker or camera", "send kind tracker or camera")
    if name is not None and not 1 <= len(name) <= 64:
        raise EnrollmentError(400, "a device name has 1 to 64 characters", "pick a shorter name")
    dev = device_id(public_key).hex()
    if store.device(dev) is not None:
        raise EnrollmentError(409, "device %s is already registered on this gateway" % dev,
                              "a new device makes a new key: provision it with --force")
    return dev


def _check_retire(store, chain, retire, new_public):
    """The id of the device retire = (dev_hex, signature) proves it may revoke."""
    dev, signature = retire
    if not DEVICE_HEX.fullmatch(dev):
        raise EnrollmentError(400, "retire.device must be a device id (16 hex characters)",
                              "send the id of the device being replaced")
    known = store.device(dev)
    on_chain = None if known else chain.device(bytes.fromhex(dev))
    if known is None and on_chain is None:
        raise EnrollmentError(404, "device %s is not registered on this gateway, so there is "
                              "nothing to revoke here" % dev,
                              "revoke it on the gateway it was enrolled with")
    public = known["public_key"] if known else on_chain["pubkey"]
    if not check_retire(bytes(public), dev, new_public or b"", signature):
        raise EnrollmentError(403, "the signature does not prove that the device holds the "
                              "key of %s" % dev,
                              "sign retire_statement with the device's own key (edgekeep-flash "
                              "does), or revoke it on the admin page")
    return dev
