# main.py for the ESP32-CAM: Wi-Fi, then the camera agent until power-off.
# Flash holds identity.json (keys made on the device) and config.json:
#   {"ssid": ..., "password": ..., "broker": "192.168.1.10", "port": 1883, "agent": {...}}
import json
import os
import time

import network

from agent.camera import CameraAgent
from agent.identity import Identity
from agent.mqtt import MQTTClient
from agent.objects import ObjectQueue
from agent.spool import Spool
from hw.esp32cam import board


def wifi(ssid, password, timeout=30):
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(ssid, password)
        end = time.time() + timeout
        while not wlan.isconnected() and time.time() < end:
            time.sleep(0.5)
    return wlan


def main():
    with open("config.json") as f:
        cfg = json.load(f)
    wifi(cfg["ssid"], cfg["password"])  # the agent reconnects MQTT by itself, Wi-Fi roams
    ident = Identity.load("identity.json")
    agent_cfg = cfg.get("agent", {})
    transport = MQTTClient("ek-" + ident.hex, cfg["broker"], cfg.get("port", 1883))
    agent = CameraAgent(ident, transport, board.open_camera(), board.open_pir(),
                        Spool("spool", agent_cfg.get("spool_bytes", 65536)),
                        ObjectQueue(agent_cfg.get("objects_dir", "objects"),
                                    agent_cfg.get("objects_bytes", 1048576)),
                        agent_cfg, os.urandom)
    agent.run()


main()
