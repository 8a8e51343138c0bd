"""Short versions of the bench/ scenarios: they run, print their one line, and the
deterministic results (bytes, gas) meet their targets. Rates are only reported, never
asserted."""
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(name, *args, timeout=300):
    r = subprocess.run([sys.executable, os.path.join(REPO, "bench", name), *args], cwd=REPO,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench/"), r.stdout
    print(lines[0])
    return lines[0]


def test_wire_cost_at_batch_32_is_within_target():
    line = bench("wire_cost.py")
    ratio = float(re.search(r"batch 32: [\d.]+ \(([\d.]+)x\)", line).group(1))
    assert ratio <= 1.3


def test_anchor_gas_is_flat_in_messages_per_epoch():
    line = bench("anchor_gas.py")
    spread = float(re.search(r"\(([\d.]+)%\)", line).group(1))
    assert spread < 1.0


def test_ingest_bench_runs_small():
    line = bench("ingest.py", "--messages", "400", "--devices", "4", "--runs", "1")
    assert "ratio" in line


def test_ingest_bench_with_workers_runs_small():
    line = bench("ingest.py", "--messages", "400", "--devices", "4", "--runs", "1",
                 "--workers", "2")
    rate, bound = map(float, re.search(r"2 worker\(s\) (\d+) msg/s .* verify bound (\d+) msg/s",
                                       line).groups())
    assert rate > 0 and bound > 0 and "peak RSS" in line


def test_camera_bench_runs_small_and_a_cut_upload_resends_at_most_one_chunk():
    line = bench("camera.py", "--mb", "0.5", "--runs", "1")
    assert "delivered" in line and "durable" in line
    resent, dupes = map(int, re.search(r"(\d+) chunk\(s\) resent, (\d+) duplicate", line).groups())
    assert resent <= 1 and dupes <= 1


def test_soak_runs_small_and_samples_the_gateway():
    line = bench("soak.py", "--minutes", "0.33", "--devices", "3", "--interval", "4")
    sent = int(re.search(r"(\d+) msgs sent", line).group(1))
    samples = int(re.search(r"(\d+) samples;", line).group(1))
    assert sent > 0 and samples >= 5
    assert re.search(r"gateway RSS [\d.]+ -> [\d.]+ MB", line) and "slope" in line


def test_network_bench_runs_small_restores_everything_and_moves_what_it_should():
    line = bench("network.py", "--quick")
    assert "LOST" not in line and re.search(r"restore [\d.]+ MB/s", line) and "ratio" in line
    # a share record is half the sealed blob and its header: 0.501 of the blob's bytes
    local, remote = re.findall(r"([\d.]+) GB sent \+ ([\d.]+) GB fetched per GB stored", line)
    assert 0.49 < float(local[0]) < 0.52 and float(local[1]) == 0
    assert 0.49 < float(remote[0]) < 0.52 and 0.98 < float(remote[1]) < 1.04
    # flat: a chunk share's answer grows only by its longer Merkle paths
    chunk = [int(b) for b in re.findall(r"chunk share's challenge (\d+) B", line)]
    assert len(chunk) == 3 and max(chunk) - min(chunk) < 1000


def test_offbox_bench_runs_small_and_gets_every_clip_off_the_box():
    line = bench("offbox.py", "--mb", "0.3", "--runs", "1")
    idle, busy = map(float, re.search(r"gateway ([\d.]+) s with the placer idle, ([\d.]+) s "
                                      r"while", line).groups())
    assert idle > 0 and busy > 0
    assert re.search(r"durable off the box [\d.]+ s after", line)
