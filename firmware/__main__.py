"""python -m firmware build|keygen|pin"""
import argparse
import os
import sys

from firmware import bundle, images, signing
from firmware.boards import BOARDS, ROOT


def cmd_build(args):
    out = args.out or os.path.join(ROOT, "dist", "edgekeep-%s-%s" % (
        args.board, args.version or bundle.agent_version()))
    manifest = bundle.build(args.board, out, args.version, args.sign_key)
    print("built %s: %d files, version %s, %s" % (
        out, len(manifest["files"]), manifest["version"],
        "signed" if args.sign_key else "UNSIGNED (tools/flash.py deploy will refuse it)"))
    return 0


def cmd_keygen(args):
    public = signing.keygen(args.out)
    print("release key: %s (keep it secret)\npublic key:  %s.pub\n  %s" % (args.out, args.out, public))
    return 0


def cmd_pin(args):
    print("pinned %s: sha256 %s" % (args.board, images.pin(args.board)))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m firmware", description="EdgeKeep firmware bundles")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("build", help="compile the agent and board modules into a signed bundle")
    s.add_argument("--board", required=True, choices=sorted(BOARDS))
    s.add_argument("--version", help="bundle version (default: the project version)")
    s.add_argument("--sign-key", help="release key (python -m firmware keygen)")
    s.add_argument("--out", help="bundle directory (default: dist/edgekeep-BOARD-VERSION)")
    s.set_defaults(fn=cmd_build)
    s = sub.add_parser("keygen", help="create a release signing key")
    s.add_argument("--out", default="release.key")
    s.set_defaults(fn=cmd_keygen)
    s = sub.add_parser("pin", help="download a board's official image once and pin its sha256")
    s.add_argument("--board", required=True, choices=sorted(images.table()))
    s.set_defaults(fn=cmd_pin)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except (bundle.BundleError, signing.SigningError, images.ImageError, ValueError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
