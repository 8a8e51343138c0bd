"""Camera tests' owner side: a keyring that opens one device's data, and an object's export
through the gateway's CLI."""
import subprocess
import sys

from gateway.owner.keyring import Keyring
from tests.helpers.paths import ENV, REPO


def keyring_for(tmp_path, ident):
    (tmp_path / "pass").write_text("owner passphrase\n")
    ring = Keyring.open_or_create(str(tmp_path / "keyring.json"), "owner passphrase")
    ring.add(ident.hex, ident.data_key)
    ring.save()
    return str(tmp_path / "keyring.json"), str(tmp_path / "pass")


def cli(*args):
    r = subprocess.run([sys.executable, "-m", "gateway", *args], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def export(tmp_path, data, ident, oid):
    key, passfile = keyring_for(tmp_path, ident)
    out = tmp_path / ("%s.out" % oid)
    cli("export", "--data-dir", data, "--object", oid, "--key", key,
        "--passphrase-file", passfile, "--out", str(out))
    return out.read_bytes()
