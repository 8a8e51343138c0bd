"""Provisioning: the device makes its own signing key (os.urandom, on the device; the secret
never crosses the wire), the owner's machine makes the data key and keeps it in the owner's
keyring, the device gets its config, and the gateway registers the public key: on this
machine (--gateway-data-dir), or from anywhere through the gateway's API with a single-use
enrollment token (--gateway https://...: remote.py), which also gives the device its broker
account.

The new key is written to identity.json.new and replaces identity.json only once the
gateway has it (and the config is written), so a refused enrollment leaves the device as it
was. With --force, the identity replaced is revoked: with a token, the device signs its own
retirement with the old key (registry.retire_statement), so a token alone revokes nothing."""
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile

from agent.proto import device_hex, device_id
from firmware.boards import BOARDS, ROOT, matches
from gateway.owner.keyring import Keyring
from tools.flashlib import FlashError

KEYGEN = """
import os, json, binascii
_h = lambda b: binascii.hexlify(b).decode()
_sk = new_secret(os.urandom)
_pk = public_key(_sk)
with open('identity.json.new', 'w') as f:
    json.dump({'sk': _h(_sk), 'dk': %r, 'pk': _h(_pk)}, f)
print(repr(_h(_pk)))
"""
COMMIT = "import os\nos.rename('identity.json.new', 'identity.json')"
DISCARD = "import os\ntry: os.remove('identity.json.new')\nexcept OSError: pass"
# Only the public key comes back, never the file (it holds the secret).
PUBLIC = """
import json
try:
    print(repr(json.load(open('identity.json'))['pk']))
except (OSError, ValueError, KeyError):
    print(None)
"""
# The device signs, with the key in identity.json, the statement given in hex.
SIGN = """
import json, binascii, hashlib
_sk = binascii.unhexlify(json.load(open('identity.json'))['sk'])
print(repr(binascii.hexlify(sign(_sk, hashlib.sha256(binascii.unhexlify(%r)).digest())).decode()))
"""


def inline(module, seen=None):
    """Source of agent/<module>.py with the agent modules it imports from inlined before it,
    so it runs on a device that has no agent installed yet."""
    seen = set() if seen is None else seen
    seen.add(module)
    out = []
    with open(os.path.join(ROOT, "agent", module + ".py")) as f:
        lines = f.read().splitlines()
    for line in lines:
        m = re.match(r"from agent\.(\w+) import ", line)
        if m:
            if m.group(1) not in seen:
                out.insert(0, inline(m.group(1), seen))
            continue
        out.append(line)
    return "\n".join(out)


def device_board(dev, board_name):
    """The board name for the device's config.json, checked against its hardware."""
    machine = dev.about["machine"]
    if board_name is None:
        found = [n for n, b in BOARDS.items() if b.get("match") and matches(n, machine)]
        if not found:
            raise FlashError("cannot tell which board %s is (%s)" % (dev.port, machine),
                             "name it: --board " + "|".join(n for n in BOARDS if BOARDS[n].get("match")))
        board_name = found[-1]  # the most specific match is listed last
    check_board(dev, board_name)
    return board_name


def check_board(dev, board_name):
    machine = dev.about["machine"]
    if not matches(board_name, machine):
        raise FlashError("the board does not match: expected %s (%s), but the device on %s is %s"
                         % (board_name, BOARDS[board_name].get("machine", "CPython"), dev.port,
                            machine),
                         "use the %s device, or choose --board / a bundle for this one" % board_name)


def device_config(args, board_name, virtual):
    config = {"broker": args.gateway, "board": "sim" if virtual else board_name,
              "transport": BOARDS[board_name]["config"]["transport"],
              "sample_interval": args.interval, "upload_interval": args.upload_interval}
    if args.mqtt_user:
        config["mqtt_user"], config["mqtt_password"] = args.mqtt_user, args.mqtt_password or ""
    if args.wifi:
        config["wifi"] = {"ssid": args.wifi, "password": args.wifi_password or ""}
    if args.apn:
        config["apn"] = args.apn
    if args.duration:
        config["duration"] = args.duration
    return config


def is_remote(url):
    return url.startswith(("https://", "http://"))


def device_public(dev):
    """The public key in the device's identity.json (bytes), None if it has none."""
    found = dev.eval(PUBLIC)
    return bytes.fromhex(found) if found else None


def sign_retire(dev, dev_hex, new_public=b"", log=print):
    """The device's signature (hex), with the key it holds now, of its own retirement."""
    from gateway.chain.registry import retire_statement
    log("the device signs the retirement of %s with its key ..." % dev_hex)
    return dev.eval(inline("p256") + SIGN % retire_statement(dev_hex, new_public).hex())


def provision(dev, args, passphrase, log=print):
    remote = is_remote(args.gateway)
    if not remote and not re.match(r"mqtt://[^:/]+(:\d+)?/?$", args.gateway):
        raise FlashError("--gateway must be the broker URL mqtt://HOST:PORT, or the admin "
                         "page https://HOST:PORT with an enrollment token; not %r" % args.gateway,
                         "give the gateway's MQTT broker (e.g. mqtt://edgekeep.local:1883, "
                         "with --gateway-data-dir on the gateway host), or its admin page "
                         "(e.g. https://edgekeep.local:8443 --token-file FILE --fingerprint ...)")
    gateway = token = answer = None
    if remote:
        from tools.flashlib.remote import Gateway, read_token
        if args.gateway_data_dir:
            raise FlashError("--gateway-data-dir is for a gateway on this machine, with "
                             "--gateway mqtt://...", "drop one of them")
        gateway = Gateway(args.gateway, args.fingerprint, args.ca_file)
        token = read_token(args)
        gateway.check_token(token)   # its certificate and the token, before the device is touched
        log("gateway %s: the enrollment token is good" % gateway.url)
    ring = Keyring.open_or_create(args.owner_keyring, passphrase)  # a wrong passphrase stops here
    board_name = device_board(dev, args.board)
    virtual = dev.about["machine"].startswith("Virtual ")
    present = dev.hashes(["identity.json"])["identity.json"]
    old = device_public(dev) if present else None
    if present and not args.force:
        raise FlashError("the device on %s is already provisioned%s"
                         % (dev.port, " (device %s)" % device_hex(device_id(old)) if old else ""),
                         "keep it, or make it a new device with --force (the old identity is "
                         "revoked)")
    old_hex = device_hex(device_id(old)) if old else None
    data_key = os.urandom(16)
    log("generating the device key on the device ...")
    public_hex = dev.eval(inline("p256") + KEYGEN % data_key.hex())
    public = bytes.fromhex(public_hex)
    dev_hex = device_hex(device_id(public))
    ring.add(dev_hex, data_key)
    ring.save()
    log("device %s: data key stored in %s" % (dev_hex, args.owner_keyring))
    config = device_config(args, board_name, virtual)
    name = args.name or "dev-" + dev_hex[:8]
    kind = "camera" if "cam" in board_name else "tracker"
    try:
        if remote:
            retire = None
            if old_hex:
                retire = {"device": old_hex, "signature": sign_retire(dev, old_hex, public, log)}
            answer = gateway.enroll(token, public_hex, name, kind, retire)
            config["broker"] = args.broker or answer["broker"]
            if answer.get("mqtt_user"):
                config["mqtt_user"] = answer["mqtt_user"]
                config["mqtt_password"] = answer["mqtt_password"]
            log("enrolled with %s as %s: registered on chain%s" % (
                gateway.url, name, ", with its own broker account" if answer.get("mqtt_user")
                else " (the broker has no accounts)"))
            if answer.get("retired"):
                log("revoked %s, the identity it replaces (gateway, broker, chain)"
                    % answer["retired"])
        elif args.gateway_data_dir:
            config.update(register(args.gateway_data_dir, public_hex, name, kind, log))
            trust_gateway_config_key(dev, args.gateway_data_dir, log)
        else:
            log("register it on the gateway host with:\n  edgekeep devices add --data-dir DIR "
                "--public-key %s --name %s --credentials-out FILE" % (public_hex, name))
            if old_hex:
                log("and revoke the identity it replaces there:\n  edgekeep devices revoke "
                    "--data-dir DIR --device %s" % old_hex)
    except BaseException:
        with contextlib.suppress(Exception):
            dev.exec(DISCARD)   # the device keeps the identity it had
        raise
    dev.write_file("config.json", json.dumps(config).encode())
    dev.exec(COMMIT)
    log("config written (%s, broker %s%s)" % (config["board"], config["broker"],
                                              ", own MQTT account" if "mqtt_user" in config else ""))
    if old_hex and args.gateway_data_dir:   # the new identity is in place: revoke the old one
        revoke_local(args.gateway_data_dir, old_hex, log, missing_ok=True)
    if remote and answer.get("retire_error"):
        raise FlashError("device %s is provisioned, but the gateway did not revoke the identity "
                         "it replaces: %s" % (dev_hex, answer["retire_error"]),
                         "revoke %s on the admin page, or on the gateway: `edgekeep devices "
                         "revoke --config gateway.toml --device %s`" % (old_hex, old_hex))
    return dev_hex, public_hex


def trust_gateway_config_key(dev, data_dir, log):
    """gateway.pub: the key the device checks settings sent over the air against."""
    from gateway.ingest.device_config import public_hex
    dev.write_file("gateway.pub", (public_hex(data_dir) + "\n").encode())
    log("gateway.pub written: the device takes settings this gateway signs")


def gateway_cli(data_dir, *args):
    return subprocess.run([sys.executable, "-m", "gateway", "devices", *args, "--data-dir",
                           data_dir], cwd=ROOT, capture_output=True, text=True)


def register(data_dir, public_hex, name, kind, log):
    """Register on the gateway (and chain); the device's MQTT account if the broker has accounts."""
    with tempfile.TemporaryDirectory() as tmp:
        creds = os.path.join(tmp, "mqtt.json")
        r = gateway_cli(data_dir, "add", "--public-key", public_hex, "--name", name,
                        "--kind", kind, "--credentials-out", creds)
        if r.returncode:
            raise FlashError("the gateway did not register the device: %s"
                             % (r.stderr.strip() or r.stdout),
                             "fix the gateway (data dir %s), then register the key printed above"
                             % data_dir)
        log(r.stdout.strip())
        if not os.path.exists(creds):
            return {}
        with open(creds) as f:
            return json.load(f)


def revoke_local(data_dir, dev_hex, log, missing_ok=False):
    """Revoke on the gateway of this machine: its table, its broker account, the chain."""
    r = gateway_cli(data_dir, "revoke", "--device", dev_hex)
    if r.returncode:
        err = (r.stderr.strip() or r.stdout.strip()).removeprefix("error: ")
        if missing_ok and "no device" in err:
            log("%s was not registered with the gateway in %s: nothing to revoke there"
                % (dev_hex, data_dir))
            return False
        raise FlashError("the gateway did not revoke %s: %s" % (dev_hex, err),
                         "revoke it on the gateway: `edgekeep devices revoke --data-dir %s "
                         "--device %s`" % (data_dir, dev_hex))
    log("revoked %s (gateway, broker account, chain)" % dev_hex)
    return True
