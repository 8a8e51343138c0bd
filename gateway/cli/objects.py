"""`gateway objects list|prune` and the owner's `gateway export --object`."""
import contextlib
import os
import sys
import time

from cryptography.exceptions import InvalidTag

from gateway.cli.common import open_store
from gateway.wire.objects import CommitmentMismatch


def add_commands(sub):
    s = sub.add_parser("objects", help="camera objects: list them, or apply retention now")
    s.add_argument("action", choices=["list", "prune"])
    s.add_argument("--data-dir", required=True)
    s.add_argument("--days", type=float, help="prune: keep objects captured this recently")
    s.add_argument("--max-bytes", type=int, help="prune: then delete the oldest until under this")
    s.set_defaults(fn=cmd_objects)


def _objects(data_dir):
    from gateway.ingest.objects import ObjectStore
    return ObjectStore.open(open_store(data_dir))


def cmd_objects(args):
    objects = _objects(args.data_dir)
    if args.action == "prune":
        if args.days is None and args.max_bytes is None:
            raise SystemExit("error: prune needs --days and/or --max-bytes")
        objects.keep_days, objects.max_bytes = args.days, args.max_bytes
        for device, oid in objects.retain():
            print("deleted %s-%s" % (device, oid))
        return 0
    rows = objects.list()
    for o in rows:
        print("%s  %s  %s  %d  %d/%d" % (
            o["oid"], o["device"], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(o["time"])),
            o["size"], o["stored"], o["count"]))
    print("%d object(s)" % len(rows), file=sys.stderr)
    return 0


def export(args):
    """Decrypt one object with the owner's keyring and write its plaintext (JPEG or clip),
    checked against the commitment its device signed; nothing is left at --out on failure."""
    from gateway.owner.keyring import Keyring, passphrase_from
    from gateway.owner.objects import decrypt_chunks, stored_manifest
    if not args.out:
        raise SystemExit("error: export --object needs --out FILE")
    objects = _objects(args.data_dir)
    obj = objects.find(args.object)
    key = Keyring.open(args.key, passphrase_from(args.passphrase_file)).get(obj["device"])
    manifest = stored_manifest(obj["device"], objects.store.message(obj["device"],
                                                                    obj["seq"])["raw"])
    try:
        _write_whole(args.out, decrypt_chunks(key, manifest, objects.chunks(obj)))
    except InvalidTag:
        raise SystemExit("error: object %s does not open with the keyring's data key of device "
                         "%s\nfix: pass the owner keyring that holds this device's data key "
                         "(--key)" % (obj["oid"], obj["device"]))
    except CommitmentMismatch as e:
        raise SystemExit("error: %s: it was altered after its device signed it\nfix: do not "
                         "trust this copy; `edgekeep verify` checks the stored messages, and a "
                         "peer's copy can be restored" % e)
    print("wrote %s (%s, %d bytes%s) to %s" % (
        obj["oid"], obj["type"], manifest.size,
        ", legacy: no commitment" if manifest.legacy else ", commitment checked", args.out),
        file=sys.stderr)
    return 0


def _write_whole(path, parts):
    """Write parts to path only if all of them come (nothing is left there otherwise)."""
    part = path + ".part"
    try:
        with open(part, "wb") as out:
            for data in parts:
                out.write(data)
        os.replace(part, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(part)
        raise
