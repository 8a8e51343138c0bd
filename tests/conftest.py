"""Fixtures every test module can use, and the default marker.

Helpers that test modules import (wait_for, MQTT clients, ...) live in tests/helpers/; test
modules never import each other."""
import os

import pytest

from gateway.mqtt.broker import Mosquitto

MARKERS = ("unit", "integration", "browser")


def pytest_collection_modifyitems(items):
    """A test module without pytestmark = pytest.mark.unit/integration/browser is integration:
    it is left out of `make test-unit` until someone shows it is pure."""
    for item in items:
        if not any(item.get_closest_marker(m) for m in MARKERS):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def broker_options():
    """Keyword arguments for the `broker` fixture's Mosquitto; a module that needs accounts
    overrides it: `def broker_options(): return {"auth": True}`."""
    return {}


@pytest.fixture
def broker(tmp_path, broker_options):
    """A real Mosquitto on a free port, in tmp_path/broker."""
    with Mosquitto(os.path.join(tmp_path, "broker"), **broker_options) as b:
        yield b
