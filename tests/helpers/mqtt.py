"""paho-mqtt clients for tests against a real Mosquitto."""
import os
import queue
import threading

import cbor2
import paho.mqtt.client as mqtt

from agent.proto import down_topic, up_topic
from gateway.wire import protocol


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


class Client:
    """A paho client that records its CONNACK, its disconnects and what it receives."""

    def __init__(self, port, user, password, client_id="", clean=True, tls_ca=None):
        self.messages = []
        self.refused = None
        self.disconnected = threading.Event()
        self.connack = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=clean)
        self.c.username_pw_set(user, password)
        if tls_ca:
            self.c.tls_set(ca_certs=tls_ca)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.connack.wait(10), "no CONNACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.refused = str(reason_code)
            client.disconnect()
        self.connack.set()

    def subscribe(self, *filters):
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe([(f, 1) for f in filters])
        assert done.wait(10), "no SUBACK"

    def publish(self, topic, payload):
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def topics(self):
        return [t for t, _ in self.messages]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


class Peer:
    """A paho-mqtt client on the broker: what it receives lands in a queue."""

    def __init__(self, port, topics=(), on_message=None):
        self.inbox = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="peer-" + os.urandom(4).hex())
        self.client.on_message = on_message or (
            lambda c, u, m: self.inbox.put((m.topic, m.payload, m.qos)))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if topics:
            self.client.subscribe([(t, 1) for t in topics])
            assert subscribed.wait(5), "paho could not subscribe"

    def publish(self, topic, payload):
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def get(self, timeout=5):
        return self.inbox.get(timeout=timeout)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


class Gateway(Peer):
    """Plays the gateway for one device: verifies each uplink (COSE_Sign1 with the device's
    key), records its sequence number and acks the highest contiguous one."""

    def __init__(self, port, identity):
        self.identity = identity
        self.key = protocol.load_public_key(identity.public)
        self.seqs = []       # every sequence received, duplicates included
        self.kinds = set()
        self.errors = []
        self.acking = True
        self.lock = threading.Lock()
        super().__init__(port, [up_topic(identity.hex, "#")], self._on_uplink)

    def _on_uplink(self, client, userdata, m):
        try:
            signed = protocol.parse(m.topic, m.payload, 1 << 20)
            protocol.verify_signature(signed, self.key)
            seq = cbor2.loads(signed.payload)[2]
        except Exception as e:  # paho would swallow it; the test asserts on errors
            self.errors.append(repr(e))
            return
        with self.lock:
            self.seqs.append(seq)
            self.kinds.add(signed.kind)
        if self.acking:
            self.ack()

    def contiguous(self):
        with self.lock:
            have = set(self.seqs)
        n = 0
        while n + 1 in have:
            n += 1
        return n

    def ack(self):
        n = self.contiguous()
        if n:
            self.client.publish(down_topic(self.identity.hex, "ack"), cbor2.dumps({0: 1, 2: n}),
                                qos=1)
