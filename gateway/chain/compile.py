"""Compile the Solidity contracts with the pinned solcjs into checked-in artifacts.

    python -m gateway.chain.compile           regenerate gateway/chain/artifacts/<Name>.json
    python -m gateway.chain.compile --check   exit 1 if an artifact is missing or stale

Each artifact holds abi, bytecode, solc_version and sources_sha256. The digest covers every
.sol source and the compiler settings, so --check needs neither node nor a compile.
"""
import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
CONTRACTS_DIR = HERE / "contracts"
ARTIFACTS_DIR = HERE / "artifacts"
SOLC_VERSION = "0.8.30"  # pinned in package.json
# IoTeX runs the Shanghai EVM (docs.iotex.io, "EVM Compatibility"); newer targets may emit
# opcodes (MCOPY, TSTORE) that it would reject.
SETTINGS = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "shanghai",
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
}

# Standard-JSON in on stdin, {version, output} out on stdout.
_SOLCJS = """
const solc = require('solc');
const chunks = [];
process.stdin.on('data', c => chunks.push(c));
process.stdin.on('end', () => {
  const output = JSON.parse(solc.compile(Buffer.concat(chunks).toString()));
  process.stdout.write(JSON.stringify({version: solc.version(), output}));
});
"""


class CompileError(Exception):
    pass


def read_sources():
    return {p.name: p.read_text() for p in sorted(CONTRACTS_DIR.glob("*.sol"))}


def sources_digest(sources):
    h = hashlib.sha256()
    for name in sorted(sources):
        h.update(name.encode() + b"\0" + sources[name].encode() + b"\0")
    h.update(json.dumps(SETTINGS, sort_keys=True).encode())
    return h.hexdigest()


def run_solcjs(sources):
    request = {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": SETTINGS,
    }
    try:
        proc = subprocess.run(["node", "-e", _SOLCJS], input=json.dumps(request).encode(),
                              cwd=REPO_ROOT, capture_output=True, timeout=300)
    except FileNotFoundError:
        raise CompileError("node not found on PATH; it runs the pinned solcjs") from None
    if proc.returncode != 0:
        raise CompileError("solcjs failed (did `npm ci` run?):\n" + proc.stderr.decode())
    result = json.loads(proc.stdout)
    if not result["version"].startswith(SOLC_VERSION + "+"):
        raise CompileError("solcjs %s found, %s is pinned" % (result["version"], SOLC_VERSION))
    return result


def build():
    """Compile every source; return {contract name: artifact dict}."""
    sources = read_sources()
    if not sources:
        raise CompileError("no .sol files in %s" % CONTRACTS_DIR)
    result = run_solcjs(sources)
    output = result["output"]
    errors = [e for e in output.get("errors", []) if e["severity"] == "error"]
    if errors:
        raise CompileError("".join(e["formattedMessage"] for e in errors))
    for warning in output.get("errors", []):
        print(warning["formattedMessage"], file=sys.stderr)
    digest = sources_digest(sources)
    artifacts = {}
    for filename in sources:
        name = filename[:-len(".sol")]
        compiled = output["contracts"][filename][name]
        artifacts[name] = {
            "abi": compiled["abi"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
            "solc_version": result["version"],
            "sources_sha256": digest,
        }
    return artifacts


def write_artifacts(out_dir=ARTIFACTS_DIR):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, artifact in build().items():
        (out_dir / (name + ".json")).write_text(json.dumps(artifact, indent=2) + "\n")
    return out_dir


def load_artifact(name, artifacts_dir=ARTIFACTS_DIR):
    path = Path(artifacts_dir) / (name + ".json")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CompileError("%s is missing; run `python -m gateway.chain.compile`" % path) from None


def stale_artifacts(artifacts_dir=ARTIFACTS_DIR):
    """Return one message per missing or out-of-date artifact (empty when all are current)."""
    sources = read_sources()
    digest = sources_digest(sources)
    problems = []
    for filename in sources:
        name = filename[:-len(".sol")]
        path = Path(artifacts_dir) / (name + ".json")
        if not path.exists():
            problems.append("%s: missing" % path)
        elif json.loads(path.read_text()).get("sources_sha256") != digest:
            problems.append("%s: stale (sources or compiler settings changed)" % path)
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gateway.chain.compile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that artifacts are current")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale_artifacts()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `python -m gateway.chain.compile` and commit the artifacts", file=sys.stderr)
            return 1
        print("contract artifacts are up to date")
        return 0
    try:
        out_dir = write_artifacts()
    except CompileError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    print("wrote artifacts to %s" % out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
