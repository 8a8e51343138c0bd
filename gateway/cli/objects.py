"""`gateway objects list|prune` and the owner's `gateway export --object`."""
import sys
import time

from gateway.cli.common import open_store
from gateway.owner.export import decrypt_encrypt0


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
    """Decrypt one object with the owner's keyring and write its plaintext (JPEG or clip)."""
    from gateway.owner.keyring import Keyring, passphrase_from
    if not args.out:
        raise SystemExit("error: export --object needs --out FILE")
    objects = _objects(args.data_dir)
    obj = objects.find(args.object)
    key = Keyring.open(args.key, passphrase_from(args.passphrase_file)).get(obj["device"])
    size = 0
    with open(args.out, "wb") as out:
        for enc in objects.chunks(obj):
            size += out.write(decrypt_encrypt0(key, enc))
    if size != obj["size"]:
        raise ValueError("object %s decrypted to %d bytes, its manifest says %d"
                         % (obj["oid"], size, obj["size"]))
    print("wrote %s (%s, %d bytes) to %s" % (obj["oid"], obj["type"], size, args.out),
          file=sys.stderr)
    return 0
