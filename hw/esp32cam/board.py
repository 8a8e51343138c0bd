# AI-Thinker ESP32-CAM (OV2640, 4 MB PSRAM): the camera through either MicroPython camera
# driver, and a PIR module on a free GPIO. JPEG at SVGA is 15-50 KB a frame and needs the
# PSRAM frame buffer.
#
# Drivers: lemariva/micropython-camera-driver (module-level camera.init/capture) and
# cnadler86/micropython-camera-API (camera.Camera class). Whichever the firmware has is used.
import machine

from agent.motion import PIR

PIR_PIN = 13      # free with the SD card in 1-bit mode (or unused); GPIO4 drives the flash LED
JPEG_QUALITY = 12  # lemariva's scale: 0 (best) .. 63; cnadler86's is 0 .. 100 (best)
# Clips (config.json "agent"): MJPEG in AVI. The pre-roll ring holds preroll * clip_fps + 1
# SVGA JPEGs in the PSRAM heap, 7 x 15-50 KB here; a clip of clip_max is at most 40 frames,
# 0.6-2 MB of flash twice over while it is sealed (scratch file, then its chunks).
CLIP_CONFIG = {"clip": "avi", "clip_fps": 2, "preroll": 3, "postroll": 5, "clip_max": 20,
               "objects_bytes": 2097152}


class LemarivaCamera:
    def __init__(self):
        import camera
        self.driver = camera
        camera.init(0, format=camera.JPEG, fb_location=camera.PSRAM)
        camera.framesize(camera.FRAME_SVGA)
        camera.quality(JPEG_QUALITY)

    def capture(self):
        return self.driver.capture()

    frame = capture


class CnadlerCamera:
    def __init__(self):
        from camera import Camera, FrameSize, PixelFormat
        self.cam = Camera(pixel_format=PixelFormat.JPEG, frame_size=FrameSize.SVGA,
                          jpeg_quality=85, fb_count=1)

    def capture(self):
        # A view of the driver's frame buffer: the agent chunks it before the next capture,
        # so the 15-50 KB frame is never copied into the heap.
        return self.cam.capture()

    def frame(self):
        # A clip's pre-roll ring keeps frames across captures: a copy (in PSRAM) is needed.
        return bytes(self.cam.capture())


def open_camera():
    import camera
    if hasattr(camera, "Camera"):
        return CnadlerCamera()
    return LemarivaCamera()


def open_pir(pin=PIR_PIN):
    return PIR(machine.Pin(pin, machine.Pin.IN))
