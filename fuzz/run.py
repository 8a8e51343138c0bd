"""Run the fuzz targets (fuzz/targets.py) one after the other and print, for each, the
executions, the seconds, the rate and the crashes. `make fuzz` runs it.

    python -m fuzz.run [--seconds N | --runs N] [--dir DIR] [TARGET ...]

Each target keeps its corpus in DIR/corpus/TARGET (seeded on the first run) and writes its
crashers to DIR/crashes/TARGET/; copy one to tests/fuzz_regressions/TARGET/ once it is
fixed, and tests/test_fuzz.py replays it. Exits 1 if any target crashed."""
import argparse
import os
import re
import subprocess
import sys
import time

from fuzz.targets import TARGETS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(name, seconds=None, runs=None, workdir="test-artifacts/fuzz", quiet=True):
    """Fuzz one target; returns (executions, seconds, crash files, output tail)."""
    corpus = os.path.abspath(os.path.join(workdir, "corpus", name))
    crashes = os.path.abspath(os.path.join(workdir, "crashes", name))
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(crashes, exist_ok=True)
    before = set(os.listdir(crashes))
    args = [sys.executable, "-m", "fuzz.targets", name, "-timeout=20", "-rss_limit_mb=2048",
            "-artifact_prefix=" + crashes + "/", "-print_final_stats=1"]
    if seconds is not None:
        args.append("-max_total_time=%d" % seconds)
    if runs is not None:
        args.append("-runs=%d" % runs)
    args.append(corpus)
    t = time.monotonic()
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    elapsed = time.monotonic() - t
    out = p.stdout + p.stderr
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", out) or \
        re.search(r"Done (\d+) runs", out)
    execs = int(m.group(1)) if m else 0
    found = sorted(set(os.listdir(crashes)) - before)
    if p.returncode and not found:
        found = ["(exit status %d, no crash file)" % p.returncode]
    return execs, elapsed, [os.path.join(crashes, f) for f in found], out[-4000:]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("targets", nargs="*", default=list(TARGETS))
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 60)))
    ap.add_argument("--runs", type=int, help="executions per target instead of a time")
    ap.add_argument("--dir", default=os.path.join(ROOT, "test-artifacts", "fuzz"))
    a = ap.parse_args(argv)
    crashed = False
    print("%-14s %12s %9s %9s  %s" % ("target", "executions", "seconds", "exec/s", "crashes"))
    for name in a.targets:
        execs, secs, crashes, tail = run(name, None if a.runs else a.seconds, a.runs, a.dir)
        print("%-14s %12d %9.0f %9.0f  %s" % (name, execs, secs, execs / max(secs, 1e-9),
                                              ", ".join(crashes) or "none"), flush=True)
        if crashes:
            crashed = True
            print(tail, file=sys.stderr)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
