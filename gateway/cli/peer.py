"""Pairing with other gateways from the command line (docs/network.md, "Pairing").

    edgekeep peer invite --data-dir DIR --endpoint https://me.example:8443 --capacity 20GB
                         [--expires 24h]
    edgekeep peer add INVITATION --data-dir DIR --endpoint https://me.example:8443
                         --capacity 20GB
    edgekeep peer list --data-dir DIR [--all]
    edgekeep peer remove NAME --data-dir DIR

--config FILE may stand for --data-dir (its data_dir) and --endpoint (its peer_endpoint).
Sizes are decimal (20GB = 20 * 10^9 bytes) or binary (20GiB); durations 90s, 30m, 24h, 7d,
2w.
"""
import argparse
import concurrent.futures
import datetime
import re
import sys
import time

from gateway.cli.common import open_store
from gateway.config import Config
from gateway.network import pairing
from gateway.network.client import PeerClient, PeerError
from gateway.network.identity import Identity
from gateway.network.placement import Placer
from gateway.network.protocol import Refused
from gateway.store.peers import REMOVED

UNITS = {"": 1, "b": 1, "k": 10 ** 3, "kb": 10 ** 3, "m": 10 ** 6, "mb": 10 ** 6,
         "g": 10 ** 9, "gb": 10 ** 9, "t": 10 ** 12, "tb": 10 ** 12, "kib": 1 << 10,
         "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
PROBE_TIMEOUT = 3


def add_commands(sub):
    p = sub.add_parser("peer", help="pair with other gateways that hold shares of this one's "
                                    "data (and it of theirs)")
    ps = p.add_subparsers(dest="peer_cmd", required=True)

    s = ps.add_parser("invite", help="a single-use invitation for another gateway to pair")
    _where(s)
    s.add_argument("--endpoint", help="this gateway's https://HOST:PORT as the other reaches "
                                      "its peer port (default: peer_endpoint of --config)")
    s.add_argument("--capacity", required=True, type=size,
                   help="what this gateway will hold for the other at most, e.g. 20GB")
    s.add_argument("--expires", default="24h", type=duration,
                   help="how long the invitation is good (default 24h)")
    s.set_defaults(fn=cmd_invite)

    s = ps.add_parser("add", help="pair with the gateway that made an invitation")
    s.add_argument("invitation", help="ekinv1.... from `edgekeep peer invite` on the other")
    _where(s)
    s.add_argument("--endpoint", help="this gateway's https://HOST:PORT as the other reaches "
                                      "its peer port (default: peer_endpoint of --config)")
    s.add_argument("--capacity", required=True, type=size,
                   help="what this gateway will hold for the other at most, e.g. 20GB")
    s.set_defaults(fn=cmd_add)

    s = ps.add_parser("list", help="the peers, whether they answer, and what each holds")
    _where(s)
    s.add_argument("--all", action="store_true", help="removed peers too")
    s.set_defaults(fn=cmd_list)

    s = ps.add_parser("remove", help="stop serving a peer (its requests are refused)")
    s.add_argument("name", help="the peer's name or short name (`edgekeep peer list`)")
    _where(s)
    s.set_defaults(fn=cmd_remove)


def _where(s):
    s.add_argument("--data-dir", help="the gateway's data directory")
    s.add_argument("--config", help="the gateway's config file (its data_dir, peer_endpoint)")


# -- sizes and durations ----------------------------------------------------------------------

def size(text):
    """Bytes in "20GB", "512MB", "1.5TB", "20GiB" or "1000"."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in UNITS:
        raise _arg_error("%r is not a size: write e.g. 20GB, 512MB or 20GiB" % text)
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


def duration(text):
    """Seconds in "90s", "30m", "24h", "7d", "2w" or "3600"."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]?)\s*", text)
    if not m or m.group(2).lower() not in SECONDS or float(m.group(1)) <= 0:
        raise _arg_error("%r is not a duration: write e.g. 24h, 7d or 30m" % text)
    return float(m.group(1)) * SECONDS[m.group(2).lower()]


def human(n):
    """20000000000 -> "20.0 GB" (decimal units, as sizes are written)."""
    if n < 1000:
        return "%d B" % n
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        n /= 1000
        if n < 1000 or unit == "PB":
            return "%.1f %s" % (n, unit)


def _arg_error(msg):
    return argparse.ArgumentTypeError(msg)


def _ago(t):
    if not t:
        return "never"
    s = max(0, time.time() - t)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return "%d%s ago" % (s // n, unit)
    return "%ds ago" % s


# -- commands -------------------------------------------------------------------------------------

def _gateway(args):
    """(data dir, config or None) of the command."""
    cfg = Config.load(args.config) if args.config else None
    data_dir = args.data_dir or (cfg.data_dir if cfg else None)
    if not data_dir:
        raise SystemExit("error: which gateway? no data directory given\nfix: pass --data-dir "
                         "DIR (or --config FILE) of the gateway")
    return data_dir, cfg


def _endpoint(args, cfg):
    endpoint = args.endpoint or (cfg.peer_endpoint if cfg else "")
    if not endpoint:
        raise SystemExit("error: no endpoint for this gateway\nfix: pass --endpoint "
                         "https://HOST:PORT, where other gateways reach this one's peer port "
                         "(or set peer_endpoint in its config and pass --config)")
    if not re.fullmatch(r"https://[^/\s:]+(:\d+)?/?|https://\[[0-9a-fA-F:.]+\](:\d+)?/?",
                        endpoint):
        raise SystemExit("error: %r is not an endpoint\nfix: write it https://HOST:PORT, e.g. "
                         "https://pi.example.org:8443" % endpoint)
    return endpoint.rstrip("/")


def cmd_invite(args):
    data_dir, cfg = _gateway(args)
    endpoint = _endpoint(args, cfg)
    store = open_store(data_dir, url=cfg.database_url if cfg else None)
    me = Identity.load_or_create(data_dir)
    try:
        text = pairing.invite(store, me, endpoint, args.capacity, args.expires)
    finally:
        store.close()
    until = datetime.datetime.fromtimestamp(time.time() + args.expires, datetime.UTC)
    print(text)
    print("an invitation to pair with %s at %s, good once until %s UTC: this gateway will "
          "hold up to %s of the other's. On the other gateway run\n  edgekeep peer add "
          "INVITATION --data-dir DIR --endpoint ITS_URL --capacity SIZE"
          % (me.short, endpoint, until.strftime("%Y-%m-%d %H:%M"), human(args.capacity)),
          file=sys.stderr)
    if cfg is not None and cfg.peer_port < 0:
        print("warning: peer_port is -1 in %s: set it (e.g. 8443) and restart the gateway, "
              "or the other gateway cannot reach this one" % args.config,
              file=sys.stderr)
    return 0


def cmd_add(args):
    data_dir, cfg = _gateway(args)
    endpoint = _endpoint(args, cfg)
    store = open_store(data_dir, url=cfg.database_url if cfg else None)
    me = Identity.load_or_create(data_dir)
    try:
        peer = pairing.add(store, me, args.invitation, endpoint, args.capacity)
    except Refused as e:
        raise SystemExit("error: %s\nfix: ask the other gateway's owner for a new invitation "
                         "(`edgekeep peer invite`) and copy the whole line" % e.detail)
    except PeerError as e:
        raise SystemExit("error: pairing failed: %s\nfix: %s" % (e, _fix(e)))
    finally:
        store.close()
    print("paired with %s at %s: it holds up to %s of ours, we hold up to %s of its"
          % (peer.short, peer.endpoint, human(peer.capacity), human(peer.quota)))
    return 0


def _fix(e):
    if e.reason == "unreachable":
        return ("check that the inviting gateway runs with its peer port open (peer_port in "
                "its config) and that its endpoint is reachable from here")
    if e.reason == "wrong_key":
        return ("the endpoint answers with another gateway's key: check the endpoint with the "
                "other gateway's owner, and ask for a new invitation")
    if e.reason in ("bad_invitation", "expired_invitation"):
        return "ask the other gateway's owner for a new invitation (each is good once)"
    if e.reason in ("stale",):
        return "set this machine's clock (NTP): it is more than 5 minutes off the other's"
    return "try again; if it fails again, show this message to the other gateway's owner"


def cmd_list(args):
    data_dir, cfg = _gateway(args)
    cfg = cfg or Config()
    store = open_store(data_dir, url=cfg.database_url if cfg else None)
    try:
        me = Identity.load_or_create(data_dir)
        peers = [p for p in store.peers.all() if args.all or p.status != REMOVED]
        held = store.peers.used_by_owner()
        placed = {p.name: store.placements.bytes_on(p.name) for p in peers}
        survival = Placer(store, None, None, cfg.network_k, cfg.network_m).survival()
    finally:
        store.close()
    reach = _probe(me, [p for p in peers if p.status != REMOVED])
    rows = [("PEER", "ENDPOINT", "STATUS", "REACHABLE", "PLACED", "HELD", "LAST AUDIT",
             "FAILURES")]
    for p in peers:
        rows.append((p.short, p.endpoint, p.status, reach.get(p.name, "-"),
                     human(placed[p.name]), human(held.get(p.name, 0)), _ago(p.last_audit),
                     str(p.audit_failures)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("%d peer(s); this gateway is %s" % (len(peers), me.short))
    print(survival["statement"])
    if survival["not_offbox_blobs"]:
        print("not yet durable off the box: %d blob(s), %s" % (
            survival["not_offbox_blobs"], human(survival["not_offbox_bytes"])))
    return 0


def _probe(me, peers):
    """{name: "yes" | "no: reason"} from a hello to each peer, all at once."""
    def hello(p):
        try:
            with PeerClient(me, p.name, p.endpoint, PROBE_TIMEOUT) as c:
                c.hello()
            return "yes"
        except PeerError as e:
            return "no: %s" % e.reason
        except ValueError:
            return "no: bad endpoint"
    if not peers:
        return {}
    with concurrent.futures.ThreadPoolExecutor(min(16, len(peers))) as pool:
        return dict(zip([p.name for p in peers], pool.map(hello, peers)))


def cmd_remove(args):
    data_dir, cfg = _gateway(args)
    store = open_store(data_dir, url=cfg.database_url if cfg else None)
    try:
        found = store.peers.find(args.name)
        if not found:
            raise SystemExit("error: no peer named %s\nfix: `edgekeep peer list` shows the "
                             "peers' short names" % args.name)
        if len(found) > 1:
            raise SystemExit("error: %s names %d peers (%s)\nfix: give more of the name"
                             % (args.name, len(found), ", ".join(p.short for p in found)))
        peer = found[0]
        with store.transaction():
            store.peers.set_status(peer.name, REMOVED)
        kept = store.peers.used(peer.name)
    finally:
        store.close()
    print("removed %s (%s): this gateway refuses its requests from now on%s"
          % (peer.short, peer.endpoint, "; the %s held for it stay on disk" % human(kept)
             if kept else ""))
    return 0
