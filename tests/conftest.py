import os
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from gateway.mqtt.broker import Mosquitto


@pytest.fixture
def broker(tmp_path):
    with Mosquitto(os.path.join(tmp_path, "broker")) as b:
        yield b


def wait_for(predicate, timeout=20.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))


class Subscriber:
    """A paho client that records what arrives on a topic filter."""

    def __init__(self, url_port, topic):
        self.messages = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        ready = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", url_port)
        self.client.loop_start()
        assert ready.wait(10), "subscription not confirmed"

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def publish(self, topic, payload, qos=1):
        self.client.publish(topic, payload, qos=qos).wait_for_publish(10)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
