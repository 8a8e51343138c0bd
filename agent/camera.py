# The camera agent: on motion, capture a JPEG snapshot or a short burst clip, or record a
# video clip with pre-roll (agent/clip.py, docs/camera.md), encrypt it chunk by chunk onto
# flash, seal one signed manifest, and upload the chunks resumably.
#
# It is the tracker's Agent (agent/device.py) with a camera instead of sensors: manifests
# and status messages travel through the Spool with their sequence numbers and acks; the
# chunks of the oldest queued object follow its manifest on the same connection (or go once
# it is acked), and are resent only where the gateway's chunk ack (ek/<id>/down/chunks)
# shows a hole. After a reconnect or a restart the agent first asks the gateway what it
# holds (a chunk message without a chunk).
#
# A clip's chunks go out while it records, before its manifest (the gateway holds them
# pending): each is published as it is sealed, at most chunk_window unacked; its first chunk,
# where the container's header is patched at the end, is sealed and sent after the manifest,
# with whatever did not go out live (the agent asks the gateway what it holds first).
#
# A clip also gets a poster (the frame that started it) and a thumbnail, each its own small
# object whose manifest names the clip (`of`); they are sealed as the clip starts, so they
# are queued, and shown on the Camera page, before the clip itself (docs/camera.md).
import gc
import time

from agent import cbor, clock
from agent.device import Agent
from agent.heap import collect
from agent.objects import (
    CACK_ID,
    CACK_RANGES,
    CACK_STATE,
    CACK_VERSION,
    COMPLETE,
    KIND_CHUNK,
    KIND_MANIFEST,
    OID_LEN,
    PARTIAL,
    PENDING,
    UNKNOWN,
    check_chunk_size,
    manifest,
)
from agent.proto import VERSION, down_topic, up_topic

CAMERA_DEFAULTS = {
    "frame_interval": 0.5,    # s between motion checks
    "cooldown": 10,           # s after a capture before motion triggers again
    "frames": 1,              # 1: a JPEG snapshot; more: a clip of that many JPEGs
    "frame_gap": 0.2,         # s between the frames of a clip
    "chunk_size": 4096,       # plaintext bytes per chunk (fits the device's RAM)
    "chunk_window": 16,       # chunks in flight without an ack
    "event": "motion",
    # Clips (docs/camera.md): "" takes snapshots as above; "avi" records MJPEG in AVI (the
    # camera's capture() JPEGs), "mp4" H.264 in MP4 (PyAV), "picamera2" the Pi's encoder.
    "clip": "",
    "clip_fps": 5,            # frames a second, motion checked on each
    "preroll": 3,             # s of frames before the motion that the clip starts with
    "postroll": 5,            # s without motion that end the clip
    "clip_max": 30,           # s, the longest clip
    "poster": True,           # a clip's poster and thumbnail objects, sealed as it starts
    "thumb_width": 160,       # px, a thumbnail's width when the agent downscales (Pillow)
}
UPLOAD_POLL = 0.01          # s between looks for chunk acks while uploading
SNAPSHOT = "image/jpeg"
CLIP = "video/x-motion-jpeg"  # the JPEGs one after the other, as MJPEG streams carry them
POSTER = "poster"             # the events of a clip's poster and thumbnail objects
THUMBNAIL = "thumbnail"


class Upload:
    """What the agent knows of one object's upload in this session."""

    def __init__(self, entry, session):
        self.entry = entry
        self.session = session
        self.have = None          # bytearray flag per chunk the gateway holds; None: ask
        self.asked = None         # when the last query went out
        self.sent = {}            # chunk index -> when it was sent


class CameraAgent(Agent):
    def __init__(self, identity, transport, camera, detector, spool, objects, config,
                 urandom, firmware="0.1.0", log=print):
        cfg = dict(CAMERA_DEFAULTS)
        cfg.update(config)
        check_chunk_size(cfg["chunk_size"])  # at boot, not at the first motion
        Agent.__init__(self, identity, transport, None, spool, cfg, urandom, firmware, log)
        self.camera = camera
        self.detector = detector
        self.objects = objects
        self.urandom = urandom
        self.chunks_topic = down_topic(identity.hex, "chunks")
        self.up_topic = up_topic(identity.hex, KIND_CHUNK)
        self.upload = None
        self.captures = 0
        self.chunks_sent = 0      # chunk publishes, resends included
        self.quiet_until = clock.monotonic()
        self.next_frame = clock.monotonic()
        self.recorder = None
        self.clip_path = objects.path + ".clip"  # scratch file of the clip being recorded
        self.clip_oid = None      # the id of the clip being recorded (its poster's `of`)
        self.live = None          # the Follower sealing the clip being recorded, if any
        self.live_inflight = {}   # its chunks sent and not yet held by the gateway: when sent
        self.live_held = bytearray()  # a flag per chunk of it the gateway holds pending
        self.live_session = None
        self.thumbnailer = None
        if cfg["clip"]:
            self.recorder = self._recorder(cfg)
            if cfg["poster"]:
                self.thumbnailer = self._thumbnailer(cfg)
        for e in list(objects.entries):
            if e.seq > spool.last_seq:  # power lost before its manifest was spooled
                objects.remove(e)

    # -- the loop --------------------------------------------------------------

    def _recorder(self, cfg):
        from agent.clip import ClipRecorder
        kind, fps = cfg["clip"], cfg["clip_fps"]
        if kind == "picamera2":
            return self.camera.recorder(self.clip_path, fps, cfg["preroll"], cfg["postroll"],
                                        cfg["clip_max"])
        if kind == "avi":
            from agent.avi import AviWriter

            def make():
                return AviWriter(self.clip_path, fps)
        elif kind == "mp4":
            from agent.clip import Mp4Writer

            def make():
                return Mp4Writer(self.clip_path, fps)
        else:
            raise ValueError("clip must be '', 'avi', 'mp4' or 'picamera2', not %r" % kind)
        return ClipRecorder(make, fps, cfg["preroll"], cfg["postroll"], cfg["clip_max"])

    def _thumbnailer(self, cfg):
        """What makes a clip's thumbnail from its poster: the camera's own thumbnail() (on
        an ESP32-CAM, a frame at the sensor's smallest size), else Pillow's downscale where
        it is installed (CPython), else nothing: the poster stands in for it."""
        own = getattr(self.camera, "thumbnail", None)
        if own is not None:
            return own
        from agent.clip import pillow_thumbnailer
        return pillow_thumbnailer(cfg["thumb_width"])

    def clip_frame(self):
        """One frame for the clip recorder, motion checked; seals the clip when it ends, and
        its poster and thumbnail when it starts."""
        rec = self.recorder
        motion = self.detector.check()
        was = rec.recording()
        motion = motion and (was or clock.monotonic() >= self.quiet_until)
        frame = self.camera.frame()
        enc = rec.add(frame, motion)
        gc.collect()
        if not was and (enc is not None or rec.recording()):
            self.clip_oid = self.urandom(OID_LEN)
            if self.cfg["poster"]:
                self.seal_poster(frame, self.clip_oid)
            if enc is None:
                self.start_live(getattr(rec, "enc", None))
        frame = None
        if self.live is not None and enc is None:
            self.follow_live()
        if enc is None:
            return None
        oid = self.seal_clip(enc, rec.frames / self.cfg["clip_fps"])
        self.quiet_until = clock.monotonic() + self.cfg["cooldown"]
        return oid

    def step(self):
        now = clock.monotonic()
        if self.recorder is not None:
            if now >= self.next_frame:
                period = 1 / self.cfg["clip_fps"]
                self.next_frame += period
                if self.next_frame < now:
                    self.next_frame = now + period  # fell behind: the clip plays faster
                self.clip_frame()
        elif now >= self.next_frame:
            self.next_frame = now + self.cfg["frame_interval"]
            if self.detector.check() and now >= self.quiet_until:
                self.capture()
                self.quiet_until = clock.monotonic() + self.cfg["cooldown"]
        if self.status_due:
            self.seal_status()
        now = clock.monotonic()
        self.pump(now)
        wait = self.next_frame - clock.monotonic()
        if self.pump_chunks(now):
            return min(wait, UPLOAD_POLL)  # acks free the window: look for them often
        return wait

    def flush(self, timeout):
        """Deliver every queued message and object."""
        end = clock.monotonic() + timeout
        while (self.spool.pending() or self.objects.entries) and clock.monotonic() < end:
            collect()  # as the loop does: a port that collects only when asked needs it
            now = clock.monotonic()
            self.pump(now)
            self.pump_chunks(now)
            self.transport.poll(0.2)

    # -- producing -------------------------------------------------------------

    def capture(self):
        """Capture, encrypt and queue one object; its manifest goes into the spool."""
        t = int(clock.unix_time())
        frames = self.cfg["frames"]
        oid = self.urandom(OID_LEN)
        w = self.objects.begin(oid, self.cfg["chunk_size"], self.identity.data_key, self.nonces,
                               self.urandom)
        try:
            for i in range(frames):
                if i:
                    time.sleep(self.cfg["frame_gap"])
                w.write(self.camera.capture())  # the frame is dropped as soon as it is chunked
                gc.collect()
            hashes = w.close()
        except (OSError, ValueError) as e:
            w.abort()
            self.objects.drops += 1
            self.log("capture dropped: %s" % e)
            return None
        return self._seal(w, t, CLIP if frames > 1 else SNAPSHOT, hashes)

    def seal_poster(self, frame, of):
        """Queue the frame that started clip `of` as its poster, and its thumbnail; either
        is skipped (and logged) if it cannot be made, the clip goes on regardless."""
        t = int(clock.unix_time())
        if frame is None:
            frame = self.camera.capture()  # the encoder takes the clip's frames (picamera2)
        self.seal_bytes(frame, t, SNAPSHOT, POSTER, of)
        if self.thumbnailer is None:
            return
        try:
            thumb = self.thumbnailer(frame)
        except (OSError, ValueError) as e:
            self.log("thumbnail not made: %s" % e)
            return
        frame = None
        gc.collect()
        if thumb:
            self.seal_bytes(thumb, t, SNAPSHOT, THUMBNAIL, of)

    def seal_bytes(self, data, t, ctype, event, of):
        """Queue data held in memory (a poster, a thumbnail) as one object of clip `of`."""
        w = None
        try:
            w = self.objects.begin(self.urandom(OID_LEN), self.cfg["chunk_size"],
                                   self.identity.data_key, self.nonces, self.urandom)
            w.write(data)
            hashes = w.close()
        except (OSError, ValueError) as e:
            if w is not None:
                w.abort()
            self.objects.drops += 1
            self.log("%s dropped: %s" % (event, e))
            return None
        gc.collect()
        return self._seal(w, t, ctype, hashes, event, of)

    def start_live(self, enc):
        """Seal the clip now starting as it records, from an encoder writing a file."""
        path = getattr(enc, "path", None)
        if path is None:
            return  # picamera2: the clip is sealed when it ends
        from agent.clip import Follower
        try:
            w = self.objects.begin(self.clip_oid, self.cfg["chunk_size"], self.identity.data_key,
                                   self.nonces, self.urandom)
        except (OSError, ValueError) as e:
            self.log("clip not sealed as it records: %s" % e)
            return
        w.on_sealed = self.send_live
        self.live = Follower(path, w, bytearray(1024))
        self.live_inflight = {}
        self.live_held = bytearray()

    def follow_live(self):
        """Seal and send the chunks the clip being recorded has grown by; on a flash error
        or a clip over the queue's budget, stop (it is sealed whole, or dropped, at its end)."""
        try:
            self.live.follow()
        except (OSError, ValueError) as e:
            self.log("clip no longer sealed as it records: %s" % e)
            self.live.w.abort()
            self.live = None
        gc.collect()

    def send_live(self, index, msg):
        """Publish a chunk of the clip being recorded as it is sealed, before the manifest
        (the gateway holds it pending): at most chunk_window unacked; one not sent now goes
        after the manifest."""
        t = self.transport
        if not t.connected:
            return
        if self.live_session != t.session:
            self.live_session = t.session
            self.live_inflight = {}
        if len(self.live_inflight) >= self.cfg["chunk_window"]:
            return
        if self._publish(msg):
            self.chunks_sent += 1
            self.live_inflight[index] = clock.monotonic()
            self.live.w.streamed = True

    def seal_clip(self, enc, seconds):
        """Queue a finished clip (its encoder's file) as one object, like a capture; its id
        is the one its poster and thumbnail name."""
        t = int(clock.unix_time() - seconds)  # the capture time: the clip's first frame
        oid = self.clip_oid or self.urandom(OID_LEN)
        self.clip_oid = None
        live = self.live
        w = None
        try:
            ctype = enc.close()
            hashes = self._finish_live(live, enc) if live is not None else None
            if hashes is None:
                w = self.objects.begin(oid, self.cfg["chunk_size"], self.identity.data_key,
                                       self.nonces, self.urandom)
                enc.stream(self._chunked(w))
                hashes = w.close()
            else:
                w = live.w
        except (OSError, ValueError) as e:
            if w is not None:
                w.abort()
            if live is not None:
                live.w.abort()  # nothing if sealed whole or aborted already
            self.objects.drops += 1
            self.log("clip dropped: %s" % e)
            return None
        finally:
            self.live = None
            enc.remove()
        gc.collect()
        return self._seal(w, t, ctype, hashes)

    def _finish_live(self, live, enc):
        """The chunk hashes of a clip sealed as it recorded, its first chunk sealed now; None
        if it is to be sealed whole instead (shorter than a chunk, or its file changed after
        the first chunk), its writer dropped."""
        w = live.w
        try:
            live.follow()
            if w.held:
                return w.close_held(enc.stream)
        except (OSError, ValueError) as e:
            self.log("clip sealed again whole: %s" % e)
        w.abort()
        return None

    @staticmethod
    def _chunked(w):
        def write(data):
            n = w.count
            w.write(data)
            if w.count != n:
                gc.collect()  # a chunk sealed: its garbage goes before the next
        return write

    def _seal(self, w, t, ctype, hashes, event=None, of=None):
        """Sign the object's manifest and queue both; `of`: the clip a poster belongs to."""
        oid = w.oid
        seq = self.spool.next_seq()
        msg = manifest(self.identity, seq, self.spool.base(), t, oid, event or self.cfg["event"],
                       ctype, w.size, self.cfg["chunk_size"], hashes, w.wrapped_key, w.commit,
                       of)
        self.objects.commit(w, seq, of)
        if w.streamed:
            self._resume_live(self.objects.find(oid))
        self.spool.append(seq, KIND_MANIFEST.encode() + msg)
        if of is None:
            self.captures += 1    # posters and thumbnails belong to a capture, are none
        gc.collect()
        return oid

    def _resume_live(self, entry):
        """The upload of a clip whose chunks went out as it recorded: in the same session it
        goes on from what the gateway said it holds and what is still in flight; else the
        agent asks first."""
        if entry is None:
            return
        entry.unsent = False
        if self.objects.oldest() is not entry:
            return  # its turn comes after the objects before it
        t = self.transport
        if not t.connected or self.live_session != t.session:
            return
        up = self.upload = Upload(entry, t.session)
        up.have = bytearray(entry.count)
        for i in range(min(len(self.live_held), entry.count)):
            up.have[i] = self.live_held[i]
        up.sent = self.live_inflight
        self.live_inflight = {}
        self.live_held = bytearray()

    # -- delivering chunks -------------------------------------------------------

    def pump_chunks(self, now):
        """Send what the oldest object's upload needs; True while one is under way."""
        t = self.transport
        entry = self.objects.oldest()
        if entry is None or not t.connected or not self._manifest_out(entry):
            return False  # the gateway learns of an object from its manifest first
        up = self.upload
        if up is None or up.entry is not entry or up.session != t.session:
            up = self.upload = Upload(entry, t.session)
            if entry.unsent:
                up.have = bytearray(entry.count)  # nothing to ask about: none went out yet
        timeout = self.cfg["ack_timeout"]
        if up.have is None:
            if up.asked is None or now - up.asked >= timeout:
                self._publish(cbor.dumps([entry.oid]))
                up.asked = now
            return True
        in_flight = 0
        for i in range(entry.count):
            if up.have[i]:
                continue
            at = up.sent.get(i)
            if at is not None and now - at < timeout:
                in_flight += 1
                continue
            if in_flight >= self.cfg["chunk_window"]:
                break
            if not self._publish(self.objects.read(entry, i)):
                break
            self.chunks_sent += 1
            entry.unsent = False
            up.sent[i] = now
            in_flight += 1
        return True

    def _manifest_out(self, entry):
        """Whether the gateway has, or will see before any chunk, the object's manifest:
        acked, or published in this session (MQTT keeps a session's messages in order)."""
        return entry.seq <= self.spool.acked or entry.seq in self.sent

    def _publish(self, payload):
        try:
            self.transport.publish(self.up_topic, payload)
            return True
        except OSError as e:
            self.log("publish failed: %s" % e)
            return False

    def on_message(self, topic, payload):
        if topic != self.chunks_topic:
            return Agent.on_message(self, topic, payload)
        why = self.on_chunk_ack(payload)
        if why:
            self.bad_downlink(topic, why)

    def on_chunk_ack(self, payload):
        """Apply a chunk ack {0: 1, 1: oid, 2: [first, last, ...], 3: state}; returns why it
        is malformed, or None. An ack for an object no longer queued is no error."""
        try:
            ack = cbor.loads(payload)
        except ValueError as e:
            return e
        if not isinstance(ack, dict) or ack.get(CACK_VERSION) != VERSION:
            return "not a chunk ack map of version 1"
        oid, ranges, state = ack.get(CACK_ID), ack.get(CACK_RANGES), ack.get(CACK_STATE)
        if not isinstance(oid, bytes) or len(oid) != OID_LEN:
            return "object id is not %d bytes" % OID_LEN
        if state not in (PARTIAL, COMPLETE, UNKNOWN, PENDING) or isinstance(state, bool):
            return "state %r is not 0, 1, 2 or 3" % (state,)
        if not isinstance(ranges, list) or len(ranges) % 2:
            return "ranges is not a list of [first, last] pairs"
        for k in range(0, len(ranges), 2):
            first, last = ranges[k], ranges[k + 1]
            if not (_is_uint(first) and _is_uint(last) and first <= last):
                return "range %r..%r is not 0 <= first <= last" % (first, last)
        live = self.live
        if live is not None and live.w.oid == oid:
            held = self.live_held
            for k in range(0, len(ranges), 2):  # held pending: the window moves on
                last = min(ranges[k + 1], live.w.count - 1)
                if last >= len(held):
                    held.extend(bytes(last + 1 - len(held)))
                for i in range(ranges[k], last + 1):
                    self.live_inflight.pop(i, None)
                    held[i] = 1
            return None
        entry = self.objects.find(oid)
        if entry is None:
            return None
        if state == UNKNOWN and entry.seq > self.spool.acked:
            return None  # the manifest is still on its way: the chunks go again after ack_timeout
        if state == COMPLETE or state == UNKNOWN:
            if state == UNKNOWN:
                self.objects.drops += 1
                self.log("gateway does not know object %s: dropped" % oid)
            self.objects.remove(entry)
            self.upload = None
            return None
        up = self.upload
        if up is None or up.entry is not entry:
            return None
        if up.have is None:
            up.have = bytearray(entry.count)
        for k in range(0, len(ranges), 2):
            for i in range(ranges[k], min(ranges[k + 1] + 1, entry.count)):
                up.have[i] = 1
                up.sent.pop(i, None)
        return None


def _is_uint(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0
