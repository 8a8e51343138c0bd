# Freeze the EdgeKeep agent into a custom MicroPython firmware. In your board's manifest:
#
#     include("$(PORT_DIR)/boards/manifest.py")
#     include("/path/to/edgekeep/firmware/manifest.py", board="pebble")
#
# then build the port as usual (e.g. make -C ports/esp32 BOARD=ESP32_GENERIC
# FROZEN_MANIFEST=/path/to/your/manifest.py). Frozen modules run from flash and leave the heap
# to data. main.py stays on the filesystem: tools/flash.py deploy writes it (and provision
# writes config.json and identity.json). The modules are those a bundle for the board holds
# (firmware/boards.py). MicroPython's manifest tool runs this file from its own directory.
import os
import sys

sys.path.insert(0, os.path.dirname(os.getcwd()))
from firmware.boards import source_files  # noqa: E402

for path in source_files(options.board or "esp32"):  # noqa: F821 (given by the manifest tool)
    module(path, base_path="..", opt=3)  # noqa: F821
