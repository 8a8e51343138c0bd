"""The pinned table of official MicroPython images (images.json): fetched only on the user's
machine, on request, and always checked against the pinned sha256."""
import hashlib
import json
import os
import urllib.request

TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "images.json")
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "edgekeep", "firmware")


class ImageError(Exception):
    pass


def table():
    with open(TABLE) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def entry(board_name):
    images = table()
    if board_name not in images or not images[board_name]["url"]:
        note = images.get(board_name, {}).get("note", "")
        raise ImageError("no official MicroPython image is pinned for %s%s"
                         % (board_name, ": " + note if note else ""))
    return images[board_name]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def check(path, want):
    got = sha256_file(path)
    if got != want:
        raise ImageError("%s has sha256 %s, but the pinned image has %s: do not flash it"
                         % (path, got, want))


def fetch(board_name, cache=CACHE):
    """Path of the board's pinned image, downloaded to cache if not there yet."""
    image = entry(board_name)
    if not image["sha256"]:
        raise ImageError("the %s image has no pinned sha256 yet: run `python -m firmware pin "
                         "--board %s` (it downloads the image once and records its sha256), "
                         "or flash a file you trust with --image FILE" % (board_name, board_name))
    path = os.path.join(cache, image["url"].rsplit("/", 1)[1])
    if not os.path.exists(path):
        _download(image["url"], path)
    check(path, image["sha256"])
    return path


def pin(board_name, cache=CACHE):
    """Download the board's image and record its sha256 in images.json (trust on first use)."""
    image = entry(board_name)
    path = os.path.join(cache, image["url"].rsplit("/", 1)[1])
    if not os.path.exists(path):
        _download(image["url"], path)
    digest = sha256_file(path)
    with open(TABLE) as f:
        doc = json.load(f)
    doc[board_name]["sha256"] = digest
    with open(TABLE, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    return digest


def _download(url, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".part"
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            while True:
                chunk = r.read(1 << 16)
                if not chunk:
                    break
                f.write(chunk)
    except OSError as e:
        raise ImageError("could not download %s: %s" % (url, e))
    os.replace(tmp, path)
