# Clips with pre-roll: the camera agent hands every frame (at clip_fps) to a recorder with
# whether there is motion now. Until motion, the last `preroll` seconds of frames wait in a
# ring; at motion the ring opens the clip, then frames go straight to its encoder until
# `postroll` seconds pass without motion or the clip reaches `clip_max` seconds.
#
# Encoders: AviWriter (agent/avi.py, MJPEG, MicroPython), Mp4Writer (H.264 in MP4 through
# PyAV, the simulated Pi camera), and on a Pi PiCamera2Recorder, where the camera's own
# H.264 encoder and ring (picamera2's CircularOutput2) do the work. Each finished encoder has
# close() -> content type, stream(write) writing the whole file, and remove(); AviWriter and
# Mp4Writer write that file (`path`) as they go, so a Follower can seal and send it while
# the clip records: both rewrite only the file's first bytes when they close (the AVI headers,
# the MP4 mdat box's size), which stay in the first chunk, sealed last.
#
# A clip's thumbnail (agent/camera.py seals it with the poster as the clip starts) is the
# poster downscaled by Pillow where it is installed (pillow_thumbnailer), or the camera's
# own (an ESP32-CAM's frame at the sensor's smallest size). See docs/camera.md.


class Follower:
    """Feeds an object Writer the bytes of a clip's file as its encoder appends them, from
    the second chunk on (Writer.hold_first: the first chunk, where the encoder patches its
    header at the end, is sealed last). A clip shorter than one chunk is never held."""

    def __init__(self, path, writer, buf):
        self.path = path
        self.w = writer
        self.pos = len(writer.buf)     # file offset of the next byte for the writer
        self.buf = buf

    def follow(self):
        """Take what the encoder has added to the file since the last call."""
        import os
        try:
            size = os.stat(self.path)[6]
        except OSError:
            return
        if size <= self.pos:
            return
        w, buf = self.w, self.buf
        if not w.held:
            w.hold_first()
        mv = memoryview(buf)
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            while self.pos < size:
                n = f.readinto(buf)
                if not n:
                    break
                n = min(n, size - self.pos)
                w.write(mv[:n])
                self.pos += n


class ClipRecorder:
    def __init__(self, open_encoder, fps, preroll, postroll, max_len):
        self.open_encoder = open_encoder  # () -> a fresh encoder
        self.pre = int(preroll * fps + 0.5)
        self.post = max(1, int(postroll * fps + 0.5))
        self.cap = max(self.pre + 1, int(max_len * fps + 0.5))
        self.ring = []
        self.enc = None
        self.frames = 0            # frames in the clip being recorded
        self.motion_at = 0         # index in the clip of the frame that started it
        self.calm = 0

    def recording(self):
        return self.enc is not None

    def add(self, frame, motion):
        """One frame; returns the finished encoder when the clip ends on it, else None."""
        enc = self.enc
        if enc is None:
            ring = self.ring
            ring.append(frame)
            if len(ring) > self.pre + 1:
                ring.pop(0)
            if not motion:
                return None
            enc = self.enc = self.open_encoder()
            self.motion_at = len(ring) - 1
            while ring:
                enc.add(ring.pop(0))  # each pre-roll frame is let go once encoded
            self.frames = self.motion_at + 1
            self.calm = 0
        else:
            enc.add(frame)
            self.frames += 1
            self.calm = 0 if motion else self.calm + 1
        if self.calm >= self.post or self.frames >= self.cap:
            self.enc = None
            return enc
        return None


THUMB_QUALITY = 70


def pillow_thumbnailer(width):
    """poster JPEG -> a JPEG `width` px wide (aspect kept) through Pillow; None where
    Pillow is missing (MicroPython)."""
    try:
        from PIL import Image
    except ImportError:
        return None

    def thumbnail(poster):
        import io
        img = Image.open(io.BytesIO(poster)).convert("RGB")
        img.thumbnail((width, width * img.size[1] // img.size[0] or 1))
        out = io.BytesIO()
        img.save(out, "JPEG", quality=THUMB_QUALITY)
        return out.getvalue()
    return thumbnail


class Mp4Writer:
    """H.264 in MP4 through PyAV (CPython): frames are PIL images or JPEG bytes. A plain MP4,
    `moov` at the end: at close the muxer goes back only to the `mdat` box's size, in the
    file's first 48 bytes. PyAV writes through a file object of ours, packet by packet (given
    a path, libavformat would hold the clip in its buffers), flushed after each frame."""

    def __init__(self, path, fps, bitrate=None):
        import av
        self.av = av
        self.path = path
        self.file = open(path, "wb")
        self.container = av.open(self.file, "w", format="mp4")
        self.fps = fps
        self.video = None
        self.bitrate = bitrate
        self.frames = 0

    def add(self, frame):
        if isinstance(frame, (bytes, bytearray)):
            import io

            from PIL import Image
            frame = Image.open(io.BytesIO(frame))
        if self.video is None:
            from fractions import Fraction
            # zerolatency: a packet a frame (no lookahead, no B-frames), so the file grows
            # as the clip records and its chunks can go out meanwhile
            s = self.video = self.container.add_stream("libx264", rate=Fraction(self.fps),
                                                       options={"tune": "zerolatency"})
            s.width, s.height = frame.size[0] & ~1, frame.size[1] & ~1  # yuv420p: even
            s.pix_fmt = "yuv420p"
            s.codec_context.time_base = self.tb = 1 / Fraction(self.fps)
            if self.bitrate:
                s.bit_rate = self.bitrate
        vf = self.av.VideoFrame.from_image(frame.convert("RGB"))
        vf.pts = self.frames
        vf.time_base = self.tb
        for packet in self.video.encode(vf):
            self.container.mux(packet)
        self.frames += 1
        self.file.flush()

    def close(self):
        if self.video is not None:
            for packet in self.video.encode():
                self.container.mux(packet)
        self.container.close()
        self.file.close()
        return "video/mp4"

    def stream(self, write):
        with open(self.path, "rb") as f:
            while True:
                block = f.read(65536)
                if not block:
                    break
                write(block)

    def remove(self):
        import os
        try:
            os.remove(self.path)
        except OSError:
            pass


class PiCamera2Recorder:
    """The recorder on a Raspberry Pi camera (CPython, picamera2): the ISP's H.264 encoder
    runs all the time into a CircularOutput2 holding `preroll` seconds; at motion the ring is
    opened into a PyavOutput (MP4), closed `postroll` seconds after the motion calms. Frames
    handed to add() are ignored: the encoder takes them from the camera itself."""

    def __init__(self, picam2, path, fps, preroll, postroll, max_len, bitrate=2000000):
        from picamera2.encoders import H264Encoder
        from picamera2.outputs import CircularOutput2
        self.picam2, self.path = picam2, path
        self.pre = int(preroll * fps + 0.5)
        self.post = max(1, int(postroll * fps + 0.5))
        self.cap = max(self.pre + 1, int(max_len * fps + 0.5))
        self.circular = CircularOutput2(buffer_duration_ms=int(preroll * 1000))
        picam2.start_recording(H264Encoder(bitrate=bitrate), self.circular)
        self.open = False
        self.frames = self.motion_at = self.calm = 0

    def recording(self):
        return self.open

    def add(self, frame, motion):
        from picamera2.outputs import PyavOutput
        if not self.open:
            if not motion:
                return None
            self.circular.open_output(PyavOutput(self.path))
            self.open = True
            self.frames = self.motion_at = self.pre
            self.calm = 0
        self.frames += 1
        self.calm = 0 if motion else self.calm + 1
        if self.calm >= self.post or self.frames >= self.cap:
            self.circular.close_output()
            self.open = False
            return _FileClip(self.path, "video/mp4")
        return None


class _FileClip:
    """A clip some other encoder already finished into a file."""

    def __init__(self, path, ctype):
        self.path, self.ctype = path, ctype

    def close(self):
        return self.ctype

    stream = Mp4Writer.stream
    remove = Mp4Writer.remove
