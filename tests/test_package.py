"""`pip install .` gives a working package: a non-editable install into a fresh venv, run with
the source tree nowhere on sys.path, has the `edgekeep` and `edgekeep-flash` commands and
finds its data files (contract artifacts, web pages, firmware image table) beside its code.

The venv sees the dependencies through a .pth line naming the project venv's site-packages
(a plain path: that directory's own .pth files, among them the editable install's, are not
run), so nothing is downloaded."""
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from tests.helpers.paths import REPO

pytestmark = pytest.mark.integration

PACKAGES = ("gateway", "agent", "firmware", "hw", "tools")

CHECK = r"""
import json, os, sys
import gateway, tools.flash
from gateway.chain import compile as chain
from gateway.web import app, pages
from firmware import images
from tools import virtual_device
from agent.runtime import micropython
artifact = chain.load_artifact("ProofAnchor")
print(json.dumps({
    "gateway": gateway.__file__,
    "tools": tools.flash.__file__,
    "artifact_fresh": artifact["sources_sha256"] == chain.sources_digest(chain.read_sources()),
    "abi": bool(artifact["abi"]),
    "templates": sorted(os.listdir(pages.TEMPLATES)),
    "static": sorted(os.listdir(app.STATIC)),
    "images": sorted(images.table()),
    "repl_host": os.path.exists(virtual_device.HOST),
    "wasm_host": os.path.exists(micropython.HOST),
    "path": sys.path,
}))
"""


def run(cmd, cwd, timeout=300):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, "%s\n%s%s" % (" ".join(cmd), r.stdout, r.stderr)
    return r


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in PACKAGES:
        shutil.copytree(os.path.join(REPO, name), src / name, ignore=ignore)
    shutil.copy(os.path.join(REPO, "pyproject.toml"), src)
    env = root / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", str(env)], cwd=root)
    site = subprocess.run([str(env / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "edgekeep-deps.pth"), "w") as f:
        f.write(sysconfig.get_path("purelib") + "\n")   # this venv's: the dependencies
    run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
         "--no-build-isolation", str(src)], cwd=root)
    shutil.rmtree(src)  # what runs now is the installed copy or nothing
    return env, root, site


def test_edgekeep_command_prints_its_usage(venv):
    env, root, _ = venv
    r = run([str(env / "bin" / "edgekeep"), "--help"], cwd=root)
    assert r.stdout.startswith("usage: ")
    for command in ("run", "demo", "verify", "check-proof", "devices", "export", "audit"):
        assert command in r.stdout, command


def test_edgekeep_flash_command_prints_its_usage(venv):
    env, root, _ = venv
    r = run([str(env / "bin" / "edgekeep-flash"), "--help"], cwd=root)
    assert r.stdout.startswith("usage: edgekeep-flash")
    for command in ("provision", "deploy", "virtual-device"):
        assert command in r.stdout, command


def test_python_m_gateway_runs_the_installed_package(venv):
    env, root, _ = venv
    r = run([str(env / "bin" / "python"), "-m", "gateway", "--help"], cwd=root)
    assert "check-proof" in r.stdout


def test_installed_package_finds_its_data_files(venv):
    import json
    env, root, site = venv
    out = json.loads(run([str(env / "bin" / "python"), "-c", CHECK], cwd=root).stdout)
    assert out["gateway"].startswith(site) and out["tools"].startswith(site), out
    assert not any(p.rstrip("/") == REPO.rstrip("/") for p in out["path"]), out["path"]
    assert out["artifact_fresh"] and out["abi"]
    assert "dashboard.html" in out["templates"] and "login.html" in out["templates"]
    assert {"app.js", "app.css", "ekcrypto.js", "vendor"} <= set(out["static"])
    assert "esp32" in out["images"]
    assert out["repl_host"] and out["wasm_host"]
    with open(os.path.join(site, "gateway", "web", "static", "vendor", "scrypt-js-3.0.1",
                           "scrypt.js")) as f:
        assert f.read(100)
