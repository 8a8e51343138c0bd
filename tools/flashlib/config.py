"""`config`: change a provisioned device's settings over USB, keeping its identity. The same
settings, limits and merging as a config sent over the air (agent/config_update.py): Wi-Fi,
APN, broker, intervals; and the gateway's config key (gateway.pub) that such messages are
checked against. config.json is written atomically (Device.write_file); identity.json is
never read or written."""
import json
import re

from agent import config_update as cu
from tools.flashlib import FlashError

# A change over USB ends a config on trial: the owner at the cable has the last word.
END_TRIAL = "import os\nfor p in %r:\n try: os.remove(p)\n except OSError: pass" % (
    (cu.TRIAL, cu.PREVIOUS),)


def settings_from(args):
    """The changes the options ask for, in the agent's setting names."""
    out = {}
    if args.broker:
        m = re.match(r"mqtt://([^:/]+)(?::(\d+))?/?$", args.broker)
        if not m:
            raise FlashError("--broker must be mqtt://HOST:PORT, not %r" % args.broker,
                             "give the gateway's broker, e.g. mqtt://edgekeep.local:1883")
        out["broker_host"], out["broker_port"] = m.group(1), int(m.group(2) or 1883)
    for option, name in (("interval", "sample_interval"), ("upload_interval", "upload_interval"),
                         ("status_every", "status_every"), ("config_trial", "config_trial"),
                         ("wifi", "wifi_ssid"), ("apn", "apn")):
        if getattr(args, option) is not None:
            out[name] = getattr(args, option)
    if args.wifi_password_file:
        try:
            with open(args.wifi_password_file) as f:
                out["wifi_password"] = f.read().rstrip("\r\n")
        except OSError as e:
            raise FlashError("cannot read %s: %s" % (args.wifi_password_file, e.strerror),
                             "give a file that holds the Wi-Fi password")
    try:
        return cu.checked(out, sealed=True)
    except cu.Refused as e:
        raise FlashError(e.why(), "give a value the device takes (docs/flashing.md, "
                         "\"Change settings\")")


def gateway_key(path):
    """The hex of a gateway config key file (config-signing.key.pub), checked."""
    from firmware import signing
    try:
        return signing.load_public(path).hex()
    except signing.SigningError as e:
        raise FlashError(str(e).replace("release", "gateway config"),
                         "give the gateway's config-signing.key.pub (in its data directory), or "
                         "the hex `edgekeep devices config-key` prints, saved to a file")


def configure(dev, args, log=print):
    """Apply the options to the device's config.json; returns the names changed."""
    changes = settings_from(args)
    key = gateway_key(args.gateway_key) if args.gateway_key else None
    if not changes and key is None:
        raise FlashError("nothing to change",
                         "give a setting: --interval, --upload-interval, --broker, --wifi, "
                         "--wifi-password-file, --apn, --status-every, --config-trial, "
                         "--gateway-key")
    if dev.hashes(["identity.json"])["identity.json"] is None:
        raise FlashError("the device on %s is not provisioned" % dev.port,
                         "provision it first: `edgekeep-flash provision --port %s --gateway "
                         "mqtt://HOST:PORT ...`" % dev.port)
    try:
        config = dev.read_json(cu.CONFIG)
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise FlashError("the device on %s has no readable %s" % (dev.port, cu.CONFIG),
                         "write a fresh one: `edgekeep-flash provision --port %s --force ...` "
                         "(a new identity)" % dev.port)
    if key is not None:
        dev.write_file(cu.GATEWAY_KEY, (key + "\n").encode())
        log("gateway.pub written: config messages signed by this gateway are taken")
    if changes:
        dev.exec(END_TRIAL)
        dev.write_file(cu.CONFIG, json.dumps(cu.merged(config, changes)).encode())
        log("config.json: %s changed; the identity is unchanged"
            % ", ".join(sorted(changes)))
    return sorted(changes)
