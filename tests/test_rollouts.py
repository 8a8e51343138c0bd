"""OTA rollouts' plan and API (gateway/updates/, gateway/web/updates.py): the stages a plan
makes, when a stage halts, resume and abort, and the uploads the gateway refuses (unsigned,
signed by another key, tampered, not an archive) with a 4xx and a fix, counted by reason.
The staged rollout to devices is tests/test_browser_updates.py."""
import hashlib
import io
import json
import os
import re
import shutil
import tarfile

import pytest
from starlette.testclient import TestClient

from firmware import bundle, signing
from gateway.config import Config
from gateway.store.database import Store
from gateway.store.rollouts import (
    CONFIRMED,
    HALTED,
    OFFERED,
    REBOOTING,
    ROLLED_BACK,
    RUNNING,
    SKIPPED,
    TIMED_OUT,
    WAITING,
    DeviceUpdate,
    Rollouts,
)
from gateway.updates import actions, plan
from gateway.web import auth
from gateway.web.app import create_app
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.unit

PASSWORD = "correct horse battery"
DEVICES = ["%016x" % i for i in range(1, 11)]


# -- the plan ----------------------------------------------------------------------

def test_stages_are_the_canary_group_then_shares_of_the_rest():
    assert plan.stages(DEVICES, DEVICES[:2], [25, 50, 100]) == [
        DEVICES[:2], DEVICES[2:4], DEVICES[4:6], DEVICES[6:]]
    assert plan.stages(DEVICES, [], [100]) == [DEVICES]
    assert plan.stages(DEVICES[:3], DEVICES[:3], []) == [DEVICES[:3]]
    # 10% of 3 devices rounds up to one; a stage that would add nobody is left out
    assert plan.stages(DEVICES[:3], [], [10, 20, 100]) == [DEVICES[:1], DEVICES[1:3]]


@pytest.mark.parametrize("devices, canary, percents, why", [
    ([], [], [100], "no devices"),
    (DEVICES[:2] + DEVICES[:1], [], [100], "listed twice"),
    (DEVICES[:2], ["ffffffffffffffff"], [100], "not among the devices"),
    (DEVICES[:4], DEVICES[:1], [], "as percentages"),
    (DEVICES[:4], [], [50], "end at 100"),
    (DEVICES[:4], [], [60, 40, 100], "must rise"),
    (DEVICES[:4], [], [0, 100], "1..100"),
    (DEVICES[:4], [], [True, 100], "1..100"),
])
def test_a_plan_that_cannot_run_says_why(devices, canary, percents, why):
    with pytest.raises(plan.PlanError, match=why):
        plan.stages(devices, canary, percents)


def rows(*states):
    return [DeviceUpdate("r", DEVICES[i], 0, s, 0, 0, "crashed" if s == ROLLED_BACK else None,
                         100.0 if s != WAITING else None, 100.0) for i, s in enumerate(states)]


def test_a_stage_halts_once_more_than_the_share_failed():
    # 1 of 4 failed is 25%: over 20% halts at once, while the others are still updating
    verdict, why = plan.verdict(rows(ROLLED_BACK, OFFERED, REBOOTING, CONFIRMED), 0.2, False)
    assert verdict == plan.HALT
    assert why.startswith("1 of 4 device(s) of this stage failed (more than 20%)")
    assert DEVICES[0] + " rolled back: crashed" in why
    # at most the share: it waits for the rest, then goes on
    assert plan.verdict(rows(ROLLED_BACK, OFFERED, REBOOTING, CONFIRMED), 0.25, False)[0] == plan.WAIT
    assert plan.verdict(rows(ROLLED_BACK, CONFIRMED, CONFIRMED, SKIPPED), 0.25, False) == (
        plan.GO_ON, "3 of 4 device(s) confirmed")
    # a resume accepted this stage's failures: it goes on when all are done
    assert plan.verdict(rows(ROLLED_BACK, TIMED_OUT, REBOOTING), 0.2, True)[0] == plan.WAIT
    assert plan.verdict(rows(ROLLED_BACK, TIMED_OUT, CONFIRMED), 0.2, True)[0] == plan.GO_ON
    # a zero share: the first failure halts
    assert plan.verdict(rows(TIMED_OUT, *[CONFIRMED] * 9), 0.0, False)[0] == plan.HALT


def test_a_device_that_does_not_confirm_in_time_has_failed():
    r = rows(OFFERED, REBOOTING, CONFIRMED, WAITING)
    assert plan.timed_out(r, 60, 160.0) == []
    assert plan.timed_out(r, 60, 160.5) == [DEVICES[0], DEVICES[1]]


# -- bundles and the API -------------------------------------------------------------

def make_bundle(out, key, version="0.2.0", runtime="micropython", sign=True):
    """A small signed bundle as `python -m firmware build` lays one out."""
    os.makedirs(out)
    files = {"main.py": b"import agent.boot\nagent.boot.main()\n", "board.json": b"{}"}
    for path, data in files.items():
        with open(os.path.join(out, path), "wb") as f:
            f.write(data)
    manifest = {"format": 1, "board": "esp32", "version": version, "runtime": runtime,
                "files": {p: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
                          for p, d in files.items()}}
    data = json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"
    with open(os.path.join(out, bundle.MANIFEST), "wb") as f:
        f.write(data)
    if sign:
        with open(os.path.join(out, bundle.SIGNATURE), "w") as f:
            f.write(signing.sign(signing.load_private(key), data).hex() + "\n")
    return out


def tar_of(directory):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(directory, arcname=os.path.basename(directory))
    return buf.getvalue()


@pytest.fixture
def keys(tmp_path):
    key, rogue = str(tmp_path / "release.key"), str(tmp_path / "rogue.key")
    return {"key": key, "pub": signing.keygen(key), "rogue": rogue, "rogue_pub": signing.keygen(rogue)}


@pytest.fixture
def gw(tmp_path):
    data = str(tmp_path / "gw")
    store = Store.open(data)
    for i, dev in enumerate(DEVICES):
        store.add_device(dev, b"\x04" + bytes([i + 1]) * 64, "t%d" % (i + 1))
    store.close()
    auth.set_password(data, PASSWORD)
    with TestClient(create_app(Config(data_dir=data)), follow_redirects=False) as c:
        r = c.post("/login", data={"password": PASSWORD, "csrf": csrf(c.get("/login").text)})
        assert r.status_code == 303
        c.headers["X-CSRF-Token"] = csrf(c.get("/updates").text)
        c.data = data
        yield c


def csrf(html):
    return re.search(r'name="csrf" (?:content|value)="([^"]+)"', html).group(1)


def upload(c, archive):
    return c.post("/api/updates/bundles", content=archive,
                  headers={"content-type": "application/octet-stream"})


def rejected_metric(c, reason):
    m = re.search(r'edgekeep_update_bundles_rejected_total\{reason="%s"\} (\S+)' % reason,
                  c.get("/metrics").text)
    return float(m.group(1))


def assert_refused(r, status, error, fix):
    assert r.status_code == status, r.text
    assert error in r.json()["error"], r.json()
    assert fix in r.json()["fix"], r.json()


def test_bundles_are_checked_against_the_release_key_set_once(gw, keys, tmp_path):
    good = tar_of(make_bundle(str(tmp_path / "good"), keys["key"]))
    assert_refused(upload(gw, good), 409, "no release key", "set it once on the Updates page")

    r = gw.put("/api/updates/release-key", json={"key": "04abcd"})
    assert_refused(r, 400, "not a release public key", "KEY.pub")
    assert gw.put("/api/updates/release-key", json={"key": keys["pub"] + "\n"}).json() == {
        "release_key": keys["pub"]}
    assert gw.put("/api/updates/release-key", json={"key": keys["pub"]}).status_code == 200
    r = gw.put("/api/updates/release-key", json={"key": keys["rogue_pub"]})
    assert_refused(r, 409, "already checks bundles against release key", "delete")
    assert gw.get("/api/updates").json()["release_key"] == keys["pub"]

    r = upload(gw, good)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == "0.2.0" and r.json()["board"] == "esp32"
    assert [b["digest"] for b in gw.get("/api/updates").json()["bundles"]] == [r.json()["digest"]]
    assert os.path.isfile(os.path.join(gw.data, "updates", "bundles", r.json()["digest"],
                                       "main.py"))


def test_unsigned_forged_and_broken_uploads_are_refused_with_a_fix(gw, keys, tmp_path):
    gw.put("/api/updates/release-key", json={"key": keys["pub"]})
    cases = [
        ("unsigned", tar_of(make_bundle(str(tmp_path / "u"), keys["key"], sign=False)), 422,
         "not signed", "--sign-key"),
        ("bad_signature", tar_of(make_bundle(str(tmp_path / "f"), keys["rogue"])), 422,
         "not the release key's", "signed by your release key"),
        ("not_an_archive", b"this is not a tar archive", 400, "not a tar archive", "tar czf"),
        ("not_a_bundle", empty_tar(), 400, "no manifest.json", "python -m firmware build"),
        ("not_for_ota", tar_of(make_bundle(str(tmp_path / "c"), keys["key"], runtime="cpython")),
         422, "not a bundle OTA can send", "MicroPython board"),
    ]
    tampered = make_bundle(str(tmp_path / "t"), keys["key"])
    with open(os.path.join(tampered, "main.py"), "ab") as f:
        f.write(b"# changed after signing\n")
    cases.append(("file_mismatch", tar_of(tampered), 422,
                  "main.py does not match the signed manifest", "rebuild"))
    for reason, archive, status, error, fix in cases:
        before = rejected_metric(gw, reason)
        assert_refused(upload(gw, archive), status, error, fix)
        assert rejected_metric(gw, reason) == before + 1, reason
    assert gw.get("/api/updates").json()["bundles"] == []      # nothing kept
    leftovers = os.listdir(os.path.join(gw.data, "updates"))
    assert leftovers == ["release.pub"], leftovers             # no unpacked upload left over


def empty_tar():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("readme.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    return buf.getvalue()


def test_an_archive_cannot_write_outside_its_directory(gw, keys, tmp_path):
    gw.put("/api/updates/release-key", json={"key": keys["pub"]})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    assert_refused(upload(gw, buf.getvalue()), 400, "cannot be unpacked safely", "without links")
    assert not os.path.exists(os.path.join(gw.data, "escaped.txt"))
    assert not os.path.exists(os.path.join(os.path.dirname(gw.data), "escaped.txt"))


def start(gw, digest, **plan_):
    body = {"bundle": digest, "devices": DEVICES, "canary": DEVICES[:2], "stages": [50, 100]}
    return gw.post("/api/updates/rollouts", json=body | plan_)


def uploaded(gw, keys, tmp_path):
    gw.put("/api/updates/release-key", json={"key": keys["pub"]})
    return upload(gw, tar_of(make_bundle(str(tmp_path / "b"), keys["key"]))).json()["digest"]


def test_rollouts_start_halt_resume_and_abort(gw, keys, tmp_path):
    digest = uploaded(gw, keys, tmp_path)
    for bad, error in [({"devices": "all"}, "devices must be a list"),
                       ({"stages": [50]}, "end at 100"),
                       ({"max_failed": 1.5}, "max_failed must be a share"),
                       ({"max_failed": "x"}, "max_failed must be a number"),
                       ({"confirm_seconds": 1}, "confirm_seconds must be"),
                       ({"devices": DEVICES + ["00000000deadbeef"]}, "not an active device"),
                       ({"bundle": "ab" * 32}, "no bundle abababababab")]:
        r = start(gw, digest, **bad)
        status = 404 if error.startswith(("no bundle", "not an active")) else 400
        assert r.status_code == status and error in r.json()["error"], (bad, r.text)

    r = start(gw, digest)
    assert r.status_code == 201, r.text
    rollout = r.json()
    assert rollout["status"] == RUNNING and rollout["stages"] == 3
    assert [d["stage"] for d in rollout["devices"]] == [0] * 2 + [1] * 4 + [2] * 4
    assert {d["state"] for d in rollout["devices"]} == {WAITING}
    # a device is in one unfinished rollout at a time
    r = start(gw, digest)
    assert r.status_code == 409 and "in a rollout that has not ended" in r.json()["error"]

    path = "/api/updates/rollouts/" + rollout["id"]
    assert gw.post(path + "/resume").status_code == 409       # running, not halted
    rollouts = Rollouts(gw.app.state.store.db)
    rollouts.set_status(rollout["id"], (RUNNING,), HALTED, 5.0, "1 of 2 failed")
    r = gw.post(path + "/resume")
    assert r.status_code == 200 and r.json()["status"] == RUNNING
    assert r.json()["accepted_stage"] == 0

    r = gw.post(path + "/abort")
    assert r.status_code == 200 and r.json()["status"] == "aborted"
    assert {d["state"] for d in r.json()["devices"]} == {SKIPPED}
    assert gw.post(path + "/abort").status_code == 409
    assert gw.post(path + "/resume").status_code == 409
    assert start(gw, digest).status_code == 201                 # the devices are free again
    assert gw.get("/api/updates/rollouts/" + "0" * 16).status_code == 404
    assert 'edgekeep_rollouts{status="aborted"} 1.0' in gw.get("/metrics").text
    assert 'edgekeep_rollout_devices{state="waiting"} 10.0' in gw.get("/metrics").text


def test_rollout_changes_need_the_csrf_token(gw, keys, tmp_path):
    digest = uploaded(gw, keys, tmp_path)
    token = gw.headers.pop("X-CSRF-Token")
    assert start(gw, digest).status_code == 403
    assert upload(gw, b"x").status_code == 403
    gw.headers["X-CSRF-Token"] = token
    assert start(gw, digest).status_code == 201


def test_the_updates_page_is_behind_the_login(tmp_path):
    data = str(tmp_path / "gw")
    Store.open(data).close()
    auth.set_password(data, PASSWORD)
    with TestClient(create_app(Config(data_dir=data)), follow_redirects=False) as c:
        assert c.get("/updates").status_code in (302, 303)
        assert c.get("/api/updates").status_code == 401


def test_resume_and_abort_act_only_on_what_they_read(tmp_path, database_url):
    store = Store.open(str(tmp_path / "gw"), database_url)
    rollouts = Rollouts(store.db)
    store.add_device(DEVICES[0], b"\x04" + b"\x01" * 64, "t1")
    from gateway.store.rollouts import Bundle
    rollouts.add_bundle(Bundle("d" * 64, "0.2.0", "esp32", 2, 10, 1.0))
    r = actions.create(store, "d" * 64, DEVICES[:1], [], [100], now=1.0)
    assert not actions.resume(rollouts, r.id, 2.0)
    assert actions.abort(rollouts, r.id, 3.0)
    # the engine halting what the owner aborted meanwhile changes nothing
    assert not rollouts.set_status(r.id, (RUNNING,), HALTED, 4.0, "late")
    assert rollouts.get(r.id).status == "aborted"
    store.close()


# -- the engine, against a real Mosquitto ----------------------------------------------

@pytest.mark.integration
def test_the_engine_follows_stages_times_out_halts_and_carries_on_after_a_takeover(
        tmp_path, broker, keys, database_url):
    """Devices here do not run (tests/test_browser_updates.py has real ones): the test says
    what each did through the gateway's store, as the ingest would have written it, and
    checks what the engine offers on the broker and writes in the store."""
    from agent.identity import Identity
    from gateway.ingest.ota import Pusher
    from gateway.updates import bundles
    from gateway.updates.engine import Engine
    from tests.helpers.mqtt import Subscriber
    data = str(tmp_path / "gw")
    store = Store.open(data, database_url)
    devs = []
    for i in range(3):
        ident = Identity.create(os.urandom)
        store.add_device(ident.hex, ident.public, "t%d" % i)
        store.set_health(ident.hex, {"fw": "0.1.0"})
        devs.append(ident.hex)
    bundles.set_release_key(data, keys["pub"])
    row, _ = bundles.accept(data, tar_of(make_bundle(str(tmp_path / "b"), keys["key"])))
    rollouts = Rollouts(store.db)
    rollouts.add_bundle(row)
    r = actions.create(store, row.digest, devs, devs[:1], [100], max_failed=0.2,
                       confirm_seconds=10, now=1000.0)
    offers = Subscriber(broker.port, "ek/+/down/ota")

    def engine():
        e = Engine(Store.connect(data), lambda progress: Pusher(broker.url, {}, None, None,
                                                                progress))
        e.pusher = e.make_pusher(e.counts)
        e.pusher.connect()
        return e

    def states():
        return {d.device: d.state for d in rollouts.devices(r.id)}

    def offered_to():
        return sorted(t.split("/")[1] for t, _ in offers.messages)

    first = engine()
    try:
        first.step(1000.0)
        assert states() == {devs[0]: OFFERED, devs[1]: WAITING, devs[2]: WAITING}
        wait_for(lambda: offered_to() == [devs[0]], what="the canary's offer")
    finally:
        first.pusher.close()
    # Another worker takes over: it offers again to a device that was receiving...
    second = engine()
    try:
        second.step(1001.0)
        wait_for(lambda: offered_to() == [devs[0]] * 2, what="the offer again")
        # ... and reads the status of one that was rebooting: it runs the release now.
        rollouts.set_device(r.id, devs[0], REBOOTING, 1002.0)
        second.transfers.clear()
        store.set_health(devs[0], {"fw": "0.2.0", "ota": "updated from 0.1.0"})
        second.step(1003.0)
        assert states()[devs[0]] == CONFIRMED
        assert rollouts.get(r.id).stage == 1                  # the canary stage passed
        second.step(1004.0)
        assert states()[devs[1]] == OFFERED and states()[devs[2]] == OFFERED
        # one rolls back (its status says so), the other never confirms: the stage halts
        rollouts.set_device(r.id, devs[2], REBOOTING, 1005.0)
        second.transfers.pop(devs[2])
        store.set_health(devs[2], {"fw": "0.1.0", "ota": "rolled back from 0.2.0"})
        second.step(1006.0)
        assert states()[devs[2]] == ROLLED_BACK
        halted = rollouts.get(r.id)
        assert halted.status == HALTED and "1 of 2 device(s) of this stage failed" in halted.reason
        second.step(1015.0)
        assert states()[devs[1]] == TIMED_OUT
        assert rollouts.get(r.id).status == HALTED
        # resumed: the stage's failures are accepted, and it was the last one
        assert actions.resume(rollouts, r.id, 1016.0)
        second.step(1017.0)
        assert rollouts.get(r.id).status == "done"
        assert offered_to() == sorted([devs[0]] * 2 + devs[1:])   # nothing offered twice more
    finally:
        second.pusher.close()
        offers.close()
        store.close()


@pytest.mark.integration
def test_a_rollout_whose_bundle_is_gone_halts_alone(tmp_path, broker, keys):
    from agent.identity import Identity
    from gateway.ingest.ota import Pusher
    from gateway.updates import bundles
    from gateway.updates.engine import Engine
    data = str(tmp_path / "gw")
    store = Store.open(data)
    ident = Identity.create(os.urandom)
    store.add_device(ident.hex, ident.public, "t1")
    bundles.set_release_key(data, keys["pub"])
    row, _ = bundles.accept(data, tar_of(make_bundle(str(tmp_path / "b"), keys["key"])))
    Rollouts(store.db).add_bundle(row)
    r = actions.create(store, row.digest, [ident.hex], [], [100], now=1.0)
    shutil.rmtree(bundles.bundle_dir(data, row.digest))
    engine = Engine(Store.connect(data), lambda p: Pusher(broker.url, {}, None, None, p))
    engine.pusher = engine.make_pusher(engine.counts)
    engine.pusher.connect()
    try:
        engine.step(2.0)
    finally:
        engine.pusher.close()
    halted = Rollouts(store.db).get(r.id)
    assert halted.status == HALTED and halted.reason.startswith("cannot send its bundle")
    store.close()
