"""The agent's MQTT transport on CPython: paho-mqtt, QoS 1, reconnecting by itself."""
import queue
import socket
import ssl
import threading
from urllib.parse import urlparse

import paho.mqtt.client as mqtt


def parse_broker(url):
    """mqtt://[user:pass@]host:port (or mqtts://) -> (host, port, tls, user, password)."""
    u = urlparse(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ValueError("broker URL must look like mqtt://host:port, got %r" % url)
    tls = u.scheme == "mqtts"
    return u.hostname, u.port or (8883 if tls else 1883), tls, u.username, u.password


def no_delay(client):
    """Turn Nagle off on every socket the paho client opens. Acks and other small packets
    follow one another; with Nagle each waits for the broker's delayed ACK of the one
    before (40 ms on Linux)."""
    def opened(client, userdata, sock):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.on_socket_open = opened


class PahoTransport:
    def __init__(self, url, client_id, username=None, password=None, keepalive=30, ca=None):
        self.host, self.port, tls, user, pw = parse_broker(url)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if username or user:
            self.client.username_pw_set(username or user, password or pw)
        if tls:
            self.client.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
        self.client.reconnect_delay_set(1, 30)
        no_delay(self.client)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.keepalive = keepalive
        self.topics = []
        self.inbox = queue.Queue()
        self.session = 0
        self.started = False
        self.on_message = None
        self._lock = threading.Lock()

    @property
    def connected(self):
        return self.client.is_connected()

    def connect(self):
        """Start connecting; paho keeps the connection up from then on."""
        if self.started:
            return
        try:
            self.client.connect(self.host, self.port, self.keepalive)
        except (OSError, ValueError) as e:
            raise OSError("cannot reach broker %s:%d: %s" % (self.host, self.port, e))
        self.client.loop_start()
        self.started = True

    def subscribe(self, topic):
        with self._lock:
            if topic not in self.topics:
                self.topics.append(topic)
        self.client.subscribe(topic, qos=1)

    def publish(self, topic, payload):
        info = self.client.publish(topic, bytes(payload), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise OSError("publish failed: %s" % mqtt.error_string(info.rc))

    def poll(self, timeout):
        """Deliver downlink messages to on_message in the caller's thread."""
        try:
            topic, payload = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            if self.on_message:
                self.on_message(topic, payload)
            try:
                topic, payload = self.inbox.get_nowait()
            except queue.Empty:
                return

    def close(self):
        if self.started:
            self.client.disconnect()
            self.client.loop_stop()
            self.started = False

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            return
        with self._lock:
            topics = list(self.topics)
        for topic in topics:
            client.subscribe(topic, qos=1)
        self.session += 1

    def _on_message(self, client, userdata, msg):
        self.inbox.put((msg.topic, msg.payload))
