# Over-the-air updates of the agent (docs/protocol.md, "OTA"): the part that is always
# loaded. agent/ota_receive.py receives and checks a release; it is imported only when an
# offer comes (or a transfer cut short by a reboot resumes), which keeps its code off the
# heap the rest of the time.
#
# A received release is swapped in (the files it replaces kept in ota/previous/) and the
# device resets. The new release then has MAX_BOOTS boots to confirm itself (its first
# ack from the gateway); otherwise boot() puts the previous files back. Every step is a
# rename or a write-then-rename and can be redone, so a power cut at any point leaves one
# release or the other, never a mix.
import json
import os

from agent import clock
from agent.heap import collect

try:
    from machine import reset  # now, while the heap is empty: a reset must not need memory
except ImportError:  # CPython, where the gateway takes the protocol's names from here
    reset = None

KIND = "o"                   # the device's OTA reports: signed messages of this kind
MANIFEST = "manifest.json"   # the installed release's manifest (tools/flash.py deploy writes it)
OFFER = "ota/offer"          # the offer being received, as it came
HAVE = "ota/have"            # one bit per chunk on flash
STAGING = "ota/staging"      # the new release's files, at their paths
PREVIOUS = "ota/previous"    # the files it replaced, until it is confirmed
STATE = "ota/state.json"     # a release on trial, or the last rollback

MAX_BOOTS = 3
TRIAL_SECONDS = 600          # a release that has not confirmed by then resets (a boot used)


def boot():
    """Count a boot of a release on trial; after MAX_BOOTS unconfirmed boots, restore the
    previous files and reset. Called before the rest of the agent is imported, so that a
    release that fails to import is counted too. Also finishes a swap cut short."""
    state = read_json(STATE)
    if not state or "boots" not in state:
        return
    if state["boots"] >= MAX_BOOTS:
        print("ota: %s did not confirm in %d boots: rolling back to %s"
              % (state["version"], MAX_BOOTS, state["from"]))
        _roll_back(state)
        reset()
    swap(state)
    state["boots"] += 1
    write_json(STATE, state)


class Updater:
    """The agent's side of OTA. report(map) seals a signed `o` message; notes is the dict of
    extra health keys the status message carries (`ota`)."""

    def __init__(self, report, notes, log=print):
        self.report = report
        self.notes = notes
        self.log = log
        installed = read_json(MANIFEST) or {}
        self.version = installed.get("version")
        self.board = installed.get("board")
        self.state = read_json(STATE) or {}
        self.started = clock.monotonic()
        self.session = 0
        self.receiver = None
        if "rolled_back" in self.state:
            self.notes["ota"] = "rolled back from " + self.state["rolled_back"]
            if not self.state.get("reported"):
                self.report({"ota": self.state["rolled_back"], "st": "rolled back",
                             "why": "not confirmed in %d boots" % MAX_BOOTS})
                self.state["reported"] = True
                write_json(STATE, self.state)
        elif "boots" not in self.state and exists(OFFER):
            self._receiver()  # resumes the transfer

    def receive(self, payload):
        """A downlink on ek/<id>/down/ota. A malformed one raises ValueError, which the agent's
        downlink guard (agent/device.py Agent.downlink) counts as a bad downlink."""
        why = self._receiver().receive(payload)
        collect()
        if why:
            raise ValueError("ota: " + why)

    def poll(self, session):
        """Each loop: reset a release on trial that has not confirmed within TRIAL_SECONDS;
        after a reconnect, ask again for what a transfer still misses; install a release
        received in full."""
        if "boots" in self.state and clock.monotonic() - self.started > TRIAL_SECONDS:
            self.log("ota: %s not confirmed after %d s: resetting" % (self.version, TRIAL_SECONDS))
            reset()
        if self.receiver is not None:
            if session != self.session:
                self.receiver.reconnected()
            self.receiver.poll()
        self.session = session

    def acked(self):
        """The gateway acked a message: a release on trial is confirmed. True if it was."""
        if "boots" not in self.state:
            return False
        self.report({"ota": self.version, "st": "confirmed"})
        self.notes["ota"] = "updated from %s" % self.state["from"]
        remove(STATE)
        clear(PREVIOUS)
        self.state = {}
        self.log("ota: %s confirmed" % self.version)
        return True

    def _receiver(self):
        if self.receiver is None:
            from agent.ota_receive import Receiver
            self.receiver = Receiver(self)
        return self.receiver


def install(state):
    """Swap in the staged release described by state and reset into it."""
    clear(PREVIOUS)
    write_json(STATE, state)
    swap(state)
    collect()
    reset()


def swap(state):
    """Move the staged files into place, each replaced one to ota/previous/ first; the
    manifest goes last. Redoing it after a power cut finishes the same swap."""
    for path in state["removed"]:
        if exists(path):
            move(path, PREVIOUS + "/" + path)
    for path in walk(STAGING):
        if path != MANIFEST:
            _put_in_place(path)
    _put_in_place(MANIFEST)
    clear(STAGING)


def _put_in_place(path):
    collect()
    staged = STAGING + "/" + path
    if not exists(staged):
        return
    saved = PREVIOUS + "/" + path
    if exists(path) and not exists(saved):
        move(path, saved)
    move(staged, path)


def _roll_back(state):
    for path in walk(PREVIOUS):
        move(PREVIOUS + "/" + path, path)
    for path in state["added"]:
        remove(path)
    clear(STAGING)
    clear(PREVIOUS)
    write_json(STATE, {"rolled_back": state["version"], "version": state["from"]})


# -- files ---------------------------------------------------------------------

def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path, obj):
    write(path, json.dumps(obj).encode())


def write(path, data):
    """Write-then-rename: the file has its old content or the new, never a part."""
    makedirs(path)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.rename(path + ".tmp", path)


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def makedirs(path):
    """Create the directories path's file is in."""
    parts = path.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if not exists(d):
            os.mkdir(d)


def move(src, dst):
    makedirs(dst)
    os.rename(src, dst)


def remove(path):
    if exists(path):
        os.remove(path)


def _is_dir(path):
    return os.stat(path)[0] & 0x4000


def walk(top):
    """Paths of the files under top, relative to it."""
    if not exists(top):
        return []
    out = []
    for name in os.listdir(top):
        if _is_dir(top + "/" + name):
            out += [name + "/" + p for p in walk(top + "/" + name)]
        else:
            out.append(name)
    return out


def clear(top):
    """Delete top and everything under it."""
    if not exists(top):
        return
    for name in os.listdir(top):
        path = top + "/" + name
        if _is_dir(path):
            clear(path)
        else:
            os.remove(path)
    os.rmdir(top)
