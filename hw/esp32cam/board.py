# AI-Thinker ESP32-CAM (OV2640, 4 MB PSRAM): the camera through either MicroPython camera
# driver, and a PIR module on a free GPIO. JPEG at SVGA is 15-50 KB a frame and needs the
# PSRAM frame buffer.
#
# Drivers: lemariva/micropython-camera-driver (module-level camera.init/capture) and
# cnadler86/micropython-camera-API (camera.Camera class). Whichever the firmware has is used.
#
# thumbnail() takes a clip's thumbnail as a QQVGA frame (160x120, 2-5 KB) rather than
# downscaling the poster, which MicroPython cannot do: the sensor switches to QQVGA for one
# frame and back. Both drivers run esp32-camera with one frame buffer, refilled as soon as it
# is handed back (CAMERA_GRAB_WHEN_EMPTY), so the first frame after a switch is still of the
# old size and is dropped: four captures in all, about 0.3 s.
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
        # The size at init, not by framesize() after: the frame init grabs is the first
        # capture's, and at the default VGA the first snapshot would be VGA.
        camera.init(0, format=camera.JPEG, framesize=camera.FRAME_SVGA, fb_location=camera.PSRAM)
        camera.quality(JPEG_QUALITY)

    def capture(self):
        return self.driver.capture()

    frame = capture

    def thumbnail(self, poster):
        cam = self.driver
        return _small_frame(cam.capture, lambda: cam.framesize(cam.FRAME_QQVGA),
                            lambda: cam.framesize(cam.FRAME_SVGA))


class CnadlerCamera:
    def __init__(self):
        from camera import Camera, FrameSize, PixelFormat
        self.sizes = FrameSize
        self.cam = Camera(pixel_format=PixelFormat.JPEG, frame_size=FrameSize.SVGA,
                          jpeg_quality=85, fb_count=1)

    def capture(self):
        # A view of the driver's frame buffer: the agent chunks it before the next capture,
        # so the 15-50 KB frame is never copied into the heap.
        return self.cam.capture()

    def frame(self):
        # A clip's pre-roll ring keeps frames across captures: a copy (in PSRAM) is needed.
        return bytes(self.cam.capture())

    def thumbnail(self, poster):
        cam, sizes = self.cam, self.sizes
        # set_frame_size: the frame_size property of newer releases, kept as a method
        return _small_frame(cam.capture, lambda: cam.set_frame_size(sizes.QQVGA),
                            lambda: cam.set_frame_size(sizes.SVGA))


def _small_frame(capture, small, full):
    """One frame at the small size, copied out of the frame buffer (bytes), or None if the
    camera gave none; the camera is back at full size, its next capture a full frame, even
    if this failed. The dropped frames are not kept: at most one SVGA frame is held at a
    time (lemariva's capture copies it into the heap, cnadler86's is a view of the buffer)."""
    small()
    try:
        capture()                  # grabbed at full size before the switch
        frame = capture()
        thumb = bytes(frame) if frame else None
        frame = None
    finally:
        full()
        capture()                  # grabbed at the small size
    return thumb


def open_camera():
    import camera
    if hasattr(camera, "Camera"):
        return CnadlerCamera()
    return LemarivaCamera()


def open_pir(pin=PIR_PIN):
    return PIR(machine.Pin(pin, machine.Pin.IN))
