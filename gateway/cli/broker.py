"""`edgekeep broker ...`: broker accounts and Home Assistant discovery.

Passwords are printed on stdout alone, so that scripts can capture them; they are not
stored anywhere in clear except the gateway's own (`<dir>/gateway.secret`).
"""
import re
import socket

from gateway.mqtt.broker import Credentials


def cmd_init(args):
    creds = Credentials(args.dir)
    creds.init()
    print("broker credentials in %s; gateway password in %s" % (creds.dir, creds.gateway_secret))
    return 0


def cmd_add_device(args):
    print(Credentials(args.dir).add_device(args.device))
    return 0


def cmd_revoke_device(args):
    reloaded = Credentials(args.dir).revoke_device(args.device)
    print("revoked %s%s" % (args.device, "" if reloaded else " (no broker running)"))
    return 0


def cmd_set_password(args):
    print(Credentials(args.dir).set_password(args.user))
    return 0


def cmd_list(args):
    for user in Credentials(args.dir).users():
        print(user)
    return 0


def cmd_share(args):
    from gateway.integrations import discovery
    readings = [r for r in args.readings.split(",") if r]
    discovery.set_shares(args.data_dir, args.device, readings)
    print("%s shares %s with Home Assistant" % (args.device, ", ".join(readings) or "nothing"))
    return 0


def cmd_discovery(args):
    from gateway.integrations import discovery
    from gateway.store.database import Store
    store = Store.open(args.data_dir)
    password = None
    if args.password_file:
        with open(args.password_file) as f:
            password = f.read().strip()
    pub = discovery.Publisher(args.broker, args.gateway_id, args.username, password).start()
    try:
        devices = store.devices()
        pub.sync(devices, discovery.load_shares(args.data_dir))
    finally:
        pub.stop()
        store.close()
    print("published discovery for %d device(s)" % len(devices))
    return 0


def default_gateway_id():
    return re.sub(r"[^a-zA-Z0-9_-]", "-", socket.gethostname()) or "gateway"


def add_commands(sub):
    p = sub.add_parser("broker", help="broker accounts (per-device MQTT credentials), HA discovery")
    bsub = p.add_subparsers(dest="broker_cmd", required=True)

    def with_dir(name, fn, help):
        s = bsub.add_parser(name, help=help)
        s.add_argument("--dir", required=True, help="the broker directory (e.g. <data_dir>/broker)")
        s.set_defaults(fn=fn)
        return s

    with_dir("init", cmd_init, "write the ACL and create the gateway account")
    with_dir("add-device", cmd_add_device,
             "give a device a new password (printed); takes effect at once").add_argument(
        "--device", required=True, help="device id (16 hex characters)")
    with_dir("revoke-device", cmd_revoke_device,
             "delete a device's account and drop its connection").add_argument(
        "--device", required=True)
    with_dir("set-password", cmd_set_password,
             "new password (printed) for a service account").add_argument(
        "--user", required=True, choices=["gateway", "homeassistant"])
    with_dir("list", cmd_list, "list broker accounts")

    s = bsub.add_parser("share", help="choose the readings a device shares in plaintext with HA")
    s.add_argument("--data-dir", required=True)
    s.add_argument("--device", required=True)
    s.add_argument("--readings", required=True,
                   help="comma-separated, from temp,hum,pres,gas,light,batt,position; '' for none")
    s.set_defaults(fn=cmd_share)

    s = bsub.add_parser("discovery", help="publish Home Assistant discovery for every device once")
    s.add_argument("--data-dir", required=True)
    s.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    s.add_argument("--username")
    s.add_argument("--password-file")
    s.add_argument("--gateway-id", default=default_gateway_id())
    s.set_defaults(fn=cmd_discovery)
