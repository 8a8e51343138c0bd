"""Checking an evidence file (docs/evidence.md) against the chain alone.

    edgekeep check-evidence clip.mp4 --rpc URL [--trust owner-root.pem]

The C2PA manifest is read and validated by the C2PA SDK (c2pa-python): its signature, and
its hard binding of the media. The EdgeKeep assertion inside it is then checked without
trusting the owner: its proof of the device's signed object manifest is a proof file,
checked by gateway/keeper/proof.py (device key registered, ES256 signature, inclusion,
anchor, revocation); the plaintext commitment the device signed is opened over the media
actually in the file; the anchor's transaction must be mined in the block the chain names.
"""
import hashlib
import io
import json
from dataclasses import dataclass, field

import c2pa
from hexbytes import HexBytes

from agent.proto import ENV_TIME
from gateway.keeper import proof as proofs
from gateway.wire import evidence, protocol
from gateway.wire.objects import CommitmentMismatch, check_commitment, opening_for, parse_manifest

UNTRUSTED = "signingCredential.untrusted"


@dataclass
class Step:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    steps: list = field(default_factory=list)
    device: str | None = None
    capture_time: int | None = None
    event: str | None = None

    @property
    def ok(self):
        return bool(self.steps) and all(s.ok for s in self.steps)

    def add(self, name, ok, detail):
        self.steps.append(Step(name, ok, detail))
        return ok


def read_c2pa(data, trust_pem=None):
    """(Step, the active manifest) from the C2PA SDK: validated, and trusted if a trust
    anchor is given; without one, an untrusted signer is the only failure allowed."""
    settings = {"trust": {"trust_anchors": trust_pem}} if trust_pem else {}
    try:
        with c2pa.Reader(io.BytesIO(data), context=c2pa.Context.from_dict(settings)) as r:
            state, results = r.get_validation_state(), r.get_validation_results() or {}
            manifest = r.get_active_manifest()
    except c2pa.C2paError as e:
        return Step("c2pa", False, "no readable C2PA manifest: %s" % e), None
    failures = [f["code"] for f in (results.get("activeManifest") or {}).get("failure", [])]
    signer = (manifest or {}).get("signature_info") or {}
    who = "signed by %s (%s)" % (signer.get("common_name"), signer.get("issuer"))
    if trust_pem:
        ok = state == "Trusted"
        detail = "%s, trusted by the given root" % who if ok else "C2PA validation %s: %s" % (
            state, ", ".join(failures) or "not trusted")
    else:
        ok = state in ("Valid", "Trusted") and set(failures) <= {UNTRUSTED}
        detail = ("%s; signer not checked against a trust anchor (pass --trust ROOT.pem)" % who
                  if ok else "C2PA validation %s: %s" % (state, ", ".join(failures)))
    return Step("c2pa", ok, detail), manifest


def edgekeep_assertion(manifest):
    """The EdgeKeep assertion's data; EvidenceError unless the manifest has exactly one."""
    found = [a.get("data") for a in (manifest or {}).get("assertions", [])
             if a.get("label") == evidence.LABEL]
    if len(found) != 1:
        raise evidence.EvidenceError("the C2PA manifest has %d %s assertions, not one"
                                     % (len(found), evidence.LABEL))
    return found[0]


def check(data, rpc_url, trust_pem=None):
    """The Report on an evidence file's bytes: every step, each passed or saying why not."""
    report = Report()
    step, manifest = read_c2pa(data, trust_pem)
    report.steps.append(step)
    try:
        a = evidence.parse_assertion(edgekeep_assertion(manifest))
        chain = proofs.reader(a.proof, rpc_url)
    except (evidence.EvidenceError, ValueError, KeyError) as e:
        report.add("assertion", False, str(e))
        return report
    report.device = a.device
    verdict = proofs.check(a.proof, chain)
    report.add("proof", verdict.ok, "device signature and inclusion: %s" % verdict)
    if not verdict.ok:
        return report
    raw = bytes.fromhex(a.proof["message"])
    signed = protocol.parse(a.proof["topic"], raw, len(raw))
    _check_device(report, a, signed, chain)
    m = _check_manifest(report, a, signed)
    if m is not None:
        _check_commitment(report, a, m, data)
    _check_anchor(report, a, chain)
    return report


def _check_device(report, a, signed, chain):
    key = chain.device_key(signed.device)
    derived = hashlib.sha256(a.public_key).digest()[:8].hex()
    report.add("device", signed.device == a.device == derived and key == a.public_key,
               "device %s, key registered in DeviceRegistry" % a.device
               if key == a.public_key and signed.device == a.device == derived else
               "the assertion names device %s (key of %s), the signed manifest %s, and the "
               "registry holds %s" % (a.device, derived, signed.device,
                                      key.hex()[:16] + "..." if key else "no key"))


def _check_manifest(report, a, signed):
    try:
        m = parse_manifest(signed.payload, stored=True)
    except protocol.Reject as r:
        report.add("manifest", False, "the signed message is not an object manifest: %s" % r)
        return None
    env = protocol.decode(signed.payload, "manifest envelope")
    report.capture_time, report.event = env[ENV_TIME], m.event
    same = (m.oid, m.type, m.commit) == (a.oid, a.type, a.commit)
    report.add("manifest", same, "object %s (%s, %s), captured at %d" % (
        m.oid, m.type, m.event, env[ENV_TIME]) if same else
        "the assertion says object %s (%s), the device signed object %s (%s)%s" % (
            a.oid, a.type, m.oid, m.type, "" if m.commit == a.commit else
            " and another commitment"))
    return m if same else None


def _check_commitment(report, a, m, data):
    if a.content_key is not None and opening_for(a.content_key) != a.opening:
        report.add("commitment", False, "the revealed content key does not give the opening")
        return
    try:
        media = evidence.media_of(m.type, data)
        check_commitment(m, a.opening, media)
    except (evidence.EvidenceError, CommitmentMismatch) as e:
        report.add("commitment", False, "the media in this file is not what the device "
                   "captured: %s" % e)
        return
    report.add("commitment", True, "the %d media bytes in the file open the commitment the "
               "device signed%s" % (len(media), ", and so does the revealed content key"
                                    if a.content_key is not None else ""))


def _check_anchor(report, a, chain):
    """The anchor's transaction: mined, successful, to ProofAnchor, in the anchor's block."""
    anchor = chain.anchor_of(a.proof["epoch"])
    tx = a.anchor["transaction"]
    try:
        receipt = chain.w3.eth.get_transaction_receipt(HexBytes(tx))
    except Exception as e:  # web3 raises TransactionNotFound, or a bad hash's ValueError
        report.add("anchor", False, "transaction %s is not mined on this chain (%s)"
                   % (tx, type(e).__name__))
        return
    where = int(receipt["blockNumber"])
    good = (receipt["status"] == 1 and receipt["to"] == chain.proof_anchor.address
            and anchor is not None and where == anchor["block_number"] == a.anchor["block"])
    block_hash = a.anchor.get("block_hash")
    mined = block_hash is None or chain.block_is_mined(where, block_hash)
    report.add("anchor", good and mined, "epoch %d root anchored by %s in block %d%s" % (
        a.proof["epoch"], tx, where, "" if mined else ", but that block is not canonical")
        if good else "transaction %s (block %d) is not the anchor of epoch %d (block %s)"
        % (tx, where, a.proof["epoch"], anchor and anchor["block_number"]))


def load(path):
    with open(path, "rb") as f:
        return f.read()


def dump(report):
    """The report as JSON (check-evidence --json)."""
    return json.dumps({"ok": report.ok, "device": report.device,
                       "capture_time": report.capture_time, "event": report.event,
                       "steps": [s.__dict__ for s in report.steps]}, indent=1)
