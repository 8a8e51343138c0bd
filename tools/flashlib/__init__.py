"""tools/flash.py's parts: device.py (a MicroPython board over mpremote's serial transport),
provision.py (keys and config), deploy.py (signed bundles), progress.py (progress bars or
lines), ports.py (serial ports and running virtual devices)."""


class FlashError(Exception):
    """A failure the user can fix: str() says what happened, .fix what to do about it."""

    def __init__(self, message, fix):
        super().__init__(message)
        self.fix = fix
