"""Deploying a signed bundle: only the files whose sha256 on the device differs are copied,
each atomically; the manifest goes last, so the device's manifest.json names what it runs."""
import os

from agent.ota_receive import RELEASE_KEY
from firmware import bundle
from tools.flashlib import FlashError
from tools.flashlib.progress import Progress
from tools.flashlib.provision import check_board


def version_tuple(text):
    return tuple(int(x) for x in text.split(".")[:3])


def load_bundle(path, public_key):
    try:
        return bundle.load(path, public_key)
    except bundle.BundleError as e:
        if "signature" in str(e) or "not signed" in str(e):
            fix = ("deploy only bundles signed by your release key: rebuild with "
                   "`python -m firmware build --board B --sign-key release.key`, or pass the "
                   "matching --release-key")
        else:
            fix = "rebuild the bundle: `python -m firmware build`"
        raise FlashError(str(e), fix)


def deploy(dev, bundle_dir, manifest, release_public=None, log=print):
    """Copy the bundle's changed files; with release_public (65 bytes), also install it as the
    device's trusted OTA release key (release.pub), so later updates can come over the air."""
    if manifest["runtime"] != "micropython":
        raise FlashError("bundle %s is for %s, which runs CPython, not MicroPython over serial"
                         % (bundle_dir, manifest["board"]),
                         "copy it to the Pi instead (docs/flashing.md)")
    check_board(dev, manifest["board"])
    if version_tuple(dev.about["micropython"]) < version_tuple(manifest["min_micropython"]):
        raise FlashError("the device runs MicroPython %s; the bundle needs %s or later"
                         % (dev.about["micropython"], manifest["min_micropython"]),
                         "update MicroPython: `python tools/flash.py firmware --port %s`" % dev.port)
    dev.fresh_interpreter()  # the stopped agent's heap back, before hashing and copying
    files = manifest["files"]
    on_device = dev.hashes(sorted(files))
    changed = [p for p in sorted(files) if on_device[p] != files[p]["sha256"]]
    need = sum(files[p]["size"] for p in changed)
    if need + 4096 * len(changed) > dev.about["flash_free"]:
        raise FlashError("the flash is full: the bundle needs %d KB more, the device on %s has %d KB free"
                         % (need // 1024 + 1, dev.port, dev.about["flash_free"] // 1024),
                         "free space: remove files you do not need (`mpremote connect %s rm FILE`), "
                         "or erase the flash and reinstall (`python tools/flash.py firmware`)" % dev.port)
    bar = Progress("deploy", need)
    for rel in changed:
        with open(os.path.join(bundle_dir, rel), "rb") as f:
            data = f.read()
        start = bar.done
        dev.write_file(rel, data, progress=lambda done, total, start=start: bar.update(start + done))
        bar.update(start + len(data))
    bar.close()
    if release_public is not None:
        dev.write_file(RELEASE_KEY, release_public.hex().encode() + b"\n")
    with open(os.path.join(bundle_dir, bundle.MANIFEST), "rb") as f:
        dev.write_file(bundle.MANIFEST, f.read())
    log("deployed %s %s: %d of %d files changed" % (manifest["board"], manifest["version"],
                                                     len(changed), len(files)))
    return changed
