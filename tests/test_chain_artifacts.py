"""The checked-in contract artifacts must be what the pinned solcjs makes of the sources."""
import json
import shutil

import pytest

from gateway.chain import compile as chain_compile

pytestmark = pytest.mark.integration


def test_committed_artifacts_match_a_fresh_compile(tmp_path):
    chain_compile.write_artifacts(tmp_path)
    fresh = sorted(p.name for p in tmp_path.glob("*.json"))
    assert fresh == ["DeviceRegistry.json", "ProofAnchor.json", "StorageAudit.json",
                     "StorageNetwork.json"]
    for name in fresh:
        committed = chain_compile.ARTIFACTS_DIR / name
        assert committed.exists(), "%s missing: run `python -m gateway.chain.compile`" % committed
        assert committed.read_text() == (tmp_path / name).read_text(), (
            "%s is stale: run `python -m gateway.chain.compile` and commit it" % committed)


def test_artifacts_record_pinned_compiler_and_source_digest():
    for name in ("DeviceRegistry", "ProofAnchor"):
        artifact = chain_compile.load_artifact(name)
        assert artifact["solc_version"].startswith(chain_compile.SOLC_VERSION + "+")
        assert artifact["sources_sha256"] == chain_compile.sources_digest(chain_compile.read_sources())
        assert artifact["bytecode"].startswith("0x") and len(artifact["bytecode"]) > 2
    assert chain_compile.main(["--check"]) == 0


def test_check_reports_missing_and_stale_artifacts(tmp_path):
    shutil.copy(chain_compile.ARTIFACTS_DIR / "ProofAnchor.json", tmp_path)
    stale = json.loads((tmp_path / "ProofAnchor.json").read_text())
    stale["sources_sha256"] = "0" * 64
    (tmp_path / "ProofAnchor.json").write_text(json.dumps(stale))
    problems = chain_compile.stale_artifacts(tmp_path)
    assert len(problems) == 4
    assert any("DeviceRegistry.json: missing" in p for p in problems)
    assert any("ProofAnchor.json: stale" in p for p in problems)
