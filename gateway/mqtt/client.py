"""The paho client every gateway process builds the same way: from a broker URL, with
credentials, TLS for mqtts://, and Nagle off.

Client ids. MQTT lets a client take any client id, and the broker disconnects whoever had
it (Mosquitto 2.0 has no option that ties ids to accounts on a shared listener;
`use_username_as_clientid` would give all the gateway's connections the one id "gateway",
and `clientid_prefixes` does not look at the account). So a device account that connected
as "edgekeep-gateway" would kick the ingest off again and again. With a password, every id
built here is made private to the deployment: the name, a dash and 24 hex digits of
HMAC-SHA256(password, name), e.g. "edgekeep-gateway-3f9c...". Stable as long as the password
(so the ingest's persistent session survives restarts), unguessable without it, and the
password itself is never sent or logged. Without a password (the anonymous test broker)
the name is the id.
"""
import hashlib
import hmac
import socket
import threading
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

SESSION_NEVER_EXPIRES = 0xFFFFFFFF


class Broker:
    """A broker URL split: mqtt://[user:pass@]host:port or mqtts://..."""

    def __init__(self, url: str) -> None:
        u = urlparse(url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ValueError("broker URL must look like mqtt://host:port, got %r" % url)
        self.tls = u.scheme == "mqtts"
        self.host: str = u.hostname
        self.port: int = u.port or (8883 if self.tls else 1883)
        self.username, self.password = u.username, u.password


def new_client(url: str, client_id: str, username: str | None = None,
               password: str | None = None, v5: bool = False,
               **options: Any) -> tuple[mqtt.Client, Broker]:
    """A paho v2-callback client for the broker at url, not yet connected; explicit
    credentials win over those in the URL. v5: MQTT v5 (connect it with v5_session for a
    persistent session); else 3.1.1."""
    broker = Broker(url)
    username, password = username or broker.username, password or broker.password
    private = private_client_id(client_id, password)
    if v5:
        options["protocol"] = mqtt.MQTTv5
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=private, **options)
    if username:
        client.username_pw_set(username, password)
    if broker.tls:
        client.tls_set()
    _no_delay(client)
    if private != client_id and (v5 or options.get("clean_session") is False):
        _forget_session_once(client, broker, client_id, username, password)
    return client, broker


def v5_session(receive_maximum: int) -> Properties:
    """CONNECT properties of a persistent MQTT v5 session (connect with clean_start=False):
    kept by the broker while the client is away (as 3.1.1's clean_session=False), and at
    most receive_maximum unacked QoS 1 messages out to the client at once."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = SESSION_NEVER_EXPIRES
    props.ReceiveMaximum = receive_maximum
    return props


def private_client_id(name: str, password: str | None) -> str:
    """The client id for name on an account with this password (see the module's doc)."""
    if not password:
        return name
    tag = hmac.new(password.encode(), b"edgekeep mqtt client id\0" + name.encode(),
                   hashlib.sha256).hexdigest()[:24]
    return "%s-%s" % (name, tag)


def _forget_session_once(client: mqtt.Client, broker: Broker, old_id: str,
                         username: str | None, password: str | None) -> None:
    """Before its first connect, end the persistent session an older gateway left under the
    plain id: otherwise the broker would queue every uplink for it (up to
    max_queued_messages) forever. A clean-session connect under that id does it."""
    def pre_connect(c: mqtt.Client, userdata: Any) -> None:
        c.on_pre_connect = None
        old = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=old_id, clean_session=True)
        if username:
            old.username_pw_set(username, password)
        if broker.tls:
            old.tls_set()
        connack = threading.Event()
        old.on_connect = lambda *a: connack.set()
        try:
            old.connect(broker.host, broker.port, keepalive=10)
        except OSError:
            return  # the real connect reports an unreachable broker
        old.loop_start()
        connack.wait(5)
        old.disconnect()
        old.loop_stop()
    client.on_pre_connect = pre_connect


def _no_delay(client: mqtt.Client) -> None:
    """Turn Nagle off on every socket the client opens. Acks and other small packets follow
    one another; with Nagle each waits for the broker's delayed ACK of the one before
    (40 ms on Linux)."""
    def opened(client: mqtt.Client, userdata: Any, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.on_socket_open = opened
