"""`edgekeep devices config`: change a device's settings over the air (docs/protocol.md,
"Config over the air"), and `edgekeep devices config-key`: the public key devices trust for it.

    edgekeep devices config --data-dir DIR --device ID --set broker_port=1884 --set apn=iot
    edgekeep devices config --config gateway.toml --device ID --wifi-password-file F

It sends through the gateway's own broker account, as `ota push` does (gateway/cli/ota.py),
and waits for the device's verdict: applied (it reached the gateway with the new settings),
rolled back (it did not, within its trial time, and went back to the previous ones), or
refused. A secret (the Wi-Fi password) is read from a file, sealed to the device, and never
printed. Every error ends with a `fix:` line.
"""
import sys

from agent import config_update as cu
from gateway.cli.ota import OtaError, check_broker, devices_to_update, gateway_account
from gateway.ingest import device_config

SLACK = 60.0  # s beyond the trial for the device to restart, connect and report


def add_arguments(s):
    """The options of `devices config` on the `devices` parser."""
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config: a setting to change (%s)"
                   % ", ".join(k for k in cu.LIMITS if k not in cu.SECRETS))
    s.add_argument("--wifi-password-file", help="config: the new Wi-Fi password, from this "
                   "file (sealed to the device; never on the command line)")
    s.add_argument("--trial", type=int, help="config: seconds the device has to reach the "
                   "gateway with the new settings before it rolls back (default: its "
                   "config_trial, else %d)" % cu.TRIAL_SECONDS)
    s.add_argument("--timeout", type=float, help="config: seconds to wait for the verdict "
                   "(default: the trial time + %d)" % SLACK)


def cmd_config_key(args):
    print(device_config.public_hex(args.data_dir))
    return 0


def cmd_config(args):
    try:
        return push(args)
    except OtaError as e:
        return failed(str(e), e.fix)


def failed(what, fix):
    print("\nerror: %s\n  fix: %s" % (what, fix), file=sys.stderr)
    return 1


def push(args):
    if not args.device:
        raise OtaError("devices config changes one device: no --device",
                       "pick one from `edgekeep devices list`, then --device ID")
    settings = parse_settings(args.set, args.wifi_password_file)
    account = gateway_account(args)
    keys = devices_to_update(account, args.device)
    check_broker(account)
    key = device_config.config_key(account.data_dir)
    version = device_config.next_version(account.data_dir, args.device)
    payload = device_config.message(key, keys[args.device], version, settings, args.trial)
    trial = args.trial or cu.TRIAL_SECONDS
    print("%s: sending config %d: %s" % (args.device, version, describe(settings)))
    sender = device_config.Sender(account.broker, account.username, account.password)
    try:
        outcome = sender.send(args.device, keys[args.device], version, payload,
                              args.timeout or trial + SLACK,
                              lambda r: print("%s: %s" % (args.device, step(r))))
    except OSError as e:
        raise OtaError("lost the broker at %s: %s" % (account.broker, e),
                       "check that the gateway's broker runs, then send the config again")
    return verdict(args.device, version, outcome, account.data_dir)


def parse_settings(pairs, password_file):
    settings = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or name not in cu.LIMITS:
            raise OtaError("--set %s: not KEY=VALUE with a setting devices take" % name,
                           "use one of %s" % ", ".join(k for k in cu.LIMITS if k not in cu.SECRETS))
        if name in cu.SECRETS:
            raise OtaError("--set %s would put a secret on the command line" % name,
                           "put it in a file readable only by you and pass "
                           "--wifi-password-file FILE")
        settings[name] = int(value) if cu.LIMITS[name][0] is int and value.isdigit() else value
    if password_file:
        try:
            with open(password_file) as f:
                settings["wifi_password"] = f.read().rstrip("\r\n")
        except OSError as e:
            raise OtaError("cannot read %s: %s" % (password_file, e.strerror),
                           "give a file that holds the Wi-Fi password")
    if not settings:
        raise OtaError("nothing to change", "give --set KEY=VALUE (or --wifi-password-file)")
    try:
        cu.checked(settings, sealed=True)
    except cu.Refused as e:
        raise OtaError(e.why(), "give a value the device takes (docs/protocol.md, \"Config "
                       "over the air\")")
    return settings


def describe(settings):
    """The settings for a log line: a secret's name only."""
    return ", ".join("%s=%s" % (k, "(sealed)" if k in cu.SECRETS else settings[k])
                     for k in sorted(settings))


def step(report):
    text = {"applying": "took config %d, restarting into it",
            "applied": "applied config %d",
            "rolled back": "rolled back config %d",
            "refused": "refused config %d"}.get(report.get("st"), "config %d: " + str(report))
    return text % report["cfg"] + (": " + report["why"] if report.get("why") else "")


def verdict(device, version, outcome, data_dir):
    st = outcome["st"]
    if st == "applied":
        return 0
    why = outcome.get("why", "")
    if st == "timeout":
        what = "no verdict on config %d" % version
        fix = ("the device is offline or still on trial: check `edgekeep devices list`, "
               "then send the config again (a new version) once it is online")
    elif st == "rolled back":
        what = "config %d rolled back: %s" % (version, why)
        fix = ("the device could not reach the gateway with those settings and went back to "
               "its previous ones: check them (a broker listening there, the Wi-Fi in range), "
               "then send again")
    elif "gateway key" in why or "signature" in why:
        what = "config %d refused: %s" % (version, why)
        fix = ("give the device this gateway's config key over USB: `edgekeep-flash config "
               "--port PORT --gateway-key %s`" % (device_config.key_path(data_dir) + ".pub"))
    else:
        what = "config %d refused: %s" % (version, why)
        fix = "wait until a config on trial is decided, then send again" if "trial" in why \
            else "change the setting named, then send again"
    return failed("%s: %s" % (device, what), fix)
