"""The boards EdgeKeep ships for: what a bundle holds, how the chip is flashed, how a running
MicroPython names the board (os.uname().machine), and the virtual device's version of it."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Modules that only run on CPython (the simulator, paho, the wasm launcher) stay off devices.
HOST_ONLY = ("agent/__main__.py", "agent/sim.py", "agent/mqtt_paho.py", "agent/runtime")

BOARDS = {
    "esp32": {
        "description": "ESP32 board with Wi-Fi (e.g. ESP32-DevKitC)",
        "runtime": "micropython",
        "packages": ["agent", "hw/pebble"],  # hw/pebble/board.py has ESP32_DEVKIT's pins
        "config": {"board": "esp32", "transport": "socket"},
        "machine": "Generic ESP32 module with ESP32",
        "match": ["ESP32"],
        "chip": "esp32",
        "virtual": {"heap": 112 * 1024, "flash": 2048 * 1024},
    },
    "esp32cam": {
        "description": "ESP32-CAM (ESP32 with PSRAM and an OV2640 camera)",
        "runtime": "micropython",
        "packages": ["agent", "hw/esp32cam"],
        "config": {"board": "esp32cam", "transport": "socket"},
        "machine": "ESP32 module (spiram) with ESP32",
        "match": ["ESP32", "SPIRAM"],
        "chip": "esp32",
        "virtual": {"heap": 2048 * 1024, "flash": 2048 * 1024},
    },
    "pebble": {
        "description": "Pebble-class tracker (nRF9160 with the Serial LTE Modem)",
        "runtime": "micropython",
        "packages": ["agent", "hw/pebble"],
        "config": {"board": "pebble", "transport": "slm"},
        "machine": "PCA10090 with NRF9160",
        "match": ["NRF9160"],
        "chip": None,  # not an Espressif chip: see docs/flashing.md, "nRF9160 boards"
        "virtual": {"heap": 64 * 1024, "flash": 256 * 1024},
    },
    "rpi-camera": {
        "description": "Raspberry Pi camera node (CPython on the Pi)",
        "runtime": "cpython",
        "packages": ["agent", "hw/rpi"],
        "config": {"board": "rpi-camera", "transport": "socket"},
    },
}

# esptool write-flash offsets of a MicroPython image (DESIGN.md, "MicroPython on devices").
FLASH_OFFSETS = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0,
                 "esp32c6": 0x0, "esp32c5": 0x2000, "esp32p4": 0x2000}


def board(name):
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError("unknown board %r (choose from %s)" % (name, ", ".join(BOARDS)))


def matches(name, machine):
    """Whether a device reporting os.uname().machine is this board."""
    machine = machine.upper()
    return all(word.upper() in machine for word in BOARDS[name].get("match", ("\0",)))


def source_files(name):
    """Repository-relative paths of the board's Python modules, sorted."""
    found = []
    for package in board(name)["packages"]:
        top = os.path.join(ROOT, package)
        if not os.path.isdir(top):
            raise ValueError("board %s needs %s/, which is not in this tree" % (name, package))
        for parent, dirs, files in os.walk(top):
            rel_parent = os.path.relpath(parent, ROOT).replace(os.sep, "/")
            dirs[:] = sorted(d for d in dirs if d != "__pycache__"
                             and rel_parent + "/" + d not in HOST_ONLY)
            found += [rel_parent + "/" + f for f in files
                      if f.endswith(".py") and rel_parent + "/" + f not in HOST_ONLY]
        parts = package.split("/")
        for i in range(1, len(parts)):  # hw/pebble needs hw/__init__.py too
            init = "/".join(parts[:i]) + "/__init__.py"
            if os.path.exists(os.path.join(ROOT, init)):
                found.append(init)
    return sorted(set(found))
