# A simulated camera that emits real JPEGs: a still room that someone walks through every
# `period` seconds. The camera agent finds the walker by frame difference, as it would on a
# real camera: the schedule only moves the scene.
#
# Scene rendering uses Pillow (CPython only; imported when used). On MicroPython, Playback
# replays frames rendered beforehand with write_frames into the device's flash. Both hand
# clip frames (frame(): a JPEG) to the camera agent's clip recorder (agent/clip.py).
#
# The demo's camera (run_camera) also walks someone through on demand, when a file named
# `motion` appears in its directory, and keeps its last KEEP_CLIPS clips as it recorded
# them, in plaintext, in clips/<clip id>.<ext> beside it: what the owner's decryption must
# give back byte for byte.
import os

from agent import clock
from agent.camera import CameraAgent

SIZE = (800, 600)        # SVGA, the ESP32-CAM's usual snapshot size
GRAY_SIZE = (32, 24)     # the motion detector's frame
THUMB_SIZE = (160, 120)  # QQVGA, the ESP32-CAM's smallest JPEG frame: Playback's thumbnail
KEEP_CLIPS = 5           # clips the demo's camera keeps in plaintext, for comparison
CLIP_EXT = {"video/mp4": ".mp4", "video/x-msvideo": ".avi"}


class Scene:
    """The room at time t: a textured still background and, while walking, a figure."""

    def __init__(self, period=20.0, walk=4.0, offset=3.0, size=SIZE, quality=80, seed=1):
        from PIL import Image, ImageDraw, ImageFilter
        self.Image, self.ImageDraw = Image, ImageDraw
        self.period, self.walk, self.offset = period, walk, offset
        self.size, self.quality = size, quality
        w, h = size
        noise = Image.effect_noise(size, 40).filter(ImageFilter.GaussianBlur(1))
        room = Image.new("RGB", size, (120, 110, 95))
        d = ImageDraw.Draw(room)
        d.rectangle((0, int(h * 0.7), w, h), fill=(90, 70, 50))            # floor
        d.rectangle((int(w * 0.1), int(h * 0.15), int(w * 0.35), int(h * 0.5)),
                    fill=(170, 200, 230))                                   # window
        d.rectangle((int(w * 0.6), int(h * 0.25), int(w * 0.75), int(h * 0.7)),
                    fill=(70, 50, 40))                                      # door
        self.room = Image.blend(room, Image.merge("RGB", (noise,) * 3), 0.25)
        self.seed = seed
        self.extra = None        # when a walk asked for (walk_at) began

    def walk_at(self, t):
        """Someone walks through from t on, besides the schedule."""
        self.extra = t

    def walker(self, t):
        """Where the figure is at t (x fraction 0..1), or None while nobody is there."""
        if self.extra is not None and 0 <= t - self.extra < self.walk:
            return (t - self.extra) / self.walk
        if t < self.offset:
            return None
        phase = (t - self.offset) % self.period
        return phase / self.walk if phase < self.walk else None

    def render(self, t):
        img = self.room.copy()
        x = self.walker(t)
        if x is not None:
            w, h = self.size
            cx, top = int(-0.1 * w + x * 1.2 * w), int(h * 0.3)
            d = self.ImageDraw.Draw(img)
            d.ellipse((cx - w // 40, top - h // 12, cx + w // 40, top), fill=(220, 180, 150))
            d.rectangle((cx - w // 25, top, cx + w // 25, top + h // 2.6), fill=(40, 60, 140))
        return img

    def gray(self, t):
        return self.render(t).convert("L").resize(GRAY_SIZE).tobytes()

    def jpeg(self, t, size=None):
        import io
        img = self.render(t)
        if size:
            img = img.resize(size)
        out = io.BytesIO()
        img.save(out, "JPEG", quality=self.quality)
        return out.getvalue()


class SimCamera:
    """The camera interface (gray(), capture()) over a Scene, in real time. With `trigger`
    (a path), the file's appearing makes someone walk through now (it is then removed)."""

    def __init__(self, scene, trigger=None):
        self.scene = scene
        self.start = clock.monotonic()
        self.captured = []   # every JPEG handed out (tests compare exports with them)
        self.trigger = trigger

    def gray(self):
        t = clock.monotonic() - self.start
        if self.trigger and os.path.exists(self.trigger):
            os.remove(self.trigger)
            self.scene.walk_at(t)
        return self.scene.gray(t)

    def capture(self):
        jpeg = self.scene.jpeg(clock.monotonic() - self.start)
        self.captured.append(jpeg)
        return jpeg

    def frame(self):
        """A clip frame: the JPEG of now, not kept."""
        return self.scene.jpeg(clock.monotonic() - self.start)


def write_frames(path, scene, times):
    """Render frames for Playback: path/NNNN.gray, path/NNNN.jpg and, at THUMB_SIZE,
    path/NNNN.thumb.jpg for each time."""
    os.makedirs(path, exist_ok=True)
    for i, t in enumerate(times):
        with open("%s/%04d.gray" % (path, i), "wb") as f:
            f.write(scene.gray(t))
        with open("%s/%04d.jpg" % (path, i), "wb") as f:
            f.write(scene.jpeg(t))
        with open("%s/%04d.thumb.jpg" % (path, i), "wb") as f:
            f.write(scene.jpeg(t, THUMB_SIZE))


class Playback:
    """The camera interface over pre-rendered frames (runs on MicroPython): each gray()
    moves to the next frame, capture() returns the JPEG of the current one."""

    def __init__(self, path):
        self.path = path
        self.count = len([n for n in os.listdir(path) if n.endswith(".gray")])
        self.index = -1

    def gray(self):
        self.index = min(self.index + 1, self.count - 1)
        with open("%s/%04d.gray" % (self.path, self.index), "rb") as f:
            return f.read()

    def capture(self):
        with open("%s/%04d.jpg" % (self.path, max(self.index, 0)), "rb") as f:
            return f.read()

    frame = capture

    def thumbnail(self, poster):
        """The current frame at the sensor's smallest size, as an ESP32-CAM would take it
        (switching its frame size for one frame); the poster itself is not needed."""
        with open("%s/%04d.thumb.jpg" % (self.path, max(self.index, 0)), "rb") as f:
            return f.read()


class KeepingAgent(CameraAgent):
    """The camera agent that also keeps its clips, as recorded, in `keep` (KeptClip)."""
    keep = None

    def seal_clip(self, enc, seconds):
        if self.keep and self.clip_oid:
            enc = KeptClip(enc, self.keep, self.clip_oid)
        return CameraAgent.seal_clip(self, enc, seconds)


class KeptClip:
    """A clip encoder whose file is also copied, once finished, to keep/<oid><ext>; only the
    newest KEEP_CLIPS stay."""

    def __init__(self, enc, keep, oid):
        self.enc, self.keep, self.oid = enc, keep, oid

    def close(self):
        import shutil
        ctype = self.enc.close()
        os.makedirs(self.keep, exist_ok=True)
        name = os.path.join(self.keep, self.oid.hex() + CLIP_EXT.get(ctype, ".bin"))
        shutil.copyfile(self.enc.path, name + ".tmp")
        os.replace(name + ".tmp", name)
        kept = sorted((os.path.join(self.keep, n) for n in os.listdir(self.keep)),
                      key=os.path.getmtime)
        for old in kept[:-KEEP_CLIPS]:
            os.remove(old)
        return ctype

    def stream(self, write):
        self.enc.stream(write)

    def remove(self):
        self.enc.remove()


def run_camera(path, broker, config, duration, stopped, log=print):
    """One simulated camera: the real camera agent over paho-mqtt (the demo's camera). It
    uploads JPEG snapshots, or with config["clip"] = "mp4" the Pi profile's H.264 clips
    with pre-roll, each with its poster and thumbnail (`gateway demo --camera-clips`).
    Touching <path>/motion makes someone walk through now; <path>/clips/ keeps the last
    KEEP_CLIPS clips as recorded."""
    from agent.identity import Identity
    from agent.motion import FrameDiff
    from agent.objects import ObjectQueue
    from agent.sim import paho_transport
    from agent.spool import Spool
    ident = Identity.load(os.path.join(path, "identity.json"))
    transport = paho_transport(path, broker, ident)
    if config.get("clip"):
        config = dict({"chunk_size": 61440}, **config)
    camera = SimCamera(Scene(period=config.get("period", 20.0)), os.path.join(path, "motion"))
    agent = KeepingAgent(ident, transport, camera, FrameDiff(camera),
                         Spool(os.path.join(path, "spool"), config.get("spool_bytes", 65536)),
                         ObjectQueue(os.path.join(path, "objects"),
                                     config.get("objects_bytes",
                                                8388608 if config.get("clip") else 1048576)),
                         config, os.urandom, log=lambda m: log("[%s] %s" % (ident.hex, m)))
    agent.keep = os.path.join(path, "clips")
    try:
        agent.run(duration, stopped)
    finally:
        transport.close()
