"""A release installs onto a stock MicroPython board with mip, from a URL, as micropython-lib
packages do: `python -m firmware build` writes the bundle's package.json, and a fresh
virtual device given `mpremote mip install --target / URL/package.json`, then provisioned,
runs the agent and its data verifies."""
import functools
import http.server
import json
import os
import threading
import time

import pytest

from tests.helpers.deployed import Gateway, flash, mpremote, release
from tools.virtual_device import VirtualDevice

pytestmark = pytest.mark.integration


@pytest.fixture
def served(tmp_path):
    """The release's bundle served over HTTP, as a release page or a LAN server would."""
    bundles = release(str(tmp_path / "release"), ["9.9.3"])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=bundles["9.9.3"])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield bundles, "http://127.0.0.1:%d" % server.server_port
    finally:
        server.shutdown()
        server.server_close()


def test_package_json_lists_every_file_with_the_manifest_last(served):
    bundles, _ = served
    bundle = bundles["9.9.3"]
    package = json.load(open(os.path.join(bundle, "package.json")))
    manifest = json.load(open(os.path.join(bundle, "manifest.json")))
    assert package["version"] == "9.9.3" and package["deps"] == []
    paths = [dest for dest, _ in package["urls"]]
    assert paths == sorted(manifest["files"]) + ["release.pub", "manifest.json"]
    assert all(dest == url for dest, url in package["urls"])  # relative to package.json
    assert open(os.path.join(bundle, "release.pub")).read() == open(bundles["pub"]).read()


def test_mip_install_from_a_url_gives_a_working_device(tmp_path, served, broker):
    bundles, url = served
    bundle = bundles["9.9.3"]
    with open(tmp_path / "device.log", "ab") as log, \
            VirtualDevice(str(tmp_path / "flash"), board="esp32", log=log) as dev:
        r = mpremote(dev.port, "mip", "install", "--target", "/", url + "/package.json",
                     timeout=300)
        assert r.returncode == 0 and "Done" in r.stdout, r.stdout + r.stderr
        manifest = json.load(open(os.path.join(bundle, "manifest.json")))
        for rel in list(manifest["files"]) + ["manifest.json", "release.pub"]:
            with open(os.path.join(bundle, rel), "rb") as want, \
                    open(os.path.join(dev.directory, rel), "rb") as got:
                assert got.read() == want.read(), rel

        gateway = Gateway(str(tmp_path / "gateway"), broker)
        gateway.provision(dev.port)
        gateway.start()
        try:
            r = mpremote(dev.port, "reset")
            assert r.returncode == 0, r.stderr
            gateway.wait_for_messages(2, "messages from the agent mip installed")
            r = flash("info", "--port", dev.port)
            assert r.returncode == 0 and "agent version: 9.9.3" in r.stdout, r.stdout + r.stderr
            time.sleep(5)  # the last epoch closes and is anchored (epoch 3 s, blocks 1 s)
        finally:
            gateway.stop()
        gateway.verify_all()
