"""`edgekeep identity export` and `edgekeep restore`: the gateway's identity into the owner's
keyring, and a lost gateway back from its peers with that keyring (docs/network.md)."""
import sys

from gateway.cli.common import open_store
from gateway.network.client import PATIENCE, PeerClient
from gateway.network.identity import Identity
from gateway.network.protocol import Refused, parse_invitation
from gateway.network.restore import Restore
from gateway.owner.keyring import Keyring, KeyringError, passphrase_from


def add_commands(sub):
    s = sub.add_parser("identity", help="this gateway's network identity")
    s.add_argument("action", choices=["show", "export"])
    s.add_argument("--data-dir", required=True)
    s.add_argument("--keyring", help="export: the owner's keyring file to keep it in")
    s.add_argument("--passphrase-file", help="else $EDGEKEEP_PASSPHRASE, else a prompt")
    s.set_defaults(fn=cmd_identity)

    s = sub.add_parser("restore", help="rebuild a lost gateway from its peers")
    s.add_argument("--keyring", required=True, help="the owner's keyring holding the identity")
    s.add_argument("--passphrase-file", help="else $EDGEKEEP_PASSPHRASE, else a prompt")
    s.add_argument("--peer", required=True,
                   help="an invitation from any of its peers, or NAME@https://HOST:PORT")
    s.add_argument("--data-dir", required=True, help="the new (empty) data directory")
    s.add_argument("--rpc", required=True, help="JSON-RPC URL of the chain it anchored on")
    s.add_argument("--gateway", help="which identity, if the keyring holds several (a prefix)")
    s.set_defaults(fn=cmd_restore)


def cmd_identity(args):
    me = Identity.load_or_create(args.data_dir)
    if args.action == "show":
        print(me.name)
        return 0
    if not args.keyring:
        raise SystemExit("error: export needs --keyring FILE\nfix: name the owner's keyring, "
                         "the file that also opens the devices' data")
    ring = Keyring.open_or_create(args.keyring, passphrase_from(args.passphrase_file))
    ring.add_gateway(me.name, me.private_bytes())
    ring.save()
    print("kept gateway %s in %s: with it, `edgekeep restore` rebuilds this gateway from its "
          "peers" % (me.short, args.keyring))
    return 0


def identity_from(ring, prefix):
    found = {n: k for n, k in ring.gateways().items() if n.startswith(prefix or "")}
    if not found:
        raise SystemExit("error: keyring %s holds no gateway identity%s\nfix: on the gateway, "
                         "run `edgekeep identity export --keyring FILE` (do it before it is lost)"
                         % (ring.path, " starting %s" % prefix if prefix else ""))
    if len(found) > 1:
        raise SystemExit("error: the keyring holds %d gateway identities: %s\nfix: choose one "
                         "with --gateway PREFIX" % (len(found), ", ".join(n[:16] for n in found)))
    return Identity.from_private_bytes(next(iter(found.values())))


def first_peer(me, spec):
    """A client to the peer named by an invitation or NAME@ENDPOINT."""
    if spec.startswith("ekinv1."):
        try:
            inv = parse_invitation(spec, 0)   # an old invitation still names the peer
        except Refused as e:
            raise SystemExit("error: %s" % e.detail) from None
        return PeerClient(me, inv.name, inv.endpoint, patience=PATIENCE)
    name, at, endpoint = spec.partition("@")
    if not at or len(name) != 64 or not endpoint.startswith("https://"):
        raise SystemExit("error: --peer takes an invitation (ekinv1....) or NAME@https://HOST:PORT"
                         "\nfix: `edgekeep peer list` on any peer shows its name and endpoint")
    return PeerClient(me, name, endpoint, patience=PATIENCE)


def cmd_restore(args):
    try:
        ring = Keyring.open(args.keyring, passphrase_from(args.passphrase_file))
    except KeyringError as e:
        raise SystemExit("error: %s" % e) from None
    me = identity_from(ring, args.gateway)
    store = open_store(args.data_dir, create=True)
    me.save(args.data_dir)
    restore = Restore(store, me, args.rpc, progress=Progress())
    report = restore.run(first_peer(me, args.peer))
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


class Progress:
    """A progress line on a terminal (redrawn), else a line every tenth."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def __call__(self, done, total, what):
        pct = 100 * done // total if total else 100
        if self.tty:
            print("\r%s: %d/%d (%d%%)" % (what, done, total, pct), end="", file=sys.stderr)
            if done == total:
                print(file=sys.stderr)
        elif pct // 10 != self.shown:
            self.shown = pct // 10
            print("%s: %d/%d (%d%%)" % (what, done, total, pct), file=sys.stderr)
