"""The bundle as a mip package: package.json in the bundle directory, in micropython-lib's
format ({"urls": [[device path, URL relative to package.json]], "deps", "version"}), so that
a stock MicroPython board installs the release from wherever the directory is served:

    mpremote connect PORT mip install --target / http://HOST:PORT/package.json

--target / because the bundle's paths are the device's from its root (main.py runs at boot;
mip's default target is /lib). The files come in the order tools/flash.py deploy writes them:
the bundle's files, the release key the bundle is signed with (release.pub, so the device
takes later releases over the air), and manifest.json last, naming what the device runs.
"""
import json
import os

from agent.ota_receive import RELEASE_KEY

PACKAGE_JSON = "package.json"


def write_package(out_dir, manifest, manifest_name, release_public_hex=None):
    """Writes out_dir/package.json for the bundle whose manifest is given; with
    release_public_hex, also out_dir/release.pub, installed with it."""
    paths = sorted(manifest["files"])
    if release_public_hex is not None:
        with open(os.path.join(out_dir, RELEASE_KEY), "w") as f:
            f.write(release_public_hex + "\n")
        paths.append(RELEASE_KEY)
    paths.append(manifest_name)
    package = {"urls": [[p, p] for p in paths], "deps": [], "version": manifest["version"]}
    with open(os.path.join(out_dir, PACKAGE_JSON), "w") as f:
        json.dump(package, f, indent=1)
        f.write("\n")
    return package
