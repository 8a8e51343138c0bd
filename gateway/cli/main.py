"""python -m gateway: run, demo, verify, devices, export, keyring."""
import argparse
import importlib
import json
import logging
import os
import signal
import sys
import time

from gateway.cli.common import chain_for, open_store
from gateway.config import Config

# Modules that add their own subcommands: each has add_commands(subparsers), and each
# subparser sets fn=callable(args) -> exit code.
PLUGINS = ["gateway.cli.broker", "gateway.cli.admin", "gateway.cli.objects", "gateway.cli.keeper",
           "gateway.cli.ota", "gateway.cli.peer", "gateway.cli.restore", "gateway.cli.evidence"]


log = logging.getLogger("edgekeep")

# kill / systemctl stop, Ctrl-C, a closed terminal: each stops `run` and `demo` cleanly, and
# they exit 0 (docs/operations.md, "Stopping").
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def stop_on_signals():
    """From now on the first of SIGTERM, SIGINT or SIGHUP raises KeyboardInterrupt in the main
    thread, wherever it is (starting up included), so that the command's finally stops what
    it started. Later ones are only noted (hold_signals)."""
    def stop(signum, frame):
        hold_signals()
        log.warning("%s: stopping", signal.Signals(signum).name)
        raise KeyboardInterrupt
    for s in STOP_SIGNALS:
        signal.signal(s, stop)


def hold_signals():
    """Stopping has begun: a stop signal no longer interrupts it (the stop is bounded, and
    SIGKILL still ends everything at once: the children die with their parent)."""
    def noted(signum, frame):
        log.warning("%s: already stopping", signal.Signals(signum).name)
    for s in STOP_SIGNALS:
        signal.signal(s, noted)


def cmd_run(args):
    from gateway.service import Gateway
    from gateway.workers import Children
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    cfg = Config.load(args.config)
    children = Children(os.path.abspath(args.config), args.workers)

    def started(gw):
        children.start()
        return "gateway running (data %s, broker %s, %d worker(s))" % (
            cfg.data_dir, cfg.broker, args.workers)
    return serve(Gateway(cfg), started, children.stop)


def cmd_worker(args):
    """One more ingest worker of the deployment whose config this is (same broker, same
    database): no admin page, and the one-of-a-kind jobs only while it holds the lease."""
    from gateway.service import Gateway
    if args.index < 1:
        print("error: --index must be at least 1 (0 is `edgekeep run`'s own worker)",
              file=sys.stderr)
        return 2
    cfg = Config.load(args.config)
    cfg.web_port = -1
    return serve(Gateway(cfg, worker=args.index), lambda gw: "worker %s running (data %s, "
                 "broker %s)" % (gw.name, cfg.data_dir, cfg.broker))


def serve(gw, started, stopping=lambda: None):
    """Start gw, print started(gw), run until a stop signal; then stopping() and gw.stop()."""
    stop_on_signals()
    try:
        gw.start()
        print(started(gw) + "; Ctrl-C to stop", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        hold_signals()
        stopping()
        gw.stop()
    return 0


def cmd_demo(args):
    from gateway import demo
    stop_on_signals()
    return demo.run(args, stopping=hold_signals)


def cmd_verify(args):
    from gateway.keeper.verify import Verifier, parse_message_id
    store = open_store(args.data_dir)
    if args.audit is not None:
        return verify_audit(store, args)
    if args.all:
        messages = store.messages()
    else:
        device, seq = parse_message_id(args.message_id)
        m = store.message(device, seq)
        messages = [m] if m else []
        if not messages:
            print("error: no message %s in %s" % (args.message_id, args.data_dir), file=sys.stderr)
            return 2
    with chain_for(args.data_dir, args.rpc) as chain:
        result = Verifier(store, chain).run(messages)
    for mid, verdict in result.verdicts[:50]:
        print("%s %s: %s" % (verdict.status.upper(), mid, verdict.reason))
    if len(result.verdicts) > 50:
        print("... and %d more" % (len(result.verdicts) - 50))
    c = result.counts
    print("verified %d/%d%s%s" % (c["ok"], result.checked,
                                  ", %d pending (not anchored yet)" % c["pending"] if c["pending"] else "",
                                  ", %d FAILED" % c["failed"] if c["failed"] else ""))
    return 1 if c["failed"] or not result.checked else 0


def verify_audit(store, args):
    """`verify --audit N`: an anchored audit's records against the chain alone."""
    from gateway.keeper.records import check_audit
    row = store.audits.get(args.audit)
    if row is None:
        print("error: no audit %d in %s" % (args.audit, args.data_dir), file=sys.stderr)
        return 2
    records = store.audits.records(args.audit)
    with chain_for(args.data_dir, args.rpc) as chain:
        checked, problems = check_audit(chain, args.audit, records)
    for r, (idx, problem) in zip(records, checked):
        print("%s record %d (epoch %d, leaf %d): %s%s" % (
            "NOT PROVEN" if problem else "PROVEN", idx, r.epoch, r.leaf, r.outcome,
            " -- %s" % problem if problem else (": %s" % r.detail if r.detail else "")))
    for p in problems:
        print("FAILED audit %d: %s" % (args.audit, p))
    bad = problems or any(p for _, p in checked)
    print("audit %d (%s): %d record(s) %s on chain, %d failed challenge(s) recorded" % (
        args.audit, row["mode"], len(records), "NOT proven" if bad else "proven",
        sum(r.outcome == "failed" for r in records)))
    return 1 if bad else 0


def cmd_proof(args):
    from gateway.keeper import proof
    from gateway.keeper.verify import parse_message_id
    device, seq = parse_message_id(args.message_id)
    with chain_for(args.data_dir, args.rpc) as chain:
        p = proof.build(open_store(args.data_dir), chain, device, seq)
    proof.dump(p, args.out)
    print("wrote %s (epoch %d, leaf %d of %d)" % (args.out, p["epoch"], p["index"], p["size"]))
    return 0


def cmd_check_proof(args):
    from gateway.keeper import proof
    with open(args.file) as f:
        p = json.load(f)
    try:
        verdict = proof.check(p, proof.reader(p, args.rpc))
    except (ValueError, KeyError) as e:
        print("error: %s is not a readable proof file (%s)" % (args.file, e), file=sys.stderr)
        return 2
    print({"ok": "proof holds: %s", "pending": "proof pending: %s",
           "failed": "proof does NOT hold: %s"}[verdict.status] % verdict.reason)
    return 0 if verdict.ok else 3 if verdict.status == "pending" else 1


def cmd_devices(args):
    from gateway.chain import registry
    if args.config:
        cfg = Config.load(args.config)
        args.data_dir, url = cfg.data_dir, cfg.database_url or None
        if not args.rpc and cfg.chain.rpc_url != "local":
            args.rpc = cfg.chain.rpc_url
    elif args.data_dir:
        cfg, url = None, None
    else:
        print("error: devices %s needs the gateway's --data-dir or --config" % args.action,
              file=sys.stderr)
        return 2
    if args.action == "enroll":
        return enroll_token(open_store(args.data_dir, url=url), args, cfg)
    if args.action in ("config", "config-key"):
        from gateway.cli import config_push
        return (config_push.cmd_config if args.action == "config"
                else config_push.cmd_config_key)(args)
    store = open_store(args.data_dir, url=url) if args.action == "list" \
        else open_store(args.data_dir, create=True, url=url)
    if args.action == "list":
        devices = store.devices()
        print("%-16s  %-12s  %-8s  %-7s  %6s  %s"
              % ("DEVICE", "NAME", "KIND", "STATUS", "ACKED", "LAST SEEN"))
        for d in devices:
            print("%-16s  %-12s  %-8s  %-7s  %6d  %s" % (
                d["id"], d["name"] or "-", d["kind"], d["status"], d["acked"],
                _ago(d["last_seen"])))
        print("%d device(s)" % len(devices))
        return 0
    from gateway.mqtt.broker import managed_credentials
    broker = managed_credentials(args.data_dir)
    with chain_for(args.data_dir, args.rpc) as chain:
        if args.action == "add":
            dev = registry.register(store, chain, bytes.fromhex(args.public_key), args.name,
                                    args.kind)
            print("registered %s" % dev)
            if broker:
                _give_broker_account(broker, dev, args.credentials_out)
        elif args.action == "import":
            with open(args.file) as f:
                listed = json.load(f)
            devices = [(bytes.fromhex(d["public_key"]), d.get("name"), "tracker")
                       for d in listed]
            for dev, (_, name, _) in zip(registry.register_many(store, chain, devices),
                                         devices):
                print("registered %s (%s)" % (dev, name or "-"))
        elif args.action == "revoke":
            registry.revoke(store, chain, args.device, broker=broker)
            print("revoked %s" % args.device)
    return 0


def enroll_token(store, args, cfg):
    """`devices enroll`: a single-use enrollment token for one device, for `edgekeep-flash
    provision --gateway https://...` on another machine. Printed (or, with --out, written to
    a 0600 file), never logged; the store keeps only its SHA-256."""
    from gateway.chain import registry
    from gateway.web.tls import CERT_FILE, fingerprint
    try:
        token, expires = registry.issue_enrollment(store, args.ttl, "cli", args.broker)
    except registry.RegistryError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    cert = cfg and cfg.web_cert or os.path.join(args.data_dir, CERT_FILE)
    fp = fingerprint(cert) if os.path.exists(cert) else None
    if cfg is None or cfg.web_port < 0:
        url = "https://GATEWAY:PORT"
    else:
        host = cfg.web_host if cfg.web_host not in ("0.0.0.0", "::", "") else "GATEWAY"
        url = "%s://%s:%s" % ("https" if cfg.web_tls or cfg.web_cert else "http",
                              "[%s]" % host if ":" in host else host, cfg.web_port or "PORT")
    until = time.strftime("%H:%M:%S", time.localtime(expires))
    if args.out:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        print("enrollment token for one device, single use, valid until %s: in %s (0600)"
              % (until, args.out))
    else:
        print("enrollment token for one device, single use, valid until %s:\n%s"
              % (until, token))
    print("where the device is plugged in, put the token in a file (or $EDGEKEEP_ENROLL_TOKEN) "
          "and run:\n  %s" % registry.provision_command(url, fp).replace(
              "TOKEN-FILE", args.out or "TOKEN-FILE"))
    if fp is None:
        print("  (no certificate at %s yet: with web_tls the gateway makes it at its first "
              "start and logs its fingerprint; pass that as --fingerprint)" % cert)
    return 0


def _give_broker_account(broker, dev, out):
    """A fresh MQTT account for the device; its password goes to a 0600 file, never stdout."""
    password = broker.add_device(dev)
    if not out:
        print("broker account %s created; pass --credentials-out FILE to receive its password" % dev)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"mqtt_user": dev, "mqtt_password": password}, f)
    print("broker account %s: credentials in %s" % (dev, out))


def _ago(t):
    import time
    if not t:
        return "never"
    return "%ds ago" % (time.time() - t)


def cmd_export(args):
    if args.object:
        from gateway.cli import objects as objects_cli
        return objects_cli.export(args)
    if not args.device:
        raise SystemExit("error: export needs --device or --object")
    from gateway.owner import export
    from gateway.owner.keyring import Keyring, passphrase_from
    ring = Keyring.open(args.key, passphrase_from(args.passphrase_file))
    rows = export.readings(open_store(args.data_dir), args.device, ring.get(args.device))
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    export.write(rows, args.format, out)
    if args.out:
        out.close()
        print("wrote %d readings to %s" % (len(rows), args.out), file=sys.stderr)
    return 0


def cmd_keyring(args):
    from agent.identity import Identity
    from gateway.owner.keyring import Keyring, passphrase_from
    ring = Keyring.open_or_create(args.keyring, passphrase_from(args.passphrase_file, confirm=False))
    for root, _, files in os.walk(args.from_dir):
        if "identity.json" in files:
            ident = Identity.load(os.path.join(root, "identity.json"))
            ring.add(ident.hex, ident.data_key)
            print("added %s" % ident.hex)
    ring.save()
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="edgekeep", description="EdgeKeep gateway")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("run", help="run the gateway")
    s.add_argument("--config", required=True, help="TOML config file (see gateway/config.py)")
    s.add_argument("--workers", type=int, default=1,
                   help="ingest processes on this machine (default 1; docs/operations.md)")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("worker", help="one more ingest worker (this or another machine)")
    s.add_argument("--config", required=True,
                   help="the deployment's config: its broker, database_url, chain")
    s.add_argument("--index", type=int, default=1,
                   help="this worker's number on its machine, 1 or more, unique there "
                        "(default 1); it names the worker host/INDEX")
    s.set_defaults(fn=cmd_worker)

    s = sub.add_parser("demo", help="broker + chain + gateway + simulated trackers on this "
                       "machine; with --trackers 0 --cameras 0, a gateway for a first device")
    s.add_argument("--trackers", type=int, default=3, help="simulated trackers (default 3)")
    s.add_argument("--cameras", type=int, default=1, help="simulated cameras (motion events)")
    s.add_argument("--camera-clips", action="store_true",
                   help="the simulated cameras record H.264 (MP4) clips with pre-roll instead "
                        "of JPEG snapshots (the Camera page plays them)")
    s.add_argument("--duration", type=float,
                   help="stop cleanly after this many seconds (default: run until Ctrl-C "
                        "or SIGTERM)")
    s.add_argument("--data-dir", default="demo-data")
    s.add_argument("--broker", help="use this broker (mqtt://HOST:PORT) instead of starting one")
    s.add_argument("--epoch-seconds", type=float, default=10)
    s.add_argument("--block-time", type=float, default=5)
    s.add_argument("--sample-interval", type=float, default=2)
    s.add_argument("--upload-interval", type=float, default=10)
    s.add_argument("--record", help=argparse.SUPPRESS)
    s.add_argument("--runtime", choices=("cpython", "micropython"), default="cpython",
                   help="run the trackers as threads here or as MicroPython processes")
    s.add_argument("--heap", type=int, default=65536,
                   help="MicroPython heap per tracker in bytes (--runtime micropython)")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("verify", help="check signatures, inclusion and on-chain roots")
    s.add_argument("--data-dir", required=True)
    s.add_argument("--rpc", help="JSON-RPC URL (default: the data dir's local anvil)")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--all", action="store_true")
    g.add_argument("--audit", type=int, metavar="N",
                   help="an anchored audit's records, a failure included, against the chain")
    g.add_argument("message_id", nargs="?", help="<device>-<seq>")
    s.set_defaults(fn=cmd_verify)

    s = sub.add_parser("proof", help="write a portable proof of one message")
    s.add_argument("--data-dir", required=True)
    s.add_argument("--rpc")
    s.add_argument("--out", required=True)
    s.add_argument("message_id", help="<device>-<seq>")
    s.set_defaults(fn=cmd_proof)

    s = sub.add_parser("check-proof", help="check a proof file against the chain alone")
    s.add_argument("file")
    s.add_argument("--rpc", required=True, help="JSON-RPC URL of the chain the proof names")
    s.set_defaults(fn=cmd_check_proof)

    s = sub.add_parser("devices", help="list, add, import, revoke or enroll devices")
    s.add_argument("action", choices=["list", "add", "import", "revoke", "enroll", "config",
                                      "config-key"],
                   help="enroll: a single-use token for `edgekeep-flash provision --gateway "
                        "https://...` on another machine; config: change a device's settings "
                        "over the air; config-key: the public key devices check them with")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--data-dir", help="the gateway's data directory")
    where.add_argument("--config", help="the gateway's TOML config (its data_dir, "
                       "database_url, and for enroll its admin page)")
    s.add_argument("--rpc")
    s.add_argument("--public-key", help="add: 65-byte uncompressed key, hex")
    s.add_argument("--name")
    s.add_argument("--kind", default="tracker")
    s.add_argument("--file", help="import: devices.json written by `python -m agent sim`")
    s.add_argument("--device", help="revoke, config: device id")
    s.add_argument("--credentials-out", help="add: write the device's MQTT account here (0600)")
    s.add_argument("--ttl", type=int, default=600,
                   help="enroll: seconds the token is good for (default 600, at most 86400)")
    s.add_argument("--broker", help="enroll: the broker URL devices use, mqtt://HOST:PORT "
                   "(default: the gateway's, at the address the flash tool reaches it by)")
    s.add_argument("--out", help="enroll: write the token to this file (0600) instead of "
                   "printing it")
    from gateway.cli.config_push import add_arguments as add_config_arguments
    add_config_arguments(s)
    s.set_defaults(fn=cmd_devices)

    s = sub.add_parser("export", help="decrypt a device's readings with the owner's keyring")
    s.add_argument("--data-dir", required=True)
    s.add_argument("--device", help="a device's readings")
    s.add_argument("--object", help="one camera object (<oid> or <device>-<oid>): its JPEG or clip")
    s.add_argument("--key", required=True, help="the owner's keyring file")
    s.add_argument("--passphrase-file", help="else $EDGEKEEP_PASSPHRASE, else a prompt")
    s.add_argument("--format", choices=["csv", "json"], default="csv")
    s.add_argument("--out", help="file to write (default: stdout)")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("keyring", help="add simulated devices' data keys to an owner keyring")
    s.add_argument("--keyring", required=True)
    s.add_argument("--from-dir", required=True, help="directory of device flash dirs (identity.json)")
    s.add_argument("--passphrase-file")
    s.set_defaults(fn=cmd_keyring)

    for name in PLUGINS:
        importlib.import_module(name).add_commands(sub)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.fn(args)
    except Exception as e:
        if args.verbose:
            raise
        print("error: %s" % e, file=sys.stderr)
        return 1
    finally:
        _drop_lost_terminal()


def _drop_lost_terminal():
    """After SIGHUP from a closed terminal, stdout and stderr may be gone: point them at
    /dev/null so that the interpreter's final flush cannot turn exit status 0 into 120."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            stream.flush()
        except (OSError, ValueError):
            fd = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(fd, stream.fileno())
            except (OSError, ValueError):
                setattr(sys, name, open(os.devnull, "w"))
            finally:
                os.close(fd)
