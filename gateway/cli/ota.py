"""`gateway ota push`: update devices over the air with a signed bundle.

It connects to the broker as the gateway does. With --config: the config's broker and
account. With --data-dir: the data directory's own broker (`<dir>/broker/`, as `gateway
demo` and `broker init` make it): its address from mosquitto.conf, the gateway's account
with the password in gateway.secret. No secret goes on the command line or into a URL.
Every error ends with a `fix:` line.
"""
import os
import queue
import re
import sys
from typing import NamedTuple

from firmware import bundle, signing
from gateway.cli.common import open_store
from gateway.mqtt.broker import GATEWAY_USER, managed_credentials
from gateway.mqtt.client import new_client
from gateway.store.database import db_path, postgres_marker

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
CONNECT_TIMEOUT = 10        # s for the broker to answer the connection check
NOT_AUTHORIZED = (134, 135)  # CONNACK: bad user name or password; not authorized
LISTENER = re.compile(r"^listener\s+(\d+)(?:\s+(\S+))?\s*$", re.M)


class OtaError(Exception):
    """A failure the user can fix: str() says what happened, .fix what to do about it."""

    def __init__(self, message, fix):
        super().__init__(message)
        self.fix = fix


class Account(NamedTuple):
    """How to reach the gateway: its broker and account, its store."""
    broker: str
    username: str | None
    password: str | None
    data_dir: str
    database_url: str | None
    source: str  # where the account came from, for error messages


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
    p.add_argument("--data-dir", help="the gateway's data directory (without --config): its "
                   "broker and the gateway's account on it")
    p.add_argument("--broker", help="without --config: the broker, if not the data "
                   "directory's own (default: its listener, else %s)" % DEFAULT_BROKER)
    p.add_argument("--force", action="store_true", help="allow a downgrade or a reinstall")
    p.add_argument("--chunk-size", type=int, default=2048)
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for all devices")
    p.set_defaults(fn=cmd_push)


def cmd_push(args):
    try:
        return push(args)
    except OtaError as e:
        print("\nerror: %s\n  fix: %s" % (e, e.fix), file=sys.stderr)
        return 1


def push(args):
    from gateway.cli.ota_progress import PushProgress
    from gateway.ingest.ota import Pusher
    account = gateway_account(args)
    release = load_release(args.bundle, args.release_key, args.chunk_size)
    keys = devices_to_update(account, args.device)
    check_broker(account)
    pusher = Pusher(account.broker, keys, account.username, account.password, PushProgress())
    try:
        transfers = pusher.run(release, sorted(keys), args.force, args.timeout)
    except queue.Empty:
        raise OtaError("the broker at %s did not confirm the subscription to the devices' "
                       "reports" % account.broker,
                       "the account needs to read ek/+/up/o (the gateway's account can): push "
                       "with the gateway's --config or --data-dir")
    except OSError as e:
        raise OtaError("lost the broker at %s: %s" % (account.broker, e),
                       "check that the gateway's broker runs, then push again: devices "
                       "resume where they stopped")
    return report(transfers, release.version, args.timeout)


def report(transfers, version, timeout):
    """Each failure with its fix, then how many devices run the release; the exit status."""
    from gateway.cli.ota_progress import failure
    failed = [t for t in transfers.values() if not t.ok]
    for t in failed:
        what, fix = failure(t, timeout)
        print("\nerror: %s: %s\n  fix: %s" % (t.device, what, fix), file=sys.stderr)
    print("%d of %d device(s) run %s" % (len(transfers) - len(failed), len(transfers), version),
          file=sys.stderr)
    return 1 if failed else 0


# -- the gateway's broker account ---------------------------------------------

def gateway_account(args):
    if args.config:
        return config_account(args.config)
    if args.data_dir:
        return data_dir_account(args.data_dir, args.broker)
    raise OtaError("ota push needs the gateway: --config or --data-dir",
                   "pass --config gateway.toml (a service) or --data-dir DIR (e.g. the demo's "
                   "demo-data)")


def config_account(path):
    import tomllib

    from gateway.config import Config
    try:
        cfg = Config.load(path)
    except OSError as e:
        raise OtaError("cannot read the config %s: %s" % (path, e.strerror),
                       "give the gateway's config (e.g. /etc/edgekeep/gateway.toml), or "
                       "--data-dir DIR")
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise OtaError("the config %s is not valid: %s" % (path, e),
                       "fix it (its keys are documented in gateway/config.py)")
    try:
        password = cfg.broker_password()
    except OSError as e:
        raise OtaError("cannot read the gateway's broker password %s: %s"
                       % (cfg.broker_password_file, e.strerror),
                       "run as the gateway's user (e.g. `sudo -u edgekeep edgekeep ota push ...`)")
    return Account(cfg.broker, cfg.broker_username or None, password, cfg.data_dir,
                   cfg.database_url, "the config %s" % path)


def data_dir_account(data_dir, broker):
    """The data directory's broker and the gateway's account on it (anonymous if that broker
    has no accounts)."""
    creds = managed_credentials(data_dir)
    url = broker or broker_url_of(data_dir) or DEFAULT_BROKER
    if creds is None:
        return Account(url, None, None, data_dir, None, "the data directory %s" % data_dir)
    try:
        password = creds.gateway_password()
    except OSError as e:
        raise OtaError("cannot read the gateway's broker password %s: %s"
                       % (creds.gateway_secret, e.strerror),
                       "run as the gateway's user (e.g. `sudo -u edgekeep edgekeep ota push ...`),"
                       " or recreate it: `edgekeep broker set-password --dir %s --user gateway` "
                       "(then restart the gateway)" % creds.dir)
    return Account(url, GATEWAY_USER, password, data_dir, None,
                   "the gateway's account in %s" % creds.dir)


def broker_url_of(data_dir):
    """mqtt://HOST:PORT of the first listener in <data_dir>/broker/mosquitto.conf, if any."""
    try:
        with open(os.path.join(data_dir, "broker", "mosquitto.conf")) as f:
            listener = LISTENER.search(f.read())
    except OSError:
        return None
    if listener is None:
        return None
    return "mqtt://%s:%s" % (listener.group(2) or "127.0.0.1", listener.group(1))


def check_broker(account):
    """Connect once, so that an absent broker or a refused account is said plainly, not as a
    stalled transfer."""
    try:
        client, b = new_client(account.broker, "edgekeep-ota-check-%d" % os.getpid(),
                               account.username, account.password)
    except ValueError as e:
        raise OtaError("%s (from %s)" % (e, account.source),
                       "give the gateway's broker as mqtt://HOST:PORT (or mqtts://)")
    answers = queue.Queue()
    client.on_connect = lambda c, u, flags, rc, props: answers.put(rc)
    try:
        client.connect(b.host, b.port, keepalive=CONNECT_TIMEOUT)
    except OSError as e:
        raise OtaError("no MQTT broker answers at %s: %s" % (account.broker, e.strerror or e),
                       "start the gateway (`edgekeep run --config ...`, or `edgekeep demo`), or "
                       "give its broker: --config gateway.toml, or --broker mqtt://HOST:PORT")
    client.loop_start()
    try:
        answer = answers.get(timeout=CONNECT_TIMEOUT)
    except queue.Empty:
        raise OtaError("the broker at %s did not answer within %d s"
                       % (account.broker, CONNECT_TIMEOUT),
                       "check that %s is the gateway's MQTT broker (not another service)"
                       % account.broker)
    finally:
        client.disconnect()
        client.loop_stop()
    if answer.is_failure:
        raise refused(account, answer)


def refused(account, answer):
    if answer.value not in NOT_AUTHORIZED:
        return OtaError("the broker at %s refused the connection: %s" % (account.broker, answer),
                        "see the broker's log")
    who = "account %r" % account.username if account.username else "an anonymous connection"
    return OtaError("the broker at %s refused %s (%s; from %s)"
                    % (account.broker, who, answer, account.source),
                    "push with the gateway's own account: --data-dir of the gateway that runs "
                    "this broker (it reads DIR/broker/gateway.secret), or --config gateway.toml "
                    "(broker_username, broker_password_file)")


# -- what to send, and to whom --------------------------------------------------

def load_release(bundle_dir, release_key, chunk_size):
    from gateway.ingest.ota import Release
    try:
        public = signing.load_public(release_key)
    except signing.SigningError as e:
        raise OtaError(str(e), "pass the release public key the devices trust: the KEY.pub "
                       "written by `python -m firmware keygen`")
    try:
        return Release.verified(bundle_dir, public, chunk_size)
    except bundle.BundleError as e:
        raise OtaError(str(e), bundle_fix(str(e)))
    except ValueError as e:
        raise OtaError(str(e), "push a MicroPython bundle (`python -m firmware build --board "
                       "esp32|esp32cam|pebble`) with --chunk-size 1..4096")


def bundle_fix(problem):
    if "signature" in problem or "not signed" in problem:
        return ("push only bundles signed by your release key: rebuild with `python -m firmware "
                "build --board B --sign-key release.key`, or pass the matching --release-key")
    if "is not a bundle" in problem:
        return "give the directory `python -m firmware build` wrote (dist/edgekeep-BOARD-VERSION)"
    return "rebuild the bundle (`python -m firmware build`) and push it again"


def devices_to_update(account, device):
    """{device id: public key} of the devices to update: the one asked for, or all active."""
    if not account.database_url and not os.path.exists(db_path(account.data_dir)) \
            and not os.path.exists(postgres_marker(account.data_dir)):
        raise OtaError("%s is not a gateway data directory (no store.db)" % account.data_dir,
                       "give the gateway's data directory: data_dir in its gateway.toml, or the "
                       "demo's --data-dir (demo-data)")
    store = open_store(account.data_dir, url=account.database_url)
    try:
        active = {d["id"]: d["public_key"] for d in store.devices() if d["status"] == "active"}
    finally:
        store.close()
    if device and device not in active:
        raise OtaError("%s is not an active device of the gateway in %s" % (device, account.data_dir),
                       "pick one from `edgekeep devices list --data-dir %s`, or push to --all"
                       % account.data_dir)
    if not active:
        raise OtaError("the gateway in %s has no active devices" % account.data_dir,
                       "provision one first: `edgekeep-flash provision --port PORT --gateway "
                       "mqtt://HOST:PORT --gateway-data-dir %s` (docs/flashing.md)" % account.data_dir)
    return {device: active[device]} if device else active
