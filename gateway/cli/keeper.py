"""The Keeper from the command line.

    edgekeep audit --data-dir DIR [--all | --object ID] [--samples N] [--rpc URL]
    edgekeep audit --remote URL [--rpc URL] [--samples N] [--password-file F]
                            [--deployment FILE]
    edgekeep audit --remote PEER --data-dir DIR [--owner NAME] [--samples N] [--rpc URL]
    edgekeep repair --data-dir DIR
    edgekeep keeper status --data-dir DIR

`audit --remote URL` is the independent Keeper: it logs in to a gateway's API, draws challenges
from the chain, and checks every answer against the chain alone. `audit --remote PEER` audits
the --data-dir gateway's storage agreement with a peer the same way (gateway/cli/network_audit.py).
"""
import getpass
import json
import os
import urllib.error
import urllib.request

from gateway.chain.reader import ChainReader
from gateway.cli import network_audit
from gateway.cli.common import chain_for, open_store
from gateway.keeper import audit as keeper
from gateway.keeper import challenges
from gateway.store import provider


def add_commands(sub):
    s = sub.add_parser("audit", help="audit stored data against the chain (here or --remote)")
    s.add_argument("--data-dir", help="audit this gateway's own store, recorded and anchored; with "
                                      "--remote PEER: the gateway whose agreement it audits")
    s.add_argument("--remote", metavar="URL|PEER",
                   help="audit a gateway over its API (URL), or, with --data-dir, our agreement "
                        "with a peer (its name or a prefix: gateway/cli/network_audit.py), "
                        "trusting only the chain")
    s.add_argument("--owner", help="--remote PEER: the owner of the agreement (default and only "
                                   "choice: the --data-dir gateway's identity)")
    w = s.add_mutually_exclusive_group()
    w.add_argument("--all", action="store_true", help="every chunk of every anchored object")
    w.add_argument("--object", help="every chunk of one: <device>-<seq> or [<device>-]<oid>")
    s.add_argument("--samples", type=int, default=16, help="challenges drawn from the block hash")
    s.add_argument("--rpc", help="JSON-RPC URL (default: the data dir's anvil; remote: the gateway's)")
    s.add_argument("--password-file", help="--remote: admin password (else $EDGEKEEP_ADMIN_PASSWORD, "
                                           "else a prompt)")
    s.add_argument("--deployment", help="--remote: deployment.json pinning the contract addresses "
                                        "(else the gateway names them)")
    s.set_defaults(fn=cmd_audit)

    s = sub.add_parser("repair", help="rebuild damaged or missing shares, most endangered first")
    s.add_argument("--data-dir", required=True)
    s.set_defaults(fn=cmd_repair)

    s = sub.add_parser("keeper", help="the Keeper's state")
    s.add_argument("action", choices=["status"])
    s.add_argument("--data-dir", required=True)
    s.set_defaults(fn=cmd_status)


def cmd_audit(args):
    if args.remote and network_audit.is_peer(args.remote):
        return network_audit.run(args)
    if bool(args.data_dir) == bool(args.remote) or args.owner:
        raise SystemExit("error: audit needs one of --data-dir DIR or --remote URL (--owner "
                         "goes with --remote PEER)")
    if args.samples < 1:
        raise SystemExit("error: --samples must be at least 1")
    if args.remote:
        if args.all or args.object:
            raise SystemExit("error: --all and --object audit a local --data-dir")
        return audit_remote(args)
    store = open_store(args.data_dir)
    with chain_for(args.data_dir, args.rpc) as chain:
        k = keeper.Keeper.open(store, chain)
        try:
            audit = (k.audit_all(args.object) if args.all or args.object
                     else k.audit_sample(args.samples))
        except LookupError as e:
            raise SystemExit("error: %s" % str(e).strip("'\""))
        row = k.anchor(audit)
    for idx, epoch, leaf, chunk, _, outcome, detail, _ in k.records(audit):
        if outcome != "ok":
            print("%s challenge %d (epoch %d, leaf %d%s): %s" % (
                outcome.upper(), idx, epoch, leaf, ", chunk %d" % chunk if chunk >= 0 else "", detail))
    if row["repaired"] or row["alarm"]:
        print("repaired %d blob(s)%s" % (row["repaired"], "; ALARM: " + row["alarm"] if row["alarm"] else ""))
    print("audit %d: seed block %d, root %s, %s%s" % (
        audit, row["seed_block"], row["root"], row["status"],
        " in block %d (tx %s)" % (row["block"], row["tx_hash"]) if row["block"] else ""))
    return report(row["challenges"], row["failed"], row["skipped"])


def report(audited, failed, skipped):
    print("audited %d chunks, failed %d%s" % (audited, failed,
                                               ", skipped %d" % skipped if skipped else ""))
    return 1 if failed else 0


def audit_remote(args):
    gw = Remote(args.remote, _password(args.password_file))
    info = gw.get("/api/storage/chain")
    contracts = info["contracts"]
    if args.deployment:
        with open(args.deployment) as f:
            contracts = json.load(f)["contracts"]
    else:
        print("contracts as the gateway names them (pin them with --deployment):")
    for name, address in sorted(contracts.items()):
        print("  %-14s %s" % (name, address))
    chain = ChainReader(args.rpc or info["rpc_url"], contracts)
    if chain.chain_id != info["chain_id"]:
        raise SystemExit("error: the gateway anchors on chain %d, %s is chain %d"
                         % (info["chain_id"], args.rpc, chain.chain_id))
    block, chs = challenges.draw(chain, args.samples)
    print("seed: block %d, hash %s" % (block["number"], block["hash"]))
    outcomes, sent = [], 0
    for ch in chs:
        try:
            wire = gw.get("/api/storage/challenge?epoch=%d&leaf=%d&select=%d"
                          % (ch.epoch, ch.leaf, ch.select))
            sent += gw.last_size
            o = challenges.check(ch, provider.answer_from_wire(wire), chain)
        except (RemoteError, ValueError) as e:
            o = challenges.Outcome("failed", "gateway: %s" % e, None, -1)
        if o.outcome != "ok":
            print("%s challenge %d (epoch %d, leaf %d): %s" % (o.outcome.upper(), ch.index,
                                                                ch.epoch, ch.leaf, o.detail))
        outcomes.append(o.outcome)
    if chs:
        print("%d bytes of answers, %d per challenge" % (sent, sent // len(chs)))
    return report(len(outcomes), outcomes.count("failed"), outcomes.count("skipped"))


def _password(path):
    if path:
        with open(path) as f:
            return f.read().strip()
    return os.environ.get("EDGEKEEP_ADMIN_PASSWORD") or getpass.getpass("gateway admin password: ")


class RemoteError(Exception):
    pass


class Remote:
    """A logged-in session on a gateway's admin API (POST /api/session -> cookie)."""

    def __init__(self, url, password):
        self.url = url.rstrip("/")
        self.cookie = None
        self.last_size = 0
        self._call("POST", "/api/session", {"password": password})

    def get(self, path):
        return self._call("GET", path)

    def _call(self, method, path, body=None):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        if body is not None:
            req.add_header("content-type", "application/json")
        if self.cookie:
            req.add_header("cookie", self.cookie)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                cookie = r.headers.get("set-cookie")
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            try:
                detail = json.loads(detail)["error"]
            except (ValueError, KeyError, TypeError):
                pass
            raise RemoteError("%s %s: HTTP %d %s" % (method, path, e.code, detail)) from None
        except OSError as e:
            raise SystemExit("error: cannot reach %s (%s)" % (self.url, e))
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        self.last_size = len(raw)
        return json.loads(raw)


def cmd_repair(args):
    k = keeper.Keeper.open(open_store(args.data_dir), None)
    missing = k.provider.missing_roots()
    if missing:
        print("storage root(s) lost: %s" % ", ".join(missing))
    repairs = k.repair()
    for r in repairs:
        print("%s %s (%d good shares before): %s" % (r["outcome"], r["digest"].hex(), r["good"],
                                                     r["detail"]))
    lost = sum(r["outcome"] == "lost" for r in repairs)
    print("repaired %d blob(s), %d lost, %d checked" % (len(repairs) - lost, lost,
                                                        len(k.provider.digests())))
    return 1 if lost else 0


def cmd_status(args):
    s = keeper.Keeper.open(open_store(args.data_dir), None).status()
    print("storage roots  %s" % ", ".join(s["roots"]))
    print("erasure code   k=%d of m=%d shares%s" % (s["k"], s["m"], "; " + (provider.check_layout(
        s["roots"], s["k"], s["m"]) or "survives losing any one root")))
    print("blobs          %d" % s["blobs"])
    print("missing roots  %s" % (", ".join(s["missing_roots"]) or "none"))
    print("unrepairable   %d" % s["unrepairable"])
    print("repairs        %d" % s["repairs"])
    a = s["last_audit"]
    if a:
        print("last audit     #%d %s: %d challenges, %d failed, %d repaired, %s%s" % (
            a["id"], a["mode"], a["challenges"], a["failed"], a["repaired"], a["status"],
            "; ALARM: " + a["alarm"] if a["alarm"] else ""))
    else:
        print("last audit     none")
    return 1 if s["missing_roots"] or s["unrepairable"] else 0
