"""Moves the Provider's data out of the layouts of older gateways, once, at start-up:

- single-copy chunks under <data>/objects/<2 hex>/<digest hex> (before the Provider);
- one file per share, <root>/<2 hex>/<digest hex>.<j>, behind a header of magic "EKS1",
  k, m, j, blob size and the body's SHA-256 (before pack files).

Each blob is rebuilt from what is readable, checked against its name, stored in packs and
committed before its old files are removed, so a crash midway loses nothing.
"""
import hashlib
import logging
import os
import struct

from gateway.store import erasure

log = logging.getLogger("edgekeep.provider")

OLD_HEADER = struct.Struct(">4sBBBxQ32s")
OLD_MAGIC = b"EKS1"


def migrate(provider):
    flat = _hex_dirs(os.path.join(provider.data_dir, "objects"))
    roots = [(r, _hex_dirs(r)) for r in provider.roots]
    if not flat and not any(dirs for _, dirs in roots):
        return
    for d in flat:
        _migrate_flat_chunks(provider, d)
    for root, dirs in roots:
        for d in dirs:
            for name in os.listdir(d):
                digest = name.partition(".")[0]
                if len(digest) == 64 and os.path.exists(os.path.join(d, name)):
                    _migrate_share_files(provider, bytes.fromhex(digest))
            _rmdir_if_empty(d)
    log.info("moved the shares of an older gateway's layout into pack files")


def _hex_dirs(parent):
    if not os.path.isdir(parent):
        return []
    return [os.path.join(parent, d) for d in os.listdir(parent)
            if len(d) == 2 and all(c in "0123456789abcdef" for c in d)]


def _migrate_flat_chunks(provider, d):
    for name in os.listdir(d):
        path = os.path.join(d, name)
        if len(name) == 64 and "." not in name:
            with open(path, "rb") as f:
                data = f.read()
            if hashlib.sha256(data).hexdigest() == name:
                provider.put(bytes.fromhex(name), data)
                os.remove(path)
    _rmdir_if_empty(d)


def _migrate_share_files(provider, digest):
    row = provider.db.execute("SELECT size, k, m FROM blobs WHERE digest = ?",
                              (digest,)).fetchone()
    paths = [_old_path(provider, digest, j) for j in range(row[2] if row else provider.m)]
    if row and not provider.db.execute("SELECT 1 FROM shares WHERE digest = ?",
                                       (digest,)).fetchone():
        size, k, m = row
        good = {}
        for j, path in enumerate(paths):
            body = _read_old_share(path, k, m, j, size)
            if body is not None:
                good[j] = body
        if len(good) < k:
            log.error("blob %s: only %d readable old share(s), %d needed; left in place",
                      digest.hex(), len(good), k)
            return
        data = erasure.decode(good, size, k, m)
        if hashlib.sha256(data).digest() != digest:
            log.error("blob %s: old shares decode to other bytes; left in place", digest.hex())
            return
        provider.db.execute("BEGIN IMMEDIATE")
        try:
            provider.rewrite(digest, data, k, m)
            provider.flush()
            provider.db.execute("COMMIT")
        except BaseException:
            provider.db.execute("ROLLBACK")
            raise
    for path in paths:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass  # that share was lost before the move


def _old_path(provider, digest, j):
    h = digest.hex()
    return os.path.join(provider.roots[j % len(provider.roots)], h[:2], "%s.%d" % (h, j))


def _read_old_share(path, k, m, j, size):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    head, body = raw[:OLD_HEADER.size], raw[OLD_HEADER.size:]
    if len(head) < OLD_HEADER.size or OLD_HEADER.unpack(head) != (
            OLD_MAGIC, k, m, j, size, hashlib.sha256(body).digest()):
        return None
    return body


def _rmdir_if_empty(d):
    try:
        os.rmdir(d)
    except OSError:
        pass  # still holds a blob left in place (logged), or a stranger's file
