"""`gateway ota push`: update devices over the air with a signed bundle."""
import sys

from firmware import signing
from gateway.cli.common import open_store


def add_commands(sub):
    s = sub.add_parser("ota", help="over-the-air agent updates")
    actions = s.add_subparsers(dest="ota_action", required=True)
    p = actions.add_parser("push", help="send a signed bundle (python -m firmware build) to "
                           "devices and wait until each confirms it")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", help="device id")
    target.add_argument("--all", action="store_true", help="every active device")
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--release-key", required=True,
                   help="the release public key (KEY.pub) the devices trust")
    p.add_argument("--config", help="the gateway's TOML config (data_dir, broker, credentials)")
    p.add_argument("--data-dir", help="the gateway's data directory (without --config)")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="without --config")
    p.add_argument("--force", action="store_true", help="allow a downgrade or a reinstall")
    p.add_argument("--chunk-size", type=int, default=2048)
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for all devices")
    p.set_defaults(fn=cmd_push)


def cmd_push(args):
    from gateway.config import Config
    from gateway.ingest.ota import Pusher, Release
    if args.config:
        cfg = Config.load(args.config)
        data_dir, broker, url = cfg.data_dir, cfg.broker, cfg.database_url
        username, password = cfg.broker_username or None, cfg.broker_password()
    elif args.data_dir:
        data_dir, broker, username, password = args.data_dir, args.broker, None, None
        url = None
    else:
        raise SystemExit("error: ota push needs --config or --data-dir")
    release = Release.verified(args.bundle, signing.load_public(args.release_key), args.chunk_size)
    active = {d["id"]: d["public_key"] for d in open_store(data_dir, url=url).devices()
              if d["status"] == "active"}
    if args.device:
        if args.device not in active:
            raise SystemExit("error: %s is not an active device in %s" % (args.device, data_dir))
        devices = [args.device]
    else:
        devices = sorted(active)
    if not devices:
        raise SystemExit("error: no active devices in %s" % data_dir)

    def say(device, text):
        print("%s: %s" % (device, text), flush=True)

    pusher = Pusher(broker, {d: active[d] for d in devices}, username, password, say)
    transfers = pusher.run(release, devices, args.force, args.timeout)
    failed = [t for t in transfers.values() if not t.ok]
    for t in failed:
        if not t.done:
            say(t.device, "no confirmation within %d s (last: %s)" % (args.timeout, t.state))
    print("%d of %d device(s) run %s"
          % (len(devices) - len(failed), len(devices), release.version), file=sys.stderr)
    return 1 if failed else 0
