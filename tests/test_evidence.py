"""Evidence files (docs/evidence.md): `edgekeep share` writes a camera object as a JPEG or
MP4 with a C2PA manifest signed by the owner's CA; an independent C2PA implementation
(c2pa-python) validates it and trusts it under the owner's root; `edgekeep check-evidence`
proves it against the chain alone, and each tamper fails with its reason.

One world for the module: Mosquitto, anvil, a gateway ingest, and cameras that capture end
to end: A (registered on chain) a snapshot and an MP4 clip in epoch 1; D a snapshot in
epoch 2; B registered with the gateway only, never on chain; C revoked on chain before its
epoch was anchored.
"""
import io
import json
import os
import subprocess
import sys

import c2pa
import pytest

from agent.simcamera import Scene
from gateway.anchor import epochs as anchor
from gateway.chain import registry
from gateway.chain.client import DEFAULT_DEV_KEY, Chain
from gateway.chain.node import Anvil
from gateway.ingest.objects import ObjectStore
from gateway.ingest.pipeline import Ingest
from gateway.keeper import evidence as checker
from gateway.mqtt.broker import Mosquitto
from gateway.owner import ca, evidence
from gateway.owner.keyring import Keyring
from gateway.store.database import Store
from gateway.wire import evidence as wire
from tests.helpers.camera import ClipCamera, Device
from tests.helpers.camera import register as register_with_gateway_only
from tests.helpers.paths import ENV, REPO
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

PASSPHRASE = "owner passphrase"
FPS = 5
WALK = Scene(size=(320, 240), offset=1.0, period=60.0, walk=1.5)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)


class World:
    """What the module's tests share: the gateway's data dir, the chain, the keyring."""

    def __init__(self, root, broker, rpc):
        self.root, self.data, self.rpc = root, str(root / "gw"), rpc
        self.store = Store.open(self.data)
        self.chain = Chain(rpc, DEFAULT_DEV_KEY,
                           os.path.join(self.data, "chain", "deployment.json"))
        self.ingest = Ingest(self.data, broker.url, epoch_seconds=3600)
        self.broker = broker
        self.objects = ObjectStore.open(self.store)
        self.ring = Keyring(str(root / "owner-keyring.json"), PASSPHRASE)
        self.passfile = root / "pass"
        self.passfile.write_text(PASSPHRASE + "\n")
        self.oids = {}
        self.files = {}

    def camera(self, name, on_chain=True, **config):
        home = self.root / name
        home.mkdir()
        dev = Device(home, self.broker.port, chunk_size=4096, **config)
        if on_chain:
            registry.register(self.store, self.chain, dev.ident.public, name, "camera")
            self.ingest.reload_devices()
        else:
            register_with_gateway_only(self.store, self.ingest, dev)
        self.ring.add(dev.ident.hex, dev.ident.data_key)
        self.ring.save()
        return dev

    def upload(self, dev, name, oid):
        dev.start()
        try:
            wait_for(lambda: not dev.agent.objects.entries, timeout=60,
                     what="%s uploaded" % name)
        finally:
            dev.close()
        self.oids[name] = "%s-%s" % (dev.ident.hex, oid.hex())

    def seal_and_anchor(self):
        epoch = anchor.seal_epoch(self.store)
        anchor.Anchorer(Store.connect(self.data), self.chain).anchor(epoch)
        return epoch

    def share(self, name, *extra, suffix=""):
        out = str(self.root / ("%s%s%s" % (name, suffix, ".mp4" if "mp4" in name else ".jpg")))
        r = cli("share", "--data-dir", self.data, "--object", self.oids[name], "--key",
                self.ring.path, "--passphrase-file", str(self.passfile), "--out", out,
                "--rpc", self.rpc, *extra)
        assert r.returncode == 0, r.stdout + r.stderr
        return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("evidence")
    with Mosquitto(str(root / "broker")) as broker, \
            Anvil(str(root / "gw"), block_time=0) as anvil:
        w = World(root, broker, anvil.rpc_url)
        w.ingest.start()
        try:
            _capture(w)
            yield w
        finally:
            w.ingest.stop()
            w.store.close()


def _capture(w):
    a = w.camera("a")
    second = a.agent.capture()      # for a swap of two assertions of the same length
    w.upload(a, "jpeg", a.agent.capture())
    w.oids["jpeg_b"] = "%s-%s" % (a.ident.hex, second.hex())
    clip = w.camera("clip", clip="mp4", clip_fps=FPS, camera=ClipCamera(WALK, FPS))
    oid = None
    while oid is None:
        oid = clip.agent.clip_frame()
    w.upload(clip, "mp4", oid)
    b = w.camera("b", on_chain=False)
    w.upload(b, "unregistered", b.agent.capture())
    c = w.camera("c")
    w.upload(c, "revoked", c.agent.capture())
    w.chain.revoke_device(bytes.fromhex(c.ident.hex))   # before its epoch is anchored
    assert w.seal_and_anchor() == 1
    d = w.camera("d", scene=Scene(size=(160, 120)))     # another picture than A's
    w.upload(d, "jpeg2", d.agent.capture())
    assert w.seal_and_anchor() == 2
    e = w.camera("e")
    w.upload(e, "sealed", e.agent.capture())
    assert anchor.seal_epoch(w.store) == 3                # sealed, never anchored
    f = w.camera("f")
    w.upload(f, "unsealed", f.agent.capture())
    w.files = {name: w.share(name) for name in ("jpeg", "jpeg_b", "mp4", "jpeg2",
                                                "unregistered", "revoked")}
    w.root_pem = open(ca.root_pem_path(w.ring.path)).read()


def read(data, trust=None):
    """c2pa-python's view: (validation state, failure codes, the active manifest)."""
    ctx = c2pa.Context.from_dict({"trust": {"trust_anchors": trust}} if trust else {})
    with c2pa.Reader(io.BytesIO(data), context=ctx) as r:
        results = r.get_validation_results() or {}
        failures = [f["code"] for f in results.get("activeManifest", {}).get("failure", [])]
        return r.get_validation_state(), failures, r.get_active_manifest()


def check(world, path, *extra):
    return cli("check-evidence", path, "--rpc", world.rpc, *extra)


def blob(world, name):
    with open(world.files[name], "rb") as f:
        return f.read()


def write(world, name, data):
    path = str(world.root / name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def flip_media_byte(data, ctype):
    """One bit of the media itself: in the JPEG's scan data, or inside the MP4's mdat."""
    at = len(data) - 100 if ctype == "jpeg" else data.index(b"mdat") + 200
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]


def resigned(world, name, change):
    """The object's evidence re-signed by the owner's CA with change(assertion fields):
    a valid C2PA file that lies; only the EdgeKeep checks can catch it."""
    data = blob(world, name)
    _, _, manifest = read(data)
    fields = checker.edgekeep_assertion(manifest)
    change(fields)
    a = wire.parse_assertion(fields)
    owner = ca.ensure(Keyring.open(world.ring.path, PASSPHRASE))
    path = str(world.root / ("resigned-" + os.path.basename(world.files[name])))
    media = wire.media_of(a.type, data)
    evidence.sign(media, a, 1790000000, owner, path)
    return path


# -- an independent C2PA implementation ---------------------------------------------------

@pytest.mark.parametrize("name", ["jpeg", "mp4"])
def test_c2pa_python_validates_the_evidence_and_trusts_it_under_the_owners_root(world, name):
    data = blob(world, name)
    state, failures, manifest = read(data)
    # valid, and with no trust anchor given its signer is unknown
    assert state == "Valid" and failures == ["signingCredential.untrusted"]
    state, failures, manifest = read(data, world.root_pem)
    assert (state, failures) == ("Trusted", [])
    fields = checker.edgekeep_assertion(manifest)
    device, oid = world.oids[name].split("-")
    assert (fields["format"], fields["device"], fields["object"]) == (wire.FORMAT, device, oid)
    assert fields["type"] == ("video/mp4" if name == "mp4" else "image/jpeg")
    assert "content_key" not in fields                   # only with --reveal-key
    assert manifest["signature_info"]["common_name"] == "EdgeKeep owner evidence signer"


def test_another_owners_root_does_not_make_the_evidence_trusted(world, tmp_path):
    other = Keyring(str(tmp_path / "other.json"), "x")
    state, failures, _ = read(blob(world, "jpeg"), ca.ensure(other).root_pem().decode())
    assert state != "Trusted" and "signingCredential.untrusted" in failures


@pytest.mark.parametrize("name, code", [("jpeg", "assertion.dataHash.mismatch"),
                                        ("mp4", "assertion.bmffHash.mismatch")])
def test_c2pa_python_fails_on_one_flipped_media_byte(world, name, code):
    state, failures, _ = read(flip_media_byte(blob(world, name), name), world.root_pem)
    assert state == "Invalid" and code in failures, failures


def test_c2pa_python_fails_on_an_edited_assertion(world):
    path = edited_assertion(world)
    with open(path, "rb") as f:
        state, failures, _ = read(f.read(), world.root_pem)
    assert state == "Invalid" and "assertion.hashedURI.mismatch" in failures, failures


def test_c2pa_python_fails_on_an_assertion_swapped_in_from_another_file(world):
    state, failures, _ = read(swapped_assertion(world), world.root_pem)
    assert state == "Invalid" and "assertion.hashedURI.mismatch" in failures, failures


def assertion_box(data):
    """(start, end) of the EdgeKeep assertion's CBOR content in a file."""
    label = data.index(wire.LABEL.encode())
    box = data.index(b"cbor", label + len(wire.LABEL)) - 4   # the content box: size, "cbor"
    return box + 8, box + int.from_bytes(data[box:box + 4], "big")


def swapped_assertion(world):
    """The snapshot's file with the EdgeKeep assertion of the device's other snapshot put in
    place of its own, byte for byte (the same length), the claim and signature untouched."""
    mine, theirs = blob(world, "jpeg"), blob(world, "jpeg_b")
    (a, b), (c, d) = assertion_box(mine), assertion_box(theirs)
    assert b - a == d - c and mine[a:b] != theirs[c:d]
    return mine[:a] + theirs[c:d] + mine[b:]


def edited_assertion(world):
    """The JPEG's EdgeKeep assertion edited in place, one hex digit of its opening."""
    data = blob(world, "jpeg")
    _, _, manifest = read(data)
    opening = checker.edgekeep_assertion(manifest)["opening"].encode()
    at = data.index(opening)
    edited = data[:at] + (b"0" if opening[:1] != b"0" else b"1") + data[at + 1:]
    return write(world, "edited.jpg", edited)


# -- check-evidence -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["jpeg", "mp4"])
def test_check_evidence_holds_and_reports_device_and_capture_time(world, name):
    r = check(world, world.files[name], "--trust", ca.root_pem_path(world.ring.path))
    assert r.returncode == 0, r.stdout + r.stderr
    device, oid = world.oids[name].split("-")
    assert "evidence holds: device %s captured this" % device in r.stdout
    for step in ("c2pa", "proof", "device", "manifest", "commitment", "anchor"):
        assert "ok     %s: " % step in r.stdout
    o = world.objects.get(device, oid)
    report = json.loads(check(world, world.files[name], "--json").stdout)
    assert report["ok"] and report["device"] == device and report["capture_time"] == o["time"]


def test_the_embedded_proof_is_a_proof_file_check_proof_accepts(world):
    _, _, manifest = read(blob(world, "mp4"))
    path = write(world, "proof.json", json.dumps(
        checker.edgekeep_assertion(manifest)["proof"]).encode())
    r = cli("check-proof", path, "--rpc", world.rpc)
    assert r.returncode == 0 and "proof holds" in r.stdout, r.stdout + r.stderr


def test_reveal_key_puts_the_content_key_in_and_it_checks(world):
    path = world.share("jpeg", "--reveal-key", suffix="-revealed")
    assert path != world.files["jpeg"]
    _, _, manifest = read(open(path, "rb").read())
    assert len(bytes.fromhex(checker.edgekeep_assertion(manifest)["content_key"])) == 16
    r = check(world, path)
    assert r.returncode == 0 and "and so does the revealed content key" in r.stdout, r.stdout


def failed(world, path, *extra):
    r = check(world, path, *extra)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "evidence does NOT hold" in r.stdout
    return {line.split()[1].rstrip(":"): line for line in r.stdout.splitlines()
            if line.startswith("FAILED")}


@pytest.mark.parametrize("name", ["jpeg", "mp4"])
def test_check_evidence_fails_on_one_flipped_media_byte(world, name):
    path = write(world, "flipped-" + name, flip_media_byte(blob(world, name), name))
    bad = failed(world, path)
    assert "Hash.mismatch" in bad["c2pa"]
    assert "the media in this file is not what the device captured" in bad["commitment"]


def test_check_evidence_fails_on_an_edited_assertion(world):
    bad = failed(world, edited_assertion(world))
    assert "assertion.hashedURI.mismatch" in bad["c2pa"]
    assert "commitment" in bad                 # the edited opening opens nothing


def test_check_evidence_fails_on_an_assertion_swapped_in_from_another_file(world):
    bad = failed(world, write(world, "swapped.jpg", swapped_assertion(world)))
    assert "assertion.hashedURI.mismatch" in bad["c2pa"]


def test_check_evidence_fails_on_a_swapped_assertion_signed_anew(world):
    """The first snapshot's media with another's assertion, re-signed by the owner: a valid
    C2PA file; the commitment catches it."""
    _, _, other = read(blob(world, "jpeg2"))
    swapped = checker.edgekeep_assertion(other)

    def swap(fields):
        fields.clear()
        fields.update(swapped)
    path = resigned(world, "jpeg", swap)
    assert wire.media_of("image/jpeg", blob(world, "jpeg")) != \
        wire.media_of("image/jpeg", blob(world, "jpeg2"))
    bad = failed(world, path)
    assert set(bad) == {"commitment"}, bad
    assert "not what the device captured" in bad["commitment"]


def test_check_evidence_fails_on_a_wrong_opening(world):
    path = resigned(world, "mp4", lambda f: f.update(opening="11" * 32))
    assert set(failed(world, path)) == {"commitment"}


def test_check_evidence_fails_on_a_content_key_that_is_not_the_objects(world):
    path = resigned(world, "jpeg", lambda f: f.update(content_key="22" * 16))
    bad = failed(world, path)
    assert "the revealed content key does not give the opening" in bad["commitment"]


def test_check_evidence_fails_on_another_epochs_root(world):
    def other_epoch(fields):
        fields["proof"]["epoch"] = 2
    bad = failed(world, resigned(world, "jpeg", other_epoch))
    assert "epoch 2" in bad["proof"]


def test_check_evidence_fails_on_an_unanchored_epoch(world):
    def unanchored(fields):
        fields["proof"]["epoch"] = 99
    bad = failed(world, resigned(world, "jpeg", unanchored))
    assert "epoch 99 is sealed but has no root on chain yet" in bad["proof"]


def test_check_evidence_fails_on_a_transaction_that_is_not_the_anchor(world):
    _, _, other = read(blob(world, "jpeg2"))
    tx = checker.edgekeep_assertion(other)["anchor"]["transaction"]   # epoch 2's
    bad = failed(world, resigned(world, "jpeg", lambda f: f["anchor"].update(transaction=tx)))
    assert "is not the anchor of epoch 1" in bad["anchor"]


def test_check_evidence_fails_on_a_device_key_not_registered_on_chain(world):
    bad = failed(world, world.files["unregistered"])
    assert "is not registered" in bad["proof"]


def test_check_evidence_fails_on_a_device_revoked_before_the_anchor(world):
    bad = failed(world, world.files["revoked"])
    assert "not before the device was revoked in block" in bad["proof"]


def test_check_evidence_fails_under_another_owners_root(world, tmp_path):
    other = Keyring(str(tmp_path / "other.json"), "x")
    ca.ensure(other)
    bad = failed(world, world.files["jpeg"], "--trust", ca.root_pem_path(other.path))
    assert "signingCredential.untrusted" in bad["c2pa"]


def test_check_evidence_on_a_file_without_evidence_says_so(world):
    path = write(world, "plain.jpg", WALK.jpeg(0))
    bad = failed(world, path)
    assert "no readable C2PA manifest" in bad["c2pa"] and "assertion" in bad


# -- share's errors and the owner CA ------------------------------------------------------

def test_share_refuses_an_unknown_object_and_a_wrong_extension(world):
    r = cli("share", "--data-dir", world.data, "--object", "00" * 8, "--key", world.ring.path,
            "--passphrase-file", str(world.passfile), "--out", str(world.root / "x.jpg"))
    assert r.returncode == 2 and "no object" in r.stderr and "fix:" in r.stderr
    r = cli("share", "--data-dir", world.data, "--object", world.oids["jpeg"], "--key",
            world.ring.path, "--passphrase-file", str(world.passfile), "--out",
            str(world.root / "x.png"))
    assert r.returncode == 2 and "fix:" in r.stderr
    assert not os.path.exists(world.root / "x.jpg") and not os.path.exists(world.root / "x.png")


def test_share_refuses_an_object_whose_epoch_is_not_anchored_yet(world):
    for name, why in (("unsealed", "not sealed into an epoch yet"),
                      ("sealed", "epoch 3 of object %s is not anchored yet"
                       % world.oids["sealed"].split("-")[1])):
        out = world.root / ("%s.jpg" % name)
        r = cli("share", "--data-dir", world.data, "--object", world.oids[name], "--key",
                world.ring.path, "--passphrase-file", str(world.passfile), "--out", str(out),
                "--rpc", world.rpc)
        assert r.returncode == 2 and why in r.stderr and "fix: wait" in r.stderr, r.stderr
        assert not out.exists()


def test_check_evidence_on_a_missing_file_says_so(world):
    r = check(world, str(world.root / "nothing.jpg"))
    assert r.returncode == 2 and "No such file" in r.stderr and "fix:" in r.stderr


def test_owner_ca_lives_in_the_keyring_and_its_root_is_the_trust_anchor(world):
    ring = Keyring.open(world.ring.path, PASSPHRASE)
    assert {ca.ROOT_KEY, ca.ROOT_CERT, ca.SIGNER_KEY, ca.SIGNER_CERT} <= set(ring.keys)
    owner = ca.ensure(ring)
    assert owner.root_pem().decode() == world.root_pem       # stable: made once
    with open(world.ring.path) as f:
        assert ring.keys[ca.SIGNER_KEY].hex() not in f.read()   # encrypted
    r = cli("owner-ca", "--key", world.ring.path, "--passphrase-file", str(world.passfile))
    assert r.returncode == 0 and ca.root_pem_path(world.ring.path) in r.stdout


# -- the pure part's refusals ---------------------------------------------------------------

@pytest.mark.parametrize("ctype, data, why", [
    ("image/jpeg", b"GIF89a", "not a JPEG"),
    ("image/jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF", "cut short or malformed"),
    ("video/mp4", b"\x00\x00\x00\x10ftypisom\x00\x00\x02\x00", "without a C2PA manifest box"),
    ("video/mp4", b"\x00\x00\x01\x00ftypisom", "bad size"),
    ("video/x-msvideo", b"RIFF", "JPEG and MP4 only"),
])
def test_media_of_says_what_is_wrong_with_a_file(ctype, data, why):
    with pytest.raises(wire.EvidenceError, match=why):
        wire.media_of(ctype, data)


@pytest.mark.parametrize("change, why", [
    (lambda d: d.update(format="edgekeep-evidence/0"), "not an EdgeKeep evidence assertion"),
    (lambda d: d.update(opening="zz" * 32), "field opening is not 32-byte hex"),
    (lambda d: d.update(device="00" * 9), "field device is not 8-byte hex"),
    (lambda d: d.pop("proof"), "without its proof or anchor"),
    (lambda d: d["anchor"].pop("transaction"), "anchor without block and transaction"),
])
def test_parse_assertion_says_which_field_is_wrong(change, why):
    a = wire.Assertion("00" * 8, b"\x04" * 65, "11" * 8, "image/jpeg", b"\x02" * 32,
                       b"\x03" * 32, None, {"format": "edgekeep-proof/1"},
                       {"block": 1, "transaction": "0x00"})
    d = json.loads(json.dumps(wire.assertion_data(a)))
    assert wire.parse_assertion(d) == a
    change(d)
    with pytest.raises(wire.EvidenceError, match=why):
        wire.parse_assertion(d)
