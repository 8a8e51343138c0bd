# The little of machine that device code needs off-board: an identity and a reset.
import hashlib

import _ekhost


def unique_id():
    """6 bytes (like an ESP32's MAC), fixed for the device directory on the host."""
    return hashlib.sha256(_ekhost.device_path()).digest()[:6]


def reset():
    """Ends the run with host.mjs's EXIT_RESET status; the launcher may start it again."""
    _ekhost.exit(_ekhost.EXIT_RESET)
