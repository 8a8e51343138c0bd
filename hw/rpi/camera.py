# The Raspberry Pi camera for the camera agent on CPython, through picamera2 (libcamera):
# SVGA JPEG snapshots from the main stream, and a small grayscale frame for motion detection
# from the low-resolution YUV stream's luma plane.
import io

from agent.simcamera import GRAY_SIZE

SIZE = (800, 600)
LORES = (320, 240)
# The camera agent's settings on a Pi: it has the RAM for the largest chunks, and fewer,
# larger chunk messages cost the gateway less per byte (bench/camera.py).
AGENT_CONFIG = {"chunk_size": 60 * 1024, "chunk_window": 64}


class PiCamera:
    def __init__(self, size=SIZE, lores=LORES):
        from picamera2 import Picamera2
        self.cam = Picamera2()
        self.cam.configure(self.cam.create_still_configuration(
            main={"size": size}, lores={"size": lores, "format": "YUV420"}))
        self.lores = lores
        self.cam.start()

    def gray(self):
        """GRAY_SIZE luma samples, taken evenly from the low-resolution stream."""
        yuv = self.cam.capture_array("lores")
        w, h = self.lores
        gw, gh = GRAY_SIZE
        return bytes(int(yuv[y * h // gh][x * w // gw]) for y in range(gh) for x in range(gw))

    def capture(self):
        out = io.BytesIO()
        self.cam.capture_file(out, format="jpeg")
        return out.getvalue()

    def close(self):
        self.cam.stop()
        self.cam.close()
