"""What `ota push` shows while it runs, and what it says about each device that failed.

Per device, as far as the protocol tells (docs/protocol.md, "OTA"): the offer; the chunks the
device asked for, as the broker takes them (a line at each quarter); the device verifying
them; installing and rebooting; then confirmed, refused or rolled back. The device reports
nothing between its `need` and `installing`, so "verifying" is the time in between.
"""
import sys
import threading

from agent import ota
from gateway.ingest.ota import Progress

QUARTERS = 4


class PushProgress(Progress):
    """Prints each device's steps as lines "<device>: <step>" (safe from any thread)."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.lock = threading.Lock()
        self.wanted = {}   # device -> chunks it asked for in its last `need`
        self.sent = {}     # device -> of those, how many the broker has taken

    def step(self, device, text):
        self._line(device, text)

    def need(self, device, count):
        with self.lock:
            self.wanted[device], self.sent[device] = count, 0

    def chunk_sent(self, device):
        with self.lock:
            wanted = self.wanted.get(device, 0)
            if not wanted or self.sent[device] >= wanted:
                return
            self.sent[device] += 1
            sent = self.sent[device]
        if sent == wanted:
            self._line(device, "sent %d/%d chunks; the device verifies every file against "
                               "the signed manifest, then installs" % (sent, wanted))
        elif QUARTERS * sent // wanted > QUARTERS * (sent - 1) // wanted:
            self._line(device, "sent %d/%d chunks (%d%%)" % (sent, wanted, 100 * sent // wanted))

    def _line(self, device, text):
        with self.lock:
            self.out.write("%s: %s\n" % (device, text))
            self.out.flush()


# -- what failed, and what to do about it ---------------------------------------

def failure(transfer, timeout):
    """(what happened, fix) for a transfer that did not end with the release running."""
    version, why = transfer.release.version, transfer.why or ""
    if transfer.state == "refused":
        return "refused %s: %s" % (version, why or "no reason given"), refusal_fix(why)
    if transfer.state == "rolled back":
        return ("rolled back %s: %s" % (version, why or "not confirmed"),
                "%s did not start and reach the gateway in %d boots, so the device runs its "
                "previous release again: try the bundle on a virtual device first "
                "(`edgekeep-flash virtual-device`, then `deploy`) and read what it prints"
                % (version, ota.MAX_BOOTS))
    if transfer.state == "installing":
        return ("installed %s but no confirmation within %d s" % (version, timeout),
                "the device is rebooting into it: its first ack confirms it, or it rolls back "
                "by itself after %d boots; see which it runs in the admin page or the device's "
                "status, or wait longer next time (--timeout)" % ota.MAX_BOOTS)
    return ("no answer within %d s (last: %s)" % (timeout, transfer.state),
            "check that the device is on and connected to this broker (`edgekeep devices list` "
            "shows when it was last seen), then push again: it resumes where it stopped")


def refusal_fix(why):
    if why.startswith("downgrade"):
        return "to install an older release on purpose, push it again with --force"
    if why.startswith("bad signature"):
        return ("push a bundle signed by the release key this device trusts (the KEY.pub "
                "`edgekeep-flash deploy --release-key` installed), or deploy over USB to change it")
    if why.startswith("no release key") or "is not a P-256 public key" in why:
        return ("install the release key over USB once: `edgekeep-flash deploy --port PORT "
                "--release-key KEY.pub BUNDLE`; from then on updates come over the air")
    if why.startswith("bundle for board"):
        return "push the bundle built for this device's board (`python -m firmware build --board B`)"
    if "still on trial" in why:
        return ("wait until the device confirms or rolls back the release it is trying "
                "(minutes), then push again")
    if "does not match the signed manifest" in why:
        return "rebuild the bundle (`python -m firmware build`) and push it again"
    return "see the device's log (`edgekeep-flash shell --port PORT`), then push again"
