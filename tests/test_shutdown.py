"""Clean shutdown on every signal: `gateway demo` and `gateway run` stop everything they started
(broker, chain, simulated devices, workers) on SIGTERM, SIGINT and SIGHUP and exit 0, also with
a child already dead; SIGKILL of the parent leaves no child behind (PR_SET_PDEATHSIG); and a
stop under load is bounded (docs/operations.md, "Stopping").

What counts as "left behind": the parent's descendants (children of the pid, recursively,
read from /proc) and any process whose command line names the test's data directory. The
second matters because anvil and Mosquitto run in sessions of their own: a process that
lost its parent is re-parented and is no descendant any more, but its command line still
names the data directory (`--state <dir>/chain/...`, `-c <dir>/broker/mosquitto.conf`).
"""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from gateway.keeper.audit import Keeper
from gateway.store import provider
from gateway.store.database import Store
from tests.helpers.e2e import write_config
from tests.helpers.paths import ENV, REPO
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

STOP_BOUND = 20     # seconds: the documented bound on a stop, under load included
TRACKERS_UNDER_LOAD = 100
FAST = ["--epoch-seconds", "1", "--block-time", "1", "--sample-interval", "0.5",
        "--upload-interval", "1"]


# -- the process table ----------------------------------------------------------------------

def process_table():
    """pid -> (ppid, command line) of every live process (zombies left out)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # gone meanwhile
        state, ppid = stat[stat.rfind(")") + 2:].split()[:2]
        if state != "Z":
            out[int(name)] = (int(ppid), cmdline)
    return out


def process_tree(pid, marker):
    """{pid: command line} of pid, its descendants, and every process naming marker."""
    table = process_table()
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p in table and p not in found:
            found.add(p)
            todo += [c for c, (ppid, _) in table.items() if ppid == p]
    found |= {p for p, (_, cmd) in table.items() if marker in cmd}
    found.discard(os.getpid())
    return {p: table[p][1] for p in sorted(found) if p in table}


def show(tree):
    return "\n".join("  %7d %s" % (p, cmd[:160]) for p, cmd in tree.items()) or "  (none)"


def assert_nothing_left(pid, marker, before, within=3.0):
    """No process of the tree is left (allowing `within` seconds for the kernel to deliver
    parent-death signals and for the children to exit)."""
    deadline = time.monotonic() + within
    while True:
        left = process_tree(pid, marker)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    print("process tree before:\n%s\nafter:\n%s" % (show(before), show(left)))
    assert not left, "left behind:\n%s" % show(left)


# -- the commands -----------------------------------------------------------------------------

def start(cmd, log):
    return subprocess.Popen([sys.executable, "-m", "gateway", *cmd], cwd=REPO, env=ENV,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def demo_cmd(data, trackers=2, extra=FAST):
    return ["demo", "--data-dir", data, "--trackers", str(trackers), "--cameras", "1",
            "--duration", "600", *extra]


def wait_up(proc, log, marker, what):
    """Until the command is up: its ready line printed, anvil running for the data dir (and
    for the demo, its Mosquitto); the process tree then."""
    def up():
        if proc.poll() is not None:
            raise AssertionError("exited with %s:\n%s" % (proc.returncode, log.read_text()[-3000:]))
        if not re.search(what, log.read_text()):
            return None
        tree = process_tree(proc.pid, marker)
        return tree if any("anvil" in cmd for cmd in tree.values()) else None
    return wait_for(up, timeout=120, interval=0.2, what=what)


def stop_with(proc, sig, timeout=60):
    """Send sig; (exit status, seconds until the process exited)."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("still running %d s after %s" % (timeout, sig.name))
    return rc, time.monotonic() - t0


def kill_leftovers(pid, marker):
    for p in process_tree(pid, marker):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def demo(tmp_path):
    """Start the demo (trackers=2 unless given); yields (proc, marker, log)."""
    started = []

    def run(trackers=2, extra=FAST):
        data = str(tmp_path / "demo")
        log = tmp_path / "demo.log"
        proc = start(demo_cmd(data, trackers, extra), log)
        started.append((proc, data + os.sep))
        return proc, data + os.sep, log
    yield run
    for proc, marker in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(proc.pid, marker)


@pytest.fixture
def gateway_run(tmp_path, broker):
    """`gateway run` on a config with the local chain, against the test's own broker."""
    started = []

    def run():
        data = str(tmp_path / "gw")
        config = write_config(str(tmp_path / "gateway.toml"), data, broker.url)
        log = tmp_path / "gateway.log"
        proc = start(["run", "--config", config], log)
        started.append((proc, data + os.sep))
        return proc, data + os.sep, log, broker
    yield run
    for proc, marker in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(proc.pid, marker)


SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]


# -- every stop signal ---------------------------------------------------------------------------

@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_demo_stops_everything_on(sig, demo):
    proc, marker, log = demo()
    before = wait_up(proc, log, marker, r"verify with:")
    assert any("mosquitto" in c for c in before.values()), show(before)
    rc, took = stop_with(proc, sig)
    print("\n%s: demo exited %d in %.1f s" % (sig.name, rc, took))
    assert rc == 0, log.read_text()[-3000:]
    assert "stored " in log.read_text()     # the summary, after the stop
    assert_nothing_left(proc.pid, marker, before)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_run_stops_everything_on(sig, gateway_run):
    proc, marker, log, _ = gateway_run()
    before = wait_up(proc, log, marker, r"gateway running")
    rc, took = stop_with(proc, sig)
    print("\n%s: gateway run exited %d in %.1f s" % (sig.name, rc, took))
    assert rc == 0, log.read_text()[-3000:]
    assert_nothing_left(proc.pid, marker, before)


# -- a child already dead --------------------------------------------------------------------------

def test_demo_stops_cleanly_when_its_broker_died(demo):
    proc, marker, log = demo()
    before = wait_up(proc, log, marker, r"verify with:")
    broker = [p for p, c in before.items() if "mosquitto" in c]
    assert broker, show(before)
    os.kill(broker[0], signal.SIGKILL)
    time.sleep(1)
    rc, took = stop_with(proc, signal.SIGTERM)
    print("\nbroker dead first: demo exited %d in %.1f s" % (rc, took))
    assert rc == 0, log.read_text()[-3000:]
    assert took < STOP_BOUND
    assert_nothing_left(proc.pid, marker, before)


def test_run_stops_cleanly_when_its_chain_died(gateway_run):
    proc, marker, log, _ = gateway_run()
    before = wait_up(proc, log, marker, r"gateway running")
    anvil = [p for p, c in before.items() if "anvil" in c]
    os.kill(anvil[0], signal.SIGKILL)
    time.sleep(1)
    rc, took = stop_with(proc, signal.SIGTERM)
    print("\nchain dead first: gateway run exited %d in %.1f s" % (rc, took))
    assert rc == 0, log.read_text()[-3000:]
    assert took < STOP_BOUND
    assert_nothing_left(proc.pid, marker, before)


# -- SIGKILL: the children die with their parent ---------------------------------------------------

def test_sigkill_of_the_demo_leaves_no_child(demo):
    proc, marker, log = demo()
    before = wait_up(proc, log, marker, r"verify with:")
    assert len(before) >= 3, show(before)   # the demo, its anvil and its Mosquitto
    proc.kill()
    proc.wait()
    assert_nothing_left(proc.pid, marker, before, within=5)


def test_sigkill_of_run_leaves_no_child(gateway_run):
    proc, marker, log, _ = gateway_run()
    before = wait_up(proc, log, marker, r"gateway running")
    proc.kill()
    proc.wait()
    assert_nothing_left(proc.pid, marker, before, within=5)


# -- `timeout -s TERM N make demo` ------------------------------------------------------------------

def test_timeout_of_the_demo_command(tmp_path):
    """`make demo` runs `make setup` (heavy) and then `python -m gateway demo --trackers 3
    --data-dir demo-data`; this runs that command under `timeout -s TERM`, which signals the
    command and its whole process group at once (the broker and the chain are in sessions of
    their own, so only the demo sees it and stops them in order). --preserve-status passes
    the demo's own exit status through: 0."""
    data = str(tmp_path / "demo")
    marker = data + os.sep
    log = tmp_path / "demo.log"
    cmd = ["timeout", "--preserve-status", "-s", "TERM", "35", sys.executable, "-m", "gateway",
           "demo", "--trackers", "3", "--data-dir", data, *FAST]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    try:
        before = wait_up(proc, log, marker, r"verify with:")
        rc = proc.wait(35 + STOP_BOUND + 10)
        print("\ntimeout -s TERM 35 demo: exit status %d" % rc)
        assert rc == 0, log.read_text()[-3000:]
        assert "stored " in log.read_text()
        assert_nothing_left(proc.pid, marker, before)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(proc.pid, marker)


# -- under load -------------------------------------------------------------------------------------

def test_sigterm_under_load_stops_within_the_bound(demo):
    proc, marker, log = demo(trackers=TRACKERS_UNDER_LOAD, extra=[
        "--epoch-seconds", "1", "--block-time", "1", "--sample-interval", "0.1",
        "--upload-interval", "0.3"])
    before = wait_up(proc, log, marker, r"verify with:")
    data = marker.rstrip(os.sep)
    store = Store.connect(data)
    wait_for(lambda: store.message_count() > 0, timeout=60, what="messages stored")
    time.sleep(20)
    stored = store.message_count()
    store.close()
    rc, took = stop_with(proc, signal.SIGTERM, timeout=90)
    text = log.read_text()
    backlog = re.findall(r"keeper: (\d+) message\(s\) not copied.*", text)
    unanchored = re.findall(r"stopping with (\d+) epoch\(s\) not yet anchored", text)
    print("\nSIGTERM under load (%d trackers, %d messages stored in ~20 s): exited %d in %.1f s; "
          "keeper backlog left %s, epochs left %s" % (TRACKERS_UNDER_LOAD, stored, rc, took,
                                                       backlog or ["0"],
                                                       unanchored or ["0"]))
    assert rc == 0, text[-3000:]
    assert took < STOP_BOUND, "took %.1f s" % took
    assert_nothing_left(proc.pid, marker, before)
    # What the Keeper left is copied by the next start's first protect(), from where it stopped.
    keeper = Keeper.open(Store.open(data), None)
    assert keeper.protect() == int(backlog[0] if backlog else 0)
    digests = [r[0] for r in Store.open(data).db.execute("SELECT digest FROM messages")]
    held = provider.Provider.open(Store.open(data))
    assert digests and all(held.has(d) for d in digests)
