"""Evidence files: a camera object's plaintext with a C2PA manifest whose EdgeKeep assertion
proves it against the chain (docs/evidence.md).

This is the pure part a verifier needs besides the chain: the assertion's form, and the
media bytes the device committed to, recovered from the file by undoing what embedding the
C2PA manifest did (a JPEG's APP11 segments; an MP4's `uuid` box and the chunk offsets that
moved with it).
"""
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LABEL = "org.edgekeep.evidence"      # the assertion's label in the C2PA manifest
FORMAT = "edgekeep-evidence/1"

# The C2PA manifest store's JUMBF type (ISO 19566-5), and an MP4's C2PA `uuid` box's UUID.
C2PA_JUMBF_TYPE = bytes.fromhex("6332706100110010800000aa00389b71")
C2PA_BMFF_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")


class EvidenceError(ValueError):
    """The file or its assertion is not what an evidence file holds."""


@dataclass(frozen=True)
class Assertion:
    device: str              # 16 hex
    public_key: bytes        # 65-byte SEC1 point
    oid: str                 # 16 hex
    type: str                # the media type
    commit: bytes            # 32 bytes, as in the signed manifest
    opening: bytes           # 32 bytes
    content_key: bytes | None
    proof: dict[str, Any]    # an edgekeep-proof/1 object of the manifest message
    anchor: dict[str, Any]   # block, block_hash, transaction


def _hex(d: Mapping[str, Any], name: str, size: int | None = None) -> bytes:
    value = d.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or (size is not None and len(raw) != size):
        raise EvidenceError("assertion field %s is not %s hex" % (
            name, "%d-byte" % size if size else "a"))
    return raw


def parse_assertion(d: Any) -> Assertion:
    """The EdgeKeep assertion's fields, checked for form; EvidenceError says which is wrong."""
    if not isinstance(d, Mapping) or d.get("format") != FORMAT:
        raise EvidenceError("not an EdgeKeep evidence assertion (format %r)"
                            % (d.get("format") if isinstance(d, Mapping) else None))
    proof, anchor = d.get("proof"), d.get("anchor")
    if not isinstance(proof, dict) or not isinstance(anchor, dict):
        raise EvidenceError("assertion without its proof or anchor object")
    if not (isinstance(anchor.get("block"), int) and isinstance(anchor.get("transaction"), str)):
        raise EvidenceError("assertion anchor without block and transaction")
    if not isinstance(d.get("type"), str):
        raise EvidenceError("assertion field type is not text")
    key = _hex(d, "content_key", 16) if d.get("content_key") is not None else None
    return Assertion(_hex(d, "device", 8).hex(), _hex(d, "public_key", 65),
                     _hex(d, "object", 8).hex(), d["type"], _hex(d, "commit", 32),
                     _hex(d, "opening", 32), key, proof, anchor)


def assertion_data(a: Assertion) -> dict[str, Any]:
    """The assertion as the C2PA manifest carries it (JSON: bytes as lowercase hex)."""
    d: dict[str, Any] = {
        "format": FORMAT, "device": a.device, "public_key": a.public_key.hex(),
        "object": a.oid, "type": a.type, "commit": a.commit.hex(), "opening": a.opening.hex()}
    if a.content_key is not None:
        d["content_key"] = a.content_key.hex()
    d["proof"], d["anchor"] = a.proof, a.anchor
    return d


# -- the media without the C2PA manifest --------------------------------------------------

def media_of(ctype: str, data: bytes) -> bytes:
    """The media as the device captured it: the file with its C2PA manifest taken out."""
    if ctype == "image/jpeg":
        return _jpeg_without_c2pa(data)
    if ctype == "video/mp4":
        return _mp4_without_c2pa(data)
    raise EvidenceError("no evidence format for %s (JPEG and MP4 only)" % ctype)


def _jpeg_without_c2pa(data: bytes) -> bytes:
    """Drop the APP11 (JPEG XT / JUMBF) segments of the C2PA manifest store: the first of
    a box instance names the store's JUMBF type, the rest continue the same instance."""
    if data[:2] != b"\xff\xd8":
        raise EvidenceError("not a JPEG (no SOI)")
    out, at, c2pa = bytearray(data[:2]), 2, set()
    while True:
        if at + 4 > len(data) or data[at] != 0xFF:
            raise EvidenceError("JPEG segment at %d is cut short or malformed" % at)
        marker = data[at + 1]
        if marker == 0xDA:                 # start of scan: the rest is image data
            return bytes(out + data[at:])
        end = at + 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
        body = data[at + 4:end]
        if marker == 0xEB and body[:2] == b"JP" and len(body) >= 40:
            instance, seq = body[2:4], struct.unpack(">I", body[4:8])[0]
            if seq == 1 and body[12:16] == b"jumb" and body[24:40] == C2PA_JUMBF_TYPE:
                c2pa.add(instance)
            if instance in c2pa:
                at = end
                continue
        out += data[at:end]
        at = end


_CONTAINERS = (b"moov", b"trak", b"mdia", b"minf", b"stbl")


def _boxes(data: bytes | bytearray, start: int, end: int) -> list[tuple[bytes, int, int, int]]:
    """(type, offset, header size, size) of each box between start and end."""
    out, at = [], start
    while at < end:
        if at + 8 > end:
            raise EvidenceError("MP4 box at %d is cut short" % at)
        size, typ = struct.unpack(">I4s", data[at:at + 8])
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", data[at + 8:at + 16])[0], 16
        elif size == 0:
            size = end - at
        if size < head or at + size > end:
            raise EvidenceError("MP4 box %r at %d has a bad size" % (typ, at))
        out.append((typ, at, head, size))
        at += size
    return out


def _mp4_without_c2pa(data: bytes) -> bytes:
    """Drop the top-level C2PA `uuid` box and move the chunk offsets (stco, co64) that
    pointed past it back by its size, as they were before it went in."""
    top = _boxes(data, 0, len(data))
    found = [(at, size) for typ, at, head, size in top
             if typ == b"uuid" and data[at + head:at + head + 16] == C2PA_BMFF_UUID]
    if not found:
        raise EvidenceError("MP4 without a C2PA manifest box")
    if any(typ in (b"moof", b"sidx") for typ, _, _, _ in top):
        raise EvidenceError("fragmented MP4 is not an EdgeKeep clip")
    at, size = found[0]
    out = bytearray(data[:at] + data[at + size:])
    _shift_offsets(out, 0, len(out), at, size)
    return bytes(out)


def _shift_offsets(buf: bytearray, start: int, end: int, cut: int, size: int) -> None:
    for typ, at, head, box_size in _boxes(buf, start, end):
        if typ in _CONTAINERS:
            _shift_offsets(buf, at + head, at + box_size, cut, size)
        elif typ in (b"stco", b"co64"):
            fmt = ">I" if typ == b"stco" else ">Q"
            width = struct.calcsize(fmt)
            count = struct.unpack(">I", buf[at + head + 4:at + head + 8])[0]
            first = at + head + 8
            if first + count * width > at + box_size:
                raise EvidenceError("MP4 %r box lists more offsets than it holds" % typ)
            for i in range(first, first + count * width, width):
                offset = struct.unpack(fmt, buf[i:i + width])[0]
                if offset >= cut + size:
                    struct.pack_into(fmt, buf, i, offset - size)
