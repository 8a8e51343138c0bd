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
# Clips: H.264 in MP4 from the camera's own encoder, pre-roll in its ring (docs/camera.md).
CLIP_CONFIG = dict(AGENT_CONFIG, clip="picamera2", clip_fps=15)


class PiCamera:
    def __init__(self, size=SIZE, lores=LORES, video=False):
        from picamera2 import Picamera2
        self.cam = Picamera2()
        make = self.cam.create_video_configuration if video else \
            self.cam.create_still_configuration
        self.cam.configure(make(main={"size": size}, lores={"size": lores, "format": "YUV420"}))
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

    def frame(self):
        return None  # in clips, the encoder takes the frames from the camera itself

    def recorder(self, path, fps, preroll, postroll, max_len):
        """The clip recorder for the camera agent's clip "picamera2" (open with video=True)."""
        from agent.clip import PiCamera2Recorder
        return PiCamera2Recorder(self.cam, path, fps, preroll, postroll, max_len)

    def close(self):
        self.cam.stop()
        self.cam.close()
