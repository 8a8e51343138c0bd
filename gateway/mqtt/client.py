"""The paho client every gateway process builds the same way: from a broker URL, with
credentials, TLS for mqtts://, and Nagle off."""
import socket
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt


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
               password: str | None = None, **options: Any) -> tuple[mqtt.Client, Broker]:
    """A paho v2-callback client for the broker at url, not yet connected; explicit
    credentials win over those in the URL."""
    broker = Broker(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, **options)
    if username or broker.username:
        client.username_pw_set(username or broker.username, password or broker.password)
    if broker.tls:
        client.tls_set()
    _no_delay(client)
    return client, broker


def _no_delay(client: mqtt.Client) -> None:
    """Turn Nagle off on every socket the client opens. Acks and other small packets follow
    one another; with Nagle each waits for the broker's delayed ACK of the one before
    (40 ms on Linux)."""
    def opened(client: mqtt.Client, userdata: Any, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.on_socket_open = opened
