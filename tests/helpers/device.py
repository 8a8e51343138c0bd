"""The agent's side of device tests: fake sensors and polling the agent's MQTT client."""
import time


class Sensors:
    def __init__(self):
        self.n = 0

    def read(self):
        self.n += 1
        return {"temp": 2000 + self.n, "hum": 4000, "batt": 4000}


def poll_until(client, condition, timeout=5):
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        client.poll(0.1)
    return condition()
