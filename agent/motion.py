# Motion triggers for the camera agent: a PIR sensor on a GPIO, or the difference between
# successive small grayscale frames. Each has check() -> True when there is motion now; the
# camera agent applies the cooldown.


class PIR:
    """A PIR module's output pin (HC-SR501 and alike: high while it senses motion)."""

    def __init__(self, pin):
        self.pin = pin

    def check(self):
        return self.pin.value() == 1


class FrameDiff:
    """Motion when more than `threshold` (a fraction) of the pixels of a small grayscale
    frame changed by more than `pixel_delta` since the previous frame.

    source.gray() returns the frame: width * height bytes, one per pixel. The first frame
    only sets the reference. Sensor noise stays below pixel_delta; lighting that drifts
    slowly is followed, since each frame is compared with the one before it.
    """

    def __init__(self, source, threshold=0.02, pixel_delta=24):
        self.source = source
        self.threshold = threshold
        self.pixel_delta = pixel_delta
        self.prev = None
        self.changed = 0.0   # fraction of pixels changed in the last comparison

    def check(self):
        frame = self.source.gray()
        prev = self.prev
        if prev is None or len(prev) != len(frame):
            self.prev = bytearray(frame)
            return False
        delta = self.pixel_delta
        n = 0
        for i in range(len(frame)):
            d = frame[i] - prev[i]
            if d > delta or -d > delta:
                n += 1
        prev[:] = frame
        self.changed = n / len(frame)
        return self.changed > self.threshold
