"""Bytes on the wire per reading: EdgeKeep at batch 1, 8 and 32 against the raw reading and
a Pebble-style signed JSON message carrying the same reading.

Everything MQTT puts on the wire for a QoS 1 PUBLISH is counted: fixed header, remaining
length, topic, packet id, payload (envelope, COSE, nonce, signature, tag). The ack that
comes back is one small message per batch and is reported separately.

    .venv/bin/python bench/wire_cost.py
"""
import json
import os

from common import use_openssl_for_preload

from agent import cbor, message
from agent.identity import Identity
from agent.proto import ACK_SEQ, ACK_VERSION, READING_SIZE, VERSION, down_topic, up_topic
from agent.readings import Batch

READING = {"temp": 2345, "hum": 4512, "pres": 101325, "gas": 123456, "light": 30000,
           "ax": -12, "ay": 8, "az": 1002, "lat": 473977420, "lon": 85455940, "batt": 4012}


def varint_len(n):
    size = 1
    while n >= 128:
        n >>= 7
        size += 1
    return size


def publish_bytes(topic, payload_len, qos):
    body = 2 + len(topic) + (2 if qos else 0) + payload_len
    return 1 + varint_len(body) + body


def edgekeep_per_reading(ident, n):
    batch = Batch(n)
    for i in range(n):
        batch.add(1790000000 + 10 * i, READING)
    msg = message.seal(ident, message.Nonces(os.urandom), 1000, batch.t0, "t", 1000,
                       batch.plaintext(), n)
    return publish_bytes(up_topic(ident.hex, "t"), len(msg), 1) / n


def pebble_json_bytes():
    """The same reading as Pebble firmware's JSON uplink: values as decimals, ECDSA r,s hex."""
    body = {"message": {
        "snr": 12.5, "vbat": 4.012, "latitude": 47.397742, "longitude": 8.545594,
        "gas_resistance": 123456, "temperature": 23.45, "pressure": 1013.25,
        "humidity": 45.12, "light": 300.00, "temperature2": 23.45,
        "gyroscope": [0, 0, 0], "accelerometer": [-12, 8, 1002], "timestamp": "1790000000"},
        "signature": {"r": "ab" * 32, "s": "cd" * 32}}
    payload = json.dumps(body, separators=(",", ":"))
    return publish_bytes("device/352656100000000/data", len(payload), 0)


def main():
    use_openssl_for_preload()
    ident = Identity.create(os.urandom)
    ack = cbor.dumps({ACK_VERSION: VERSION, ACK_SEQ: 1000})
    ack_bytes = publish_bytes(down_topic(ident.hex, "ack"), len(ack), 1)
    sizes = {n: edgekeep_per_reading(ident, n) for n in (1, 8, 32)}
    pebble = pebble_json_bytes()
    print("bench/wire_cost: bytes/reading: raw %d; edgekeep batch 1: %.1f (%.2fx raw), "
          "batch 8: %.1f (%.2fx), batch 32: %.1f (%.2fx); pebble JSON: %d (%.2fx); "
          "ack %d B per batch"
          % (READING_SIZE, sizes[1], sizes[1] / READING_SIZE, sizes[8], sizes[8] / READING_SIZE,
             sizes[32], sizes[32] / READING_SIZE, pebble, pebble / READING_SIZE, ack_bytes))


if __name__ == "__main__":
    main()
