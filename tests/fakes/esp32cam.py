"""Fakes of the ESP32-CAM's hardware as MicroPython sees it, for CPython tests of
hw/esp32cam/board.py: the `camera` module of either MicroPython camera driver over one fake
OV2640 that returns real JPEGs of the frame size set, and `machine` (Pin) for the PIR.

    lemariva_module(sensor)   lemariva/micropython-camera-driver: camera.init, framesize,
                              quality, capture (a copy of the frame: bytes)
    cnadler_module(sensor)    cnadler86/micropython-camera-API: camera.Camera, whose capture()
                              is a memoryview of the frame buffer, overwritten by the next one
    machine_module()          machine.Pin

The sensor behaves as esp32-camera does with one frame buffer in CAMERA_GRAB_WHEN_EMPTY mode
(both drivers' default on the ESP32): the buffer is filled again as soon as the driver hands
it back, at the frame size set at that moment, and a capture gives the frame it holds.
lemariva's capture copies the frame and hands the buffer back at once; cnadler86's hands it
back at the next capture, or when the frame size is set (before setting it). Either way the
first capture after a frame size change is still of the old size.
"""
import types

from agent.simcamera import Scene

# esp32-camera's framesize_t (cnadler86's FrameSize has the same numbers)
QQVGA, QVGA, VGA, SVGA = 1, 6, 10, 11
FB_BYTES = 256 * 1024    # the frame buffer the driver allocates in PSRAM at init
SIZES = {QQVGA: (160, 120), QVGA: (320, 240), VGA: (640, 480), SVGA: (800, 600)}


class FakeOV2640:
    """The sensor and its one frame buffer."""

    def __init__(self):
        self.scene = Scene(offset=0, walk=4, period=100)
        self.framesize = None
        self.quality = None
        self.buffer = bytearray(FB_BYTES)  # the frame buffer; a grab overwrites it in place
        self.length = 0
        self.grabs = 0               # frames the sensor took
        self.fail = 0                # captures to fail, as on a camera time-out

    def start(self, framesize):
        self.framesize = framesize
        self.grab()

    def grab(self):
        jpeg = self.scene.jpeg(0.1 * self.grabs, SIZES[self.framesize])
        self.grabs += 1
        if len(jpeg) > len(self.buffer):
            raise AssertionError("a %d-byte JPEG overflows the frame buffer" % len(jpeg))
        self.buffer[:len(jpeg)] = jpeg
        self.length = len(jpeg)

    def set_framesize(self, framesize):
        if framesize not in SIZES:
            raise ValueError("Invalid setting for frame_size")
        self.framesize = framesize

    def frame(self):
        """The frame in the buffer, a view of it; None if the capture failed."""
        if self.fail:
            self.fail -= 1
            return None
        return memoryview(self.buffer)[:self.length]

    def hand_back(self):
        """The driver returns the buffer: the sensor fills it with a frame of now."""
        self.grab()


def lemariva_module(sensor):
    cam = types.ModuleType("camera")
    cam.JPEG, cam.PSRAM = 3, 1
    cam.FRAME_QQVGA, cam.FRAME_QVGA, cam.FRAME_VGA, cam.FRAME_SVGA = QQVGA, QVGA, VGA, SVGA

    def init(n, format=None, fb_location=None, framesize=VGA, **pins):
        sensor.start(framesize)

    def quality(q):
        sensor.quality = q

    cam.init, cam.quality = init, quality
    cam.framesize = lambda size: sensor.set_framesize(size)

    def capture():
        frame = sensor.frame()
        if frame is None:
            return False           # what the driver returns when esp_camera_fb_get fails
        jpeg = bytes(frame)
        sensor.hand_back()
        return jpeg

    cam.capture = capture
    return cam


def cnadler_module(sensor):
    cam = types.ModuleType("camera")
    cam.FrameSize = types.SimpleNamespace(QQVGA=QQVGA, QVGA=QVGA, VGA=VGA, SVGA=SVGA)
    cam.PixelFormat = types.SimpleNamespace(JPEG=4, RGB565=0)

    class Camera:
        def __init__(self, pixel_format=0, frame_size=QVGA, jpeg_quality=85, fb_count=1):
            sensor.quality = jpeg_quality
            sensor.start(frame_size)
            self.held = False

        def capture(self):
            self._give_back()
            frame = sensor.frame()
            self.held = frame is not None
            return frame           # None when the capture failed

        def set_frame_size(self, value):
            self._give_back()      # esp_camera_return_all(), then the sensor's new size
            sensor.set_framesize(value)

        def _give_back(self):
            if self.held:
                self.held = False
                sensor.hand_back()

        def get_frame_size(self):
            return sensor.framesize

    cam.Camera = Camera
    return cam


def machine_module():
    machine = types.ModuleType("machine")

    class Pin:
        IN, OUT = 1, 3

        def __init__(self, pin, mode=None):
            self.pin, self.mode, self.level = pin, mode, 0

        def value(self):
            return self.level

    machine.Pin = Pin
    return machine
