"""`edgekeep share`, `edgekeep check-evidence` and `edgekeep owner-ca`: evidence files
(docs/evidence.md)."""
import sys
import time

from gateway.cli.common import chain_for, open_store


def add_commands(sub):
    s = sub.add_parser("share", help="write one camera object as evidence: the JPEG or MP4 "
                       "with a C2PA manifest signed by the owner that proves it on chain")
    s.add_argument("--data-dir", required=True, help="the gateway's data directory")
    s.add_argument("--object", required=True, help="<oid> or <device>-<oid>")
    s.add_argument("--key", required=True, help="the owner's keyring file")
    s.add_argument("--passphrase-file", help="else $EDGEKEEP_PASSPHRASE, else a prompt")
    s.add_argument("--out", required=True, help="the evidence file to write (.jpg or .mp4)")
    s.add_argument("--reveal-key", action="store_true",
                   help="also put the object's content key in the file (it opens this "
                        "object's chunks and nothing else)")
    s.add_argument("--rpc", help="JSON-RPC URL (default: the data dir's local anvil)")
    s.set_defaults(fn=cmd_share)

    s = sub.add_parser("check-evidence", help="check an evidence file against the chain alone")
    s.add_argument("file")
    s.add_argument("--rpc", required=True, help="JSON-RPC URL of the chain the proof names")
    s.add_argument("--trust", metavar="ROOT_PEM",
                   help="the owner's root certificate (<keyring>-root.pem): the C2PA signer "
                        "must chain to it")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.set_defaults(fn=cmd_check_evidence)

    s = sub.add_parser("owner-ca", help="make the owner's evidence-signing CA in the keyring "
                       "(if it has none) and write its root certificate, the trust anchor")
    s.add_argument("--key", required=True, help="the owner's keyring file")
    s.add_argument("--passphrase-file", help="else $EDGEKEEP_PASSPHRASE, else a prompt")
    s.set_defaults(fn=cmd_owner_ca)


def _c2pa_missing():
    """True (and says so) where c2pa-python is not installed: it has no 32-bit ARM wheel."""
    try:
        import c2pa  # noqa: F401
    except ImportError:
        print("error: evidence files need c2pa-python, which is not installed here\nfix: run "
              "this on a 64-bit machine (x86_64, arm64), where installing EdgeKeep brings it",
              file=sys.stderr)
        return True
    return False


def _open_ca(key, passphrase_file):
    from gateway.owner import ca
    from gateway.owner.keyring import Keyring, passphrase_from
    ring = Keyring.open(key, passphrase_from(passphrase_file))
    return ring, ca.ensure(ring), ca.root_pem_path(key)


def cmd_share(args):
    if _c2pa_missing():
        return 2
    from gateway.ingest.objects import ObjectStore
    from gateway.owner import evidence
    if not args.out.lower().endswith((".jpg", ".jpeg", ".mp4")):
        print("error: --out %s: evidence is a .jpg or .mp4 file\nfix: name it after the "
              "object's type, e.g. --out clip.mp4" % args.out, file=sys.stderr)
        return 2
    store = open_store(args.data_dir)
    objects = ObjectStore.open(store)
    try:
        obj = objects.find(args.object)
    except LookupError as e:
        print("error: %s\nfix: `edgekeep objects list --data-dir %s` lists the objects"
              % (e.args[0], args.data_dir), file=sys.stderr)
        return 2
    ring, owner_ca, root_path = _open_ca(args.key, args.passphrase_file)
    try:
        manifest = _manifest(store, obj)
        plaintext, content_key = evidence.plaintext_and_key(
            ring.get(obj["device"]), manifest, objects.chunks(obj))
        with chain_for(args.data_dir, args.rpc) as chain:
            proof, anchor = _proof_and_anchor(store, chain, obj)
    except evidence.NotShareable as e:
        print("error: %s\nfix: share a JPEG snapshot or an MP4 clip captured by an agent "
              "with content keys (docs/evidence.md)" % e, file=sys.stderr)
        return 2
    except LookupError as e:
        print("error: %s\nfix: wait for the next epoch to be anchored, then run share "
              "again" % e.args[0], file=sys.stderr)
        return 2
    a = evidence.make_assertion(obj["device"], bytes(store.device(obj["device"])["public_key"]),
                                manifest, content_key, proof, anchor, args.reveal_key)
    evidence.sign(plaintext, a, obj["time"], owner_ca, args.out)
    print("wrote %s (%s %s of device %s, captured %s, %d bytes%s); its trust anchor is %s"
          % (args.out, a.type, a.oid, a.device,
             time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(obj["time"])), len(plaintext),
             ", content key revealed" if args.reveal_key else "", root_path))
    return 0


def _manifest(store, obj):
    from gateway.owner.objects import stored_manifest
    msg = store.message(obj["device"], obj["seq"])
    if msg is None:
        raise LookupError("the manifest of object %s is not in the store" % obj["oid"])
    return stored_manifest(obj["device"], msg["raw"])


def _proof_and_anchor(store, chain, obj):
    """The manifest message's proof file and its epoch's anchor transaction; LookupError if
    it is not sealed or not anchored yet."""
    from gateway.keeper import proof as proofs
    proof = proofs.build(store, chain, obj["device"], obj["seq"])
    epoch = store.epoch(proof["epoch"])
    if not epoch or epoch.get("block") is None:
        raise LookupError("epoch %d of object %s is not anchored yet" % (proof["epoch"],
                                                                       obj["oid"]))
    return proof, {"block": epoch["block"], "block_hash": epoch["block_hash"],
                   "transaction": epoch["tx_hash"]}


def cmd_check_evidence(args):
    if _c2pa_missing():
        return 2
    from gateway.keeper import evidence
    try:
        data = evidence.load(args.file)
        trust = evidence.load(args.trust).decode() if args.trust else None
    except OSError as e:
        print("error: %s\nfix: check the path" % e, file=sys.stderr)
        return 2
    report = evidence.check(data, args.rpc, trust)
    if args.json:
        print(evidence.dump(report))
    else:
        for s in report.steps:
            print("%-6s %s: %s" % ("ok" if s.ok else "FAILED", s.name, s.detail))
        if report.ok:
            print("evidence holds: device %s captured this %s at %s" % (
                report.device, report.event or "object",
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.capture_time))))
        else:
            print("evidence does NOT hold: %s" % "; ".join(
                "%s: %s" % (s.name, s.detail) for s in report.steps if not s.ok))
    return 0 if report.ok else 1


def cmd_owner_ca(args):
    _, owner_ca, root_path = _open_ca(args.key, args.passphrase_file)
    print("owner CA in %s; its root certificate (the trust anchor to hand out) is %s; "
          "signer valid until %s" % (args.key, root_path,
                                     owner_ca.signer.not_valid_after_utc.date()))
    return 0
