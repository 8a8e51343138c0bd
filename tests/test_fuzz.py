"""The fuzz targets (fuzz/targets.py): the regression inputs replayed in process, and a short
atheris run of each target (`make fuzz` runs them for longer; docs/reliability.md)."""
import os

import pytest

from fuzz.targets import TARGETS

REGRESSIONS = os.path.join(os.path.dirname(__file__), "fuzz_regressions")


def _inputs():
    for name in sorted(os.listdir(REGRESSIONS)):
        d = os.path.join(REGRESSIONS, name)
        if os.path.isdir(d):
            for f in sorted(os.listdir(d)):
                yield name, os.path.join(d, f)


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """Each target set up once, in its own directory (the downlinks harness is a flash)."""
    cwd = os.getcwd()
    built = {}
    try:
        for name, cls in TARGETS.items():
            t = cls()
            d = str(tmp_path_factory.mktemp(name))
            if name == "cbor":
                t.setup()
            else:
                t.setup(d)
            built[name] = t
    finally:
        os.chdir(cwd)
    return built


@pytest.mark.unit
@pytest.mark.parametrize("target,path", list(_inputs()),
                         ids=["%s/%s" % (t, os.path.basename(p)) for t, p in _inputs()])
def test_regression_input_is_survived(targets, target, path, monkeypatch):
    if target == "downlinks":
        monkeypatch.chdir(targets[target].h.flash)
    with open(path, "rb") as f:
        targets[target].one_input(f.read())


@pytest.mark.unit
def test_seeds_are_survived(targets, monkeypatch):
    for name, t in targets.items():
        if name == "downlinks":
            monkeypatch.chdir(t.h.flash)
        for seed in t.seeds():
            t.one_input(seed)


@pytest.mark.integration
def test_a_short_fuzz_run_of_every_target_finds_no_crash(tmp_path):
    pytest.importorskip("atheris")
    from fuzz import run
    for name in TARGETS:
        execs, secs, crashes, tail = run.run(name, seconds=3, workdir=str(tmp_path))
        assert not crashes, tail
        assert execs > 100, tail
