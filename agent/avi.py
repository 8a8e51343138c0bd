# An MJPEG clip in an AVI container (RIFF 'AVI ': hdrl, movi, idx1), for cameras that
# hand out JPEGs (the ESP32-CAM). The file on flash starts with HEADER_LEN bytes kept for the
# headers, then the frames are appended as movi chunks ('00dc') as they come; close()
# appends the index and writes the headers, which need the frame count and sizes, into their
# place. Only the first HEADER_LEN bytes are ever rewritten, so the camera may seal and send
# the rest while it records (agent/clip.py, Follower). RAM: 16 bytes of index a frame and one
# copy buffer; no frame is held after add() returns.
import os
import struct

_AVIF_HASINDEX = 0x10
_AVIIF_KEYFRAME = 0x10
_HDRL = 4 + (8 + 56) + (12 + (8 + 56) + (8 + 40))  # 'hdrl' avih strl(strh strf)
HEADER_LEN = 12 + 8 + _HDRL + 12                    # RIFF, LIST hdrl, LIST movi's head
CONTENT_TYPE = "video/x-msvideo"


def jpeg_size(jpeg):
    """(width, height) from a JPEG's start-of-frame segment."""
    i = 2
    n = len(jpeg)
    while i + 9 <= n:
        if jpeg[i] != 0xFF:
            raise ValueError("not a JPEG")
        m = jpeg[i + 1]
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", jpeg[i + 5:i + 9])
            return w, h
        i += 2 + (jpeg[i + 2] << 8 | jpeg[i + 3])
    raise ValueError("JPEG without a frame header")


class AviWriter:
    def __init__(self, path, fps):
        self.path = path
        self.fps = fps
        self.f = open(path, "wb")
        self.f.write(bytes(HEADER_LEN))
        self.frames = 0
        self.movi = 4            # 'movi' list size: its fourcc and the chunks so far
        self.largest = 0
        self.size = None         # (width, height), from the first frame
        self.idx = bytearray()
        self._hdr = bytearray(16)

    def add(self, jpeg):
        n = len(jpeg)
        if self.size is None:
            self.size = jpeg_size(jpeg)
        hdr = self._hdr
        struct.pack_into("<4sIII", hdr, 0, b"00dc", _AVIIF_KEYFRAME, self.movi, n)
        self.idx.extend(hdr)
        self.f.write(b"00dc")
        self.f.write(memoryview(hdr)[12:16])  # the size, as packed for the index
        self.f.write(jpeg)
        if n & 1:
            self.f.write(b"\x00")  # RIFF chunks are word aligned
        self.movi += 8 + n + (n & 1)
        self.frames += 1
        if n > self.largest:
            self.largest = n
        self.f.flush()  # the follower reads the file as it grows

    def close(self):
        """Append the index and write the headers into their place."""
        f = self.f
        f.write(struct.pack("<4sI", b"idx1", len(self.idx)))
        f.write(self.idx)
        f.seek(0)
        f.write(self.header())
        f.close()
        return CONTENT_TYPE

    def header(self):
        w, h = self.size or (0, 0)
        frames, fps = self.frames, self.fps
        riff = 4 + (8 + _HDRL) + (8 + self.movi) + (8 + len(self.idx))
        usec = int(1000000 / fps)
        return b"".join((
            struct.pack("<4sI4s", b"RIFF", riff, b"AVI "),
            struct.pack("<4sI4s", b"LIST", _HDRL, b"hdrl"),
            struct.pack("<4sI10I16x", b"avih", 56, usec, self.largest * (int(fps) + 1), 0,
                        _AVIF_HASINDEX, frames, 0, 1, self.largest, w, h),
            struct.pack("<4sI4s", b"LIST", 4 + (8 + 56) + (8 + 40), b"strl"),
            struct.pack("<4sI4s4sIHHIIIIIIIIhhhh", b"strh", 56, b"vids", b"MJPG", 0, 0, 0, 0,
                        1000, int(fps * 1000), 0, frames, self.largest, 0xFFFFFFFF, 0,
                        0, 0, w, h),
            struct.pack("<4sIIiiHH4sIiiII", b"strf", 40, 40, w, h, 1, 24, b"MJPG",
                        w * h * 3, 0, 0, 0, 0),
            struct.pack("<4sI4s", b"LIST", self.movi, b"movi"),
        ))

    def stream(self, write, buf=None):
        """Write the whole AVI file (once closed) to write()."""
        if buf is None:
            buf = bytearray(1024)
        mv = memoryview(buf)
        with open(self.path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                write(mv[:n])

    def remove(self):
        try:
            os.remove(self.path)
        except OSError:
            pass
