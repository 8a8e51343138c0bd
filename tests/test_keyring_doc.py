"""docs/protocol.md is enough to read a keyring and check a proof file.

The writing side uses the project's code (gateway.owner.keyring, gateway.keeper.proof). The
reading side follows the doc's steps and uses only `cryptography` and the stdlib. It takes
its parameters from the doc's marked tables and runs the doc's Merkle code block, so a doc
that drifts from the code fails here.
"""
import hashlib
import json
import os
import re
import unicodedata
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
VECTORS = ROOT / "tests" / "vectors" / "merkle_onchain.json"


# -- reading the doc -------------------------------------------------------------------------

def section(title):
    """The text of the level-2 section `## title`, up to the next level-2 heading."""
    m = re.search(r"^## %s\n(.*?)(?=^## |\Z)" % re.escape(title), DOC, re.S | re.M)
    assert m, "docs/protocol.md has no section %r" % title
    return m.group(1)


def table(text, first_header=None, marker=None):
    """Rows (lists of cells) of the first Markdown table after `marker`, or the first whose
    first header cell is `first_header`."""
    if marker:
        text = text[text.index(marker) + len(marker):]
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = cells(line)
            if first_header is None or header[0] == first_header:
                rows = []
                for row in lines[i + 2:]:
                    if not row.startswith("|"):
                        break
                    rows.append(cells(row))
                return rows
    raise AssertionError("no table %r in the doc" % (marker or first_header))


def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def names(cell):
    """The backticked names in a table cell: "`n`, `r`, `p`" -> ["n", "r", "p"]."""
    return re.findall(r"`([^`]+)`", cell)


def code_block(text, lang):
    blocks = re.findall(r"```%s\n(.*?)```" % lang, text, re.S)
    assert len(blocks) == 1, "expected one %s block, found %d" % (lang, len(blocks))
    return blocks[0]


KEYRING_DOC = section("The owner keyring file")
PROOF_DOC = section("The proof file")
KEYRING_TABLE = "<!-- keyring parameters: tests/test_keyring_doc.py reads this table -->"
PROOF_TABLE = "<!-- proof file fields: tests/test_keyring_doc.py reads this table -->"


def keyring_params():
    rows = table(KEYRING_DOC, marker=KEYRING_TABLE)
    p = {name: value for name, value in rows}

    def number(name, unit=""):
        m = re.fullmatch(r"(\d+)%s" % (" " + unit if unit else ""), p[name])
        assert m, "%s: %r" % (name, p[name])
        return int(m.group(1))

    assert p["KDF"].startswith("scrypt"), p["KDF"]
    assert p["AEAD"] == "AES-256-GCM", p["AEAD"]
    return {
        "n": number("scrypt N"), "r": number("scrypt r"), "p": number("scrypt p"),
        "salt_len": number("salt length", "bytes"), "key_len": number("key length", "bytes"),
        "nonce_len": number("nonce length", "bytes"), "tag_len": number("tag length", "bytes"),
        "aad": names(p["associated data"])[0].encode("ascii"),
    }


def keyring_fields():
    return {n for row in table(KEYRING_DOC, first_header="field") for n in names(row[0])}


# -- the reader: the doc's steps, cryptography and the stdlib only ------------------------------

def read_keyring(text, passphrase, params):
    """docs/protocol.md, 'Reading it, step by step'."""
    d = json.loads(text)                                                      # step 1
    if d["v"] != 1 or d["kdf"] != "scrypt":
        raise ValueError("not an EdgeKeep keyring")
    key = Scrypt(salt=bytes.fromhex(d["salt"]), length=params["key_len"],     # step 2
                 n=d["n"], r=d["r"], p=d["p"]).derive(passphrase.encode("utf-8"))
    plain = AESGCM(key).decrypt(bytes.fromhex(d["nonce"]), bytes.fromhex(d["ct"]),  # step 3
                                params["aad"])
    return {dev: bytes.fromhex(k) for dev, k in json.loads(plain).items()}   # step 4


def doc_root_from_path():
    """The doc's own verifier code block, run with nothing but what it imports."""
    namespace = {}
    exec(compile(code_block(PROOF_DOC, "python"), "docs/protocol.md", "exec"), namespace)
    return namespace["root_from_path"]


# -- the keyring -----------------------------------------------------------------------------

def test_keyring_written_by_the_gateway_reads_by_the_doc(tmp_path):
    from gateway.owner.keyring import Keyring
    params = keyring_params()
    keys = {os.urandom(8).hex(): os.urandom(16) for _ in range(3)}
    path = str(tmp_path / "owner-keyring.json")
    passphrase = "pässwörd ✓ correct horse"   # not ASCII: the doc says UTF-8
    Keyring(path, passphrase, keys).save()

    text = Path(path).read_text(encoding="utf-8")
    d = json.loads(text)
    assert set(d) == keyring_fields()
    assert (d["v"], d["kdf"]) == (1, "scrypt")
    assert (d["n"], d["r"], d["p"]) == (params["n"], params["r"], params["p"])
    assert len(bytes.fromhex(d["salt"])) == params["salt_len"]
    assert len(bytes.fromhex(d["nonce"])) == params["nonce_len"]
    assert not text.endswith("\n")
    assert os.stat(path).st_mode & 0o777 == 0o600

    plain_len = len(bytes.fromhex(d["ct"])) - params["tag_len"]
    assert plain_len == len(json.dumps({k: v.hex() for k, v in keys.items()}))

    got = read_keyring(text, passphrase, params)
    assert got == keys
    for dev, key in got.items():
        assert re.fullmatch(r"[0-9a-f]{16}", dev) and len(key) == 16

    with pytest.raises(InvalidTag):
        read_keyring(text, passphrase + " ", params)
    with pytest.raises(InvalidTag):  # no Unicode normalisation: NFD is another passphrase
        read_keyring(text, unicodedata.normalize("NFD", passphrase), params)


def test_the_gateway_reads_what_the_doc_says_a_writer_writes(tmp_path):
    """The other direction: a file written by the doc's steps opens with Keyring.open."""
    from gateway.owner.keyring import Keyring
    params = keyring_params()
    keys = {os.urandom(8).hex(): os.urandom(16)}
    salt, nonce = os.urandom(params["salt_len"]), os.urandom(params["nonce_len"])
    key = Scrypt(salt=salt, length=params["key_len"], n=params["n"], r=params["r"],
                 p=params["p"]).derive(b"owner")
    plain = json.dumps({k: v.hex() for k, v in keys.items()}).encode()
    doc = {"v": 1, "kdf": "scrypt", "n": params["n"], "r": params["r"], "p": params["p"],
           "salt": salt.hex(), "nonce": nonce.hex(),
           "ct": AESGCM(key).encrypt(nonce, plain, params["aad"]).hex()}
    path = tmp_path / "k.json"
    path.write_text(json.dumps(doc))
    assert Keyring.open(str(path), "owner").keys == keys


def test_worked_example_opens():
    text = code_block(KEYRING_DOC, "json").strip()
    passphrase = re.search(r"The passphrase is\s+`([^`]+)`", KEYRING_DOC).group(1)
    want_key = re.search(r"Step 2 gives the key `([0-9a-f]{64})`", KEYRING_DOC).group(1)
    want_plain = re.search(r"Step 3 gives `(\{.*?\})`", KEYRING_DOC).group(1)
    d = json.loads(text)
    key = Scrypt(salt=bytes.fromhex(d["salt"]), length=32, n=d["n"], r=d["r"],
                 p=d["p"]).derive(passphrase.encode("utf-8"))
    assert key.hex() == want_key
    got = read_keyring(text, passphrase, keyring_params())
    assert got == {k: bytes.fromhex(v) for k, v in json.loads(want_plain).items()}
    assert got == {"3f2a9c0d5e7b1a46": bytes(range(16))}


def test_passphrase_sources_are_as_documented(tmp_path, monkeypatch):
    from gateway.owner.keyring import PASSPHRASE_ENV, passphrase_from
    assert "`$%s`" % PASSPHRASE_ENV in KEYRING_DOC
    f = tmp_path / "pass"
    f.write_text("  secret words \n")
    monkeypatch.setenv(PASSPHRASE_ENV, " from env ")
    assert passphrase_from(str(f)) == "secret words"    # the file first, stripped
    assert passphrase_from(None) == " from env "         # then the variable, as is


# -- the proof file --------------------------------------------------------------------------

class FakeStore:
    def __init__(self, device, raws):
        self.device, self.raws = device, raws

    def message(self, device, seq):
        assert device == self.device
        return {"raw": self.raws[seq - 1], "kind": "s", "epoch": 7, "leaf": seq - 1}

    def epoch_leaves(self, epoch):
        assert epoch == 7
        return [hashlib.sha256(r).digest() for r in self.raws]


class FakeChain:
    chain_id = 31337
    deployment = {"contracts": {"DeviceRegistry": "0x" + "11" * 20,
                                "ProofAnchor": "0x" + "22" * 20,
                                "StorageAudit": "0x" + "33" * 20}}


@pytest.fixture(scope="module")
def signed_messages():
    from agent import message
    from agent.identity import Identity
    ident = Identity(hashlib.sha256(b"doc test device").digest(), bytes(16))
    nonces = message.Nonces(lambda n: bytes(n))
    health = {"fw": "0.2.0", "up": 1, "q": 0, "qb": 0, "drop": 0, "batt": 4000}
    raws = [bytes(message.seal(ident, nonces, seq, 1790000000 + seq, "s", 1, None, None, health))
            for seq in range(1, 10)]
    return ident.hex, raws


def test_proof_file_checks_by_the_doc(signed_messages, tmp_path):
    from gateway.keeper import proof
    from gateway.wire import merkle  # the builder's side only: the expected root
    root_from_path = doc_root_from_path()
    field_rows = table(PROOF_DOC, marker=PROOF_TABLE)
    fields = {n for row in field_rows for n in names(row[0])}
    fmt = names(dict((r[0], r[2]) for r in field_rows)["`format`"])[0].strip('"')
    device, all_raws = signed_messages
    for size in range(1, len(all_raws) + 1):
        raws = all_raws[:size]
        anchored_root = merkle.root([hashlib.sha256(r).digest() for r in raws])
        store = FakeStore(device, raws)
        for index in range(size):
            out = tmp_path / ("p%d-%d.json" % (size, index))
            proof.dump(proof.build(store, FakeChain(), device, index + 1), str(out))
            p = json.loads(out.read_text())
            assert set(p) == fields
            assert p["format"] == fmt
            assert p["topic"] == "ek/%s/up/s" % device
            assert set(p["contracts"]) == {"DeviceRegistry", "ProofAnchor", "StorageAudit"}
            msg = bytes.fromhex(p["message"])
            assert msg == raws[index] and msg[0] == 0xd2   # tag 18: the whole COSE_Sign1
            path = [bytes.fromhex(h) for h in p["path"]]
            assert all(len(h) == 32 for h in path)
            assert len(path) <= (size - 1).bit_length()
            leaf = hashlib.sha256(msg).digest()
            assert root_from_path(leaf, p["index"], p["size"], path) == anchored_root
            # what a forged or mismatched file gets
            assert root_from_path(hashlib.sha256(msg + b"x").digest(), p["index"], p["size"],
                                  path) != anchored_root
            # the path alone may fit a wrong size too (index 0 of 3 or of 4 here): step 6
            # compares size with the anchored count, which is what catches a forged size
            forged = dict(p, size=p["size"] + 1)
            assert not step6(forged, leaf, path, anchored_root, size, root_from_path)
            assert step6(p, leaf, path, anchored_root, size, root_from_path)
            assert root_from_path(leaf, p["size"], p["size"], path) is None
            if size > 1:
                assert root_from_path(leaf, (p["index"] + 1) % size, p["size"],
                                      path) != anchored_root


def step6(p, leaf, path, root, count, root_from_path):
    """Checking against the chain, step 6, with anchorOf's (root, count)."""
    return count == p["size"] and root_from_path(leaf, p["index"], p["size"], path) == root


def test_doc_algorithm_meets_the_onchain_vectors():
    """tests/vectors/merkle_onchain.json is what ProofAnchor.verifyInclusion accepts."""
    root_from_path = doc_root_from_path()
    for tree in json.loads(VECTORS.read_text())["trees"]:
        leaves = [bytes.fromhex(x) for x in tree["leaves"]]
        for i, hashes in enumerate(tree["proofs"]):
            path = [bytes.fromhex(h) for h in hashes]
            assert root_from_path(leaves[i], i, len(leaves), path).hex() == tree["root"]
