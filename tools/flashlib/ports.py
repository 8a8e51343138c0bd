"""What `flash.py ports` lists: the virtual devices running on this machine and the serial
ports, each marked for how likely a MicroPython board is behind it.

A virtual device's pty (/dev/pts/N) looks like any terminal, so `flash.py virtual-device`
registers itself while it runs: one JSON file per device in the registry directory
(`$EDGEKEEP_VIRTUAL_DEVICES`, else ~/.edgekeep/virtual-devices), removed when it stops.
A file left by a killed one is dropped when its process is gone.
"""
import json
import os
from typing import NamedTuple

REGISTRY_ENV = "EDGEKEEP_VIRTUAL_DEVICES"

# USB vendor ids of the serial bridges and chips MicroPython boards use.
KNOWN_VIDS = {0x303A: "Espressif native USB", 0x10C4: "CP210x (ESP32 boards)",
              0x1A86: "CH340 (ESP32 boards)", 0x0403: "FTDI", 0x1366: "SEGGER J-Link (nRF91 DK)",
              0x1915: "Nordic", 0x2E8A: "Raspberry Pi", 0xF055: "MicroPython"}

VIRTUAL, LIKELY, USB, UNLIKELY = range(4)  # also the order of the listing
ROW = "%-14s %-38s %-9s %s"


class Port(NamedTuple):
    rank: int
    device: str
    kind: str
    usb_id: str
    about: str


# -- the registry of virtual devices ---------------------------------------------

def registry_dir():
    return os.environ.get(REGISTRY_ENV) or os.path.expanduser("~/.edgekeep/virtual-devices")


def register_virtual(port, board, flash_dir):
    """Note a running virtual device; returns its file, for unregister_virtual."""
    directory = registry_dir()
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "%d-%s.json" % (os.getpid(), os.path.basename(port)))
    with open(path + ".tmp", "w") as f:
        json.dump({"port": port, "board": board, "flash": os.path.abspath(flash_dir),
                   "pid": os.getpid()}, f)
    os.replace(path + ".tmp", path)
    return path


def unregister_virtual(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def virtual_devices():
    """The registered virtual devices that still run: [{"port", "board", "flash", "pid"}]."""
    directory = registry_dir()
    if not os.path.isdir(directory):
        return []
    found = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        entry = _read_entry(path)
        if entry is None or not _running(entry):
            unregister_virtual(path)
            continue
        found.append(entry)
    return found


def _read_entry(path):
    try:
        with open(path) as f:
            entry = json.load(f)
        return entry if {"port", "board", "flash", "pid"} <= set(entry) else None
    except (OSError, ValueError):
        return None


def _running(entry):
    try:
        os.kill(entry["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        pass
    return os.path.exists(entry["port"])


# -- classifying ports ---------------------------------------------------------

def describe_serial(p):
    """A pyserial ListPortInfo as a Port: USB serial with a known chip is likely a board; a
    port with no USB device behind it (a built-in UART such as /dev/ttyS0) is unlikely."""
    about = "" if p.description in (None, "n/a") else p.description
    if p.vid is None:
        return Port(UNLIKELY, p.device, "unlikely: no USB device", "-", about)
    usb_id = "%04x:%04x" % (p.vid, p.pid or 0)
    chip = KNOWN_VIDS.get(p.vid)
    if chip:
        return Port(LIKELY, p.device, "likely a board: " + chip, usb_id, about)
    return Port(USB, p.device, "USB serial, unknown chip", usb_id, about)


def describe_virtual(entry):
    return Port(VIRTUAL, entry["port"], "virtual %s board" % entry["board"], "-",
                "flash %s (pid %d)" % (entry["flash"], entry["pid"]))


def all_ports(serial_ports, virtual):
    return sorted([describe_virtual(v) for v in virtual] + [describe_serial(p) for p in serial_ports])


def listing(ports, show_all):
    """The lines `ports` prints; ports without a USB device only with show_all."""
    shown = [p for p in ports if show_all or p.rank != UNLIKELY]
    hidden = [p.device for p in ports if p not in shown]
    lines = [(ROW % (p.device, p.kind, p.usb_id, p.about)).rstrip() for p in shown]
    if shown:
        lines.insert(0, (ROW % ("PORT", "WHAT", "USB ID", "DESCRIPTION")).rstrip())
    if hidden:
        lines.append("%d serial port(s) without a USB device not shown (%s): unlikely to be a "
                     "board; --all lists them" % (len(hidden), ", ".join(hidden)))
    if not shown:
        lines.append("no boards or virtual devices found: plug a board in (USB), or start a "
                     "virtual one: `python tools/flash.py virtual-device --dir DIR`")
    return lines
