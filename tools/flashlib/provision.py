"""Provisioning: the device makes its own signing key (os.urandom, on the device; the secret
never crosses the wire), the owner's machine makes the data key and keeps it in the owner's
keyring, the device gets its config, and the gateway registers the public key."""
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
os.rename('identity.json.new', 'identity.json')
print(repr(_h(_pk)))
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


def provision(dev, args, passphrase, log=print):
    if not re.match(r"mqtt://[^:/]+(:\d+)?/?$", args.gateway):
        raise FlashError("--gateway must be the broker URL mqtt://HOST:PORT, not %r" % args.gateway,
                         "give the address of the gateway's MQTT broker, e.g. mqtt://edgekeep.local:1883")
    ring = Keyring.open_or_create(args.owner_keyring, passphrase)  # a wrong passphrase stops here
    board_name = device_board(dev, args.board)
    virtual = dev.about["machine"].startswith("Virtual ")
    present = dev.hashes(["identity.json"])["identity.json"]
    if present and not args.force:
        raise FlashError("the device on %s is already provisioned" % dev.port,
                         "keep it, or make it a new device with --force (its old key is lost)")
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
    if args.gateway_data_dir:
        config.update(register(args.gateway_data_dir, public_hex, name, log))
    else:
        log("register it on the gateway host with:\n  edgekeep devices add --data-dir DIR "
            "--public-key %s --name %s --credentials-out FILE" % (public_hex, name))
    dev.write_file("config.json", json.dumps(config).encode())
    log("config written (%s, broker %s%s)" % (config["board"], args.gateway,
                                              ", own MQTT account" if "mqtt_user" in config else ""))
    return dev_hex, public_hex


def register(data_dir, public_hex, name, log):
    """Register on the gateway (and chain); the device's MQTT account if the broker has accounts."""
    with tempfile.TemporaryDirectory() as tmp:
        creds = os.path.join(tmp, "mqtt.json")
        r = subprocess.run([sys.executable, "-m", "gateway", "devices", "add", "--data-dir", data_dir,
                            "--public-key", public_hex, "--name", name, "--credentials-out", creds],
                           cwd=ROOT, capture_output=True, text=True)
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
