"""hw/esp32cam/board.py against fakes of either MicroPython camera driver (tests/fakes/esp32cam.py):
a clip's thumbnail is a small QQVGA JPEG taken by the sensor, and the camera is back at SVGA
for the next capture, also when the small frame failed."""
import importlib
import io
import sys

import pytest
from PIL import Image

from tests.fakes.esp32cam import FakeOV2640, cnadler_module, lemariva_module, machine_module

DRIVERS = {"lemariva": lemariva_module, "cnadler86": cnadler_module}


@pytest.fixture(params=sorted(DRIVERS))
def board(request, monkeypatch):
    """(hw.esp32cam.board imported with the fake `machine` and driver, the fake sensor)."""
    sensor = FakeOV2640()
    monkeypatch.setitem(sys.modules, "machine", machine_module())
    monkeypatch.setitem(sys.modules, "camera", DRIVERS[request.param](sensor))
    monkeypatch.delitem(sys.modules, "hw.esp32cam.board", raising=False)
    mod = importlib.import_module("hw.esp32cam.board")
    yield mod, sensor
    sys.modules.pop("hw.esp32cam.board", None)


def jpeg_size(data):
    img = Image.open(io.BytesIO(bytes(data)))
    assert img.format == "JPEG"
    return img.size


def test_a_thumbnail_is_a_qqvga_jpeg_and_the_next_capture_is_full_size(board):
    mod, sensor = board
    cam = mod.open_camera()
    poster = bytes(cam.capture())
    assert jpeg_size(poster) == (800, 600)
    thumb = cam.thumbnail(poster)
    assert isinstance(thumb, bytes)
    assert jpeg_size(thumb) == (160, 120)
    assert len(thumb) * 8 < len(poster)
    # Back at SVGA: the next captures and clip frames are full frames again.
    assert jpeg_size(cam.capture()) == (800, 600)
    assert jpeg_size(cam.frame()) == (800, 600)
    # The thumbnail is a copy: the frames since did not overwrite it.
    assert jpeg_size(thumb) == (160, 120)


def test_thumbnails_one_after_another_stay_small_and_leave_full_frames(board):
    mod, sensor = board
    cam = mod.open_camera()
    for _ in range(3):
        assert jpeg_size(cam.thumbnail(None)) == (160, 120)
        assert jpeg_size(cam.capture()) == (800, 600)


def test_a_failed_small_frame_gives_no_thumbnail_and_the_camera_is_back_at_full_size(board):
    mod, sensor = board
    cam = mod.open_camera()
    cam.capture()
    sensor.fail = 2                      # the dropped frame and the small frame time out
    assert cam.thumbnail(None) is None
    assert sensor.framesize == 11        # SVGA
    assert jpeg_size(cam.capture()) == (800, 600)


def test_a_sensor_that_refuses_qqvga_raises_value_error_and_stays_at_full_size(board, monkeypatch):
    mod, sensor = board
    cam = mod.open_camera()

    def refuse(size):
        if size != 11:
            raise ValueError("Invalid setting for frame_size")
        sensor.framesize = size

    monkeypatch.setattr(sensor, "set_framesize", refuse)
    with pytest.raises(ValueError):      # the camera agent logs "thumbnail not made"
        cam.thumbnail(None)
    assert jpeg_size(cam.capture()) == (800, 600)
