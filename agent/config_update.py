# Settings over the air (docs/protocol.md, "Config over the air"): a config message on
# ek/<id>/down/config, signed by the gateway's config key (gateway.pub on the flash), for
# this device, of a version above any it has taken, setting only the keys of LIMITS. The
# Wi-Fi password travels sealed to the device's own key (ECDH), never in the clear.
#
# Imported only when a config message comes or a config is on trial (config.trial exists).
# Taking one: config.json is kept as config.prev, the new one staged and renamed into place,
# the device restarts into it. Its first ack from the gateway confirms it; without one
# within the trial time (config_trial, default 120 s), config.prev goes back, the device
# restarts into it and reports `rolled back`. Every write is write-then-rename.
import os

from agent import cbor, clock
from agent.heap import collect
from agent.ota import exists, read_json, remove, reset, write, write_json

VERSION = 1
MSG_VERSION = 0     # message map keys
MSG_BODY = 1        # bstr: the CBOR body, signed as it is
MSG_SIGNATURE = 2   # bstr(64): ES256 r||s over SHA-256 of the body
BODY_DEVICE = 0     # body map keys: bstr(8) device id
BODY_CONFIG = 1     # uint: config version, above every one the device took
BODY_SET = 2        # map: setting -> value, in the clear
BODY_TRIAL = 3      # uint: seconds to confirm (optional; else config_trial, else 120)
BODY_SEALED = 4     # [bstr(65) ephemeral P-256 key, bstr(13) nonce, bstr ciphertext]: secrets

CONFIG = "config.json"
STAGED = "config.new"
PREVIOUS = "config.prev"
TRIAL = "config.trial"     # {"v", "s"} on trial; {"rolled_back", "why"} until reported
SEEN = "config.seen"       # the highest version taken (replay protection)
GATEWAY_KEY = "gateway.pub"
TRIAL_SECONDS = 120
SEAL_INFO = b"edgekeep config seal/1"

# setting: (type, lowest, highest): a number's range, or a text's length. Whole numbers
# only: the agent's CBOR has no floats.
LIMITS = {"broker_host": (str, 1, 253), "broker_port": (int, 1, 65535),
          "wifi_ssid": (str, 1, 32), "wifi_password": (str, 0, 63), "apn": (str, 1, 100),
          "sample_interval": (int, 1, 86400), "upload_interval": (int, 1, 86400),
          "status_every": (int, 1, 10000), "config_trial": (int, 5, 86400)}
SECRETS = ("wifi_password",)   # only ever in the sealed part


class Refused(Exception):
    """Refused(reason, why): reason names the health counter (signature, device, replay,
    invalid, trial), why says it to the owner. (MicroPython has no Exception.__init__ to
    call from a subclass's own.)"""

    def why(self):
        return self.args[1]


def take(agent, payload):
    """agent/boot.py's one call: a config downlink (payload), or at boot a config on trial or
    rolled back (payload None). The first call puts a Configs in the place of the Device's
    OTA updater, whose poll() and acked() the Device already calls every loop and on every
    ack (Configs passes them on): no more code stays loaded on a device that never gets a
    config. Returns True if a status is due."""
    configs = agent.updater
    if not isinstance(configs, Configs):
        configs = Configs(agent)
        agent.updater = configs
        configs.resume()
    return payload is not None and configs.take(payload)


class Configs:
    """agent: the Device (agent/boot.py), for its identity, notes (the status health's extra
    keys), seal_ota(map) (a signed `o` report), its batch, transport, log, and why its link
    last dropped (lost).
    The constructor only stores: the wasm build's collector misses objects held only by C
    while a constructor runs (agent/runtime/wasm/gc.mjs), and sealing a report collects."""

    def __init__(self, agent):
        self.agent = agent
        self.ota = agent.updater
        self.identity = agent.identity
        self.notes = agent.notes
        self.started = clock.monotonic()
        self.restart_due = False
        self.connected = False   # the link came up during a trial
        self.refused = {}
        self.state = {}

    def resume(self):
        """At boot: finish a config's swap cut short, report a rollback."""
        self.state = read_json(TRIAL) or {}
        if "v" in self.state and exists(STAGED):  # a cut before the rename: finish it
            os.rename(STAGED, CONFIG)
            self.restart_due = True
        if "rolled_back" in self.state:
            self.notes["cfg"] = "rolled back %d" % self.state["rolled_back"]
            self.report({"cfg": self.state["rolled_back"], "st": "rolled back",
                         "why": self.state["why"]})
            remove(TRIAL)
            self.state = {}

    # -- the OTA updater's place -------------------------------------------------

    def receive(self, payload):
        self.ota.receive(payload)

    def poll(self, session):
        self.ota.poll(session)
        self.check()

    def acked(self):
        ota = self.ota.acked()
        return self.confirm() or ota

    # -- configs -----------------------------------------------------------------

    def take(self, payload):
        """A downlink on ek/<id>/down/config. Malformed: ValueError (a bad downlink). Refused:
        counted (health cfgref), reported, True returned (a status is due)."""
        raw, signature = _parse(payload)
        body = version = None
        try:
            try:
                body = cbor.loads(raw)
                version = body.get(BODY_CONFIG)  # as the sender says: for the report
            except (ValueError, AttributeError):
                raise Refused("invalid", "the body is not a map")
            self._verify(raw, signature)
            self._check(body, version)
            settings = checked(body.get(BODY_SET, {}))
            if BODY_SEALED in body:
                settings.update(self._unseal(body[BODY_SEALED]))
            trial = body.get(BODY_TRIAL)
            if trial is not None:
                _limit("trial", trial, (int, 5, 86400))
        except Refused as e:
            return self._refuse(version if _is_uint(version) else 0, e)
        self._apply(version, settings, trial)
        return False

    def check(self):
        """From the loop: restart into a new config, or roll back one not confirmed in time."""
        if "v" in self.state:
            self.connected = self.connected or self.agent.transport.connected
            if clock.monotonic() - self.started > self.state["s"]:
                self._roll_back()
        if self.restart_due:
            self._restart()

    def _restart(self):
        """Reset into the new (or the previous) config; what is batched is sealed first, so
        the spool on flash keeps it."""
        agent = self.agent
        if agent.batch.count:
            agent.seal_batch()
        collect()
        reset()

    def report(self, report):
        self.agent.seal_ota(report)

    def log(self, text):
        self.agent.log(text)

    def confirm(self):
        """The gateway acked a message: a config on trial, and running, is confirmed. True if
        one was."""
        if "v" not in self.state or self.restart_due:
            return False
        version = self.state["v"]
        remove(PREVIOUS)
        remove(TRIAL)
        self.state = {}
        self.notes["cfg"] = "applied %d" % version
        self.report({"cfg": version, "st": "applied"})
        self.log("config %d confirmed" % version)
        return True

    # -- checks ----------------------------------------------------------------

    def _verify(self, body, signature):
        import binascii
        import hashlib

        from agent import p256
        try:
            with open(GATEWAY_KEY) as f:
                key = binascii.unhexlify(f.read().strip())
        except (OSError, ValueError):
            raise Refused("signature", "no gateway key on the device (%s)" % GATEWAY_KEY)
        try:
            good = p256.verify(key, hashlib.sha256(body).digest(), signature)
        except ValueError:
            raise Refused("signature", "%s is not a P-256 public key" % GATEWAY_KEY)
        if not good:
            raise Refused("signature", "bad signature: not signed by this device's gateway key")

    def _check(self, body, version):
        if body.get(BODY_DEVICE) != self.identity.device_id:
            raise Refused("device", "for another device")
        if not _is_uint(version) or version < 1:
            raise Refused("invalid", "version %r is not a positive integer" % (version,))
        seen = _seen()
        if version <= seen:
            raise Refused("replay", "version %d is not above %d, the last taken" % (version, seen))
        if "v" in self.state:
            raise Refused("trial", "config %d is still on trial" % self.state["v"])

    def _unseal(self, sealed):
        from agent import ccm, p256
        from agent.sha256hmac import hmac_sha256
        if (not isinstance(sealed, list) or len(sealed) != 3
                or not all(isinstance(x, bytes) for x in sealed)):
            raise Refused("invalid", "sealed part is not [key, nonce, ciphertext]")
        try:
            # ECDH with p256's own point arithmetic, here rather than in p256, which every
            # device keeps loaded: the x coordinate of secret * the ephemeral public key
            shared = p256._affine(p256._mul(p256._scalar(self.identity.secret),
                                            p256._decode_point(sealed[0])))[0].to_bytes(32, "big")
            key = hmac_sha256(shared, SEAL_INFO)[:16]
            secrets = cbor.loads(ccm.open_(key, sealed[1], sealed[2], self.identity.device_id))
        except ValueError as e:
            raise Refused("invalid", "sealed part does not open: %s" % e)
        if not isinstance(secrets, dict) or any(k not in SECRETS for k in secrets):
            raise Refused("invalid", "sealed part holds more than %s" % ", ".join(SECRETS))
        return checked(secrets, sealed=True)

    # -- applying --------------------------------------------------------------

    def _apply(self, version, settings, trial):
        cfg = read_json(CONFIG)
        if cfg is None:
            self._refuse(version, Refused("invalid", "no readable %s to change" % CONFIG))
            return
        write_json(PREVIOUS, cfg)
        write_json(STAGED, merged(cfg, settings))
        write(SEEN, str(version).encode())
        self.state = {"v": version, "s": trial or cfg.get("config_trial", TRIAL_SECONDS)}
        write_json(TRIAL, self.state)
        os.rename(STAGED, CONFIG)
        self.log("config %d: %s; restarting" % (version, ", ".join(sorted(settings))))
        self.report({"cfg": version, "st": "applying", "set": sorted(settings)})
        self.restart_due = True

    def _roll_back(self):
        version = self.state["v"]
        why = "no ack from the gateway within %d s (%s)" % (self.state["s"], (
            "connected; link lost: %s" % self.agent.lost if self.connected
            else "never connected to %s" % (read_json(CONFIG) or {}).get("broker")))
        self.log("config %d: %s: rolling back" % (version, why))
        os.rename(PREVIOUS, CONFIG)
        self.state = {"rolled_back": version, "why": why}
        write_json(TRIAL, self.state)
        self.restart_due = True

    def _refuse(self, version, e):
        reason = e.args[0]
        self.refused[reason] = self.refused.get(reason, 0) + 1
        self.notes["cfgref"] = self.refused
        self.log("config: refused: %s" % e.why())
        self.report({"cfg": version, "st": "refused", "why": e.why()})
        return True


def merged(cfg, settings):
    """config.json with settings applied (broker_* and wifi_* go into broker and wifi)."""
    out = dict(cfg)
    host, port = _broker(cfg.get("broker"))
    if "broker_host" in settings or "broker_port" in settings:
        out["broker"] = "mqtt://%s:%d" % (settings.get("broker_host", host),
                                          settings.get("broker_port", port))
    if "wifi_ssid" in settings or "wifi_password" in settings:
        wifi = dict(cfg.get("wifi") or {})
        for k in ("ssid", "password"):
            if "wifi_" + k in settings:
                wifi[k] = settings["wifi_" + k]
        out["wifi"] = wifi
    for k in settings:
        if not k.startswith(("broker_", "wifi_")):
            out[k] = settings[k]
    return out


def _broker(url):
    host, _, port = (url or "mqtt://")[7:].rstrip("/").partition(":")
    return host, int(port) if port.isdigit() else 1883


def _parse(payload):
    msg = cbor.loads(payload)
    if not isinstance(msg, dict) or msg.get(MSG_VERSION) != VERSION:
        raise ValueError("config: not a config map of version 1")
    body, signature = msg.get(MSG_BODY), msg.get(MSG_SIGNATURE)
    if not isinstance(body, bytes) or not isinstance(signature, bytes) or len(signature) != 64:
        raise ValueError("config: body or signature missing")
    return body, signature


def checked(given, sealed=False):
    """The settings map given, if each is one this device takes and in range; else Refused."""
    if not isinstance(given, dict):
        raise Refused("invalid", "settings are not a map")
    for k in given:
        if k not in LIMITS:
            raise Refused("invalid", "%r is not a setting this device takes" % (k,))
        if k in SECRETS and not sealed:
            raise Refused("invalid", "%s must come sealed" % k)
        _limit(k, given[k], LIMITS[k])
    if "broker_host" in given and not _is_host(given["broker_host"]):
        raise Refused("invalid", "broker_host %r is not a host name" % given["broker_host"])
    return dict(given)


def _limit(name, value, limit):
    kind, low, high = limit
    if kind is str:
        ok = isinstance(value, str) and low <= len(value) <= high
    else:
        ok = _is_uint(value) and low <= value <= high
    if not ok:
        shown = "(secret)" if name in SECRETS else repr(value)
        what = "a text of length" if kind is str else "a whole number in"
        raise Refused("invalid", "%s %s is not %s %d..%d" % (name, shown, what, low, high))


def _is_host(text):
    for c in text:
        if c in ":/@ \t\r\n":
            return False
    return True


def _is_uint(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _seen():
    try:
        with open(SEEN) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0
