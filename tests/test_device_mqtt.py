"""agent/mqtt.py (the device's MQTT client) against a real Mosquitto, with paho-mqtt on the
other side; and the real agent loop over it."""
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from agent import cbor
from agent.device import Agent
from agent.identity import Identity
from agent.mqtt import MQTTClient
from agent.proto import down_topic
from agent.spool import Spool
from gateway.mqtt.broker import Mosquitto
from tests.helpers.device import Sensors, poll_until
from tests.helpers.mqtt import Gateway, Peer

pytestmark = pytest.mark.integration


def connected_client(port, **kw):
    c = MQTTClient("dev-" + os.urandom(4).hex(), "127.0.0.1", port, **kw)
    got = queue.Queue()
    c.on_message = lambda topic, payload: got.put((topic, payload))
    c.connect()
    return c, got


def test_publish_qos0_and_qos1_reach_paho(broker):
    peer = Peer(broker.port, ["up/#"])
    c, _ = connected_client(broker.port)
    big = os.urandom(20000)  # a 3-byte remaining length
    c.publish("up/zero", b"qos zero", qos=0)
    c.publish("up/one", memoryview(b"xx qos one")[3:])
    c.publish("up/big", big)
    got = {peer.get()[0:2] for _ in range(3)}
    assert got == {("up/zero", b"qos zero"), ("up/one", b"qos one"), ("up/big", big)}
    assert poll_until(c, lambda: not c.inflight), "PUBACKs were not processed"
    c.close()
    peer.close()


def test_downlink_is_dispatched_and_acked(broker):
    peer = Peer(broker.port)
    c, got = connected_client(broker.port)
    c.subscribe("dev/down/#")
    payload = os.urandom(300)  # a 2-byte remaining length
    peer.publish("dev/down/ack", payload)
    assert poll_until(c, lambda: not got.empty())
    assert got.get() == ("dev/down/ack", payload)
    c.close()
    peer.close()


def test_poll_returns_once_messages_are_delivered_not_at_its_timeout(broker):
    peer = Peer(broker.port)
    c, got = connected_client(broker.port)
    c.subscribe("dev/down/#")
    for i in range(3):
        peer.publish("dev/down/ack", b"%d" % i)
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (c.poll(3600), done.set()), daemon=True)
    waiter.start()
    assert done.wait(30), "poll kept waiting after it had delivered messages"
    assert [got.get_nowait()[1] for _ in range(got.qsize())][0] == b"0"
    c.close()
    peer.close()


def test_socket_has_nagle_off(broker):
    import socket
    c, _ = connected_client(broker.port)
    assert c.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # else 40 ms per message
    c.close()


def test_first_connect_does_not_load_the_idna_codec(broker):
    """A camera that wakes on motion connects at once: CPython's IDNA codec, which a str host
    name pulls in, costs 1-2 ms of that first connect."""
    code = ("import sys; from agent.mqtt import tcp_connect; s = tcp_connect('127.0.0.1', %d);"
            "s.close(); print('encodings.idna' in sys.modules)" % broker.port)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30)
    assert out.stdout.strip() == "False"


def test_an_internationalized_host_name_still_goes_through_the_codec():
    from agent.mqtt import tcp_connect
    with pytest.raises(OSError):  # no such host here; not a UnicodeError
        tcp_connect("bücher.invalid", 1883, timeout=1)


def test_pings_keep_an_idle_connection_alive(broker):
    c, got = connected_client(broker.port, keepalive=2)
    c.subscribe("dev/down")
    end = time.monotonic() + 6  # the broker drops a silent client after 1.5 x keepalive
    while time.monotonic() < end:
        c.poll(0.5)
    assert c.connected, c.disconnect_reason
    peer = Peer(broker.port)
    peer.publish("dev/down", b"still there")
    assert poll_until(c, lambda: not got.empty())
    c.close()
    peer.close()


def test_unanswered_ping_marks_the_link_dead(broker):
    c, _ = connected_client(broker.port, keepalive=1)
    os.kill(broker.proc.pid, signal.SIGSTOP)  # the TCP link stays up, the broker is mute
    try:
        assert poll_until(c, lambda: not c.connected, timeout=5)
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
    assert "PINGRESP" in c.disconnect_reason


def test_reconnects_after_broker_restart_with_subscriptions(broker):
    c, got = connected_client(broker.port)
    c.subscribe("dev/down")
    assert c.session == 1
    broker.proc.kill()
    broker.proc.wait()
    assert poll_until(c, lambda: not c.connected), "a dead broker went unnoticed"
    with pytest.raises(OSError):
        c.connect()
    broker.start()
    c.connect()
    assert c.connected and c.session == 2
    peer = Peer(broker.port)
    peer.publish("dev/down", b"after restart")
    assert poll_until(c, lambda: not got.empty())
    assert got.get() == ("dev/down", b"after restart")
    c.close()
    peer.close()


def test_connect_takes_one_round_trip_with_its_subscriptions(broker):
    """A broker that answers only once it has the CONNECT and the SUBSCRIBE: a client that
    waited for the CONNACK before subscribing would time out (a round trip per topic on a
    camera's Wi-Fi)."""
    import socket
    seen = []

    def broker_side(s):
        buf, packets = b"", []
        while len(packets) < 2:  # both before any answer (short packets: 1-byte lengths)
            buf += s.recv(4096)
            while len(buf) >= 2 and len(buf) >= 2 + buf[1]:
                packets.append(buf[:2 + buf[1]])
                buf = buf[2 + buf[1]:]
        seen.extend(p[0] >> 4 for p in packets)
        s.sendall(b"\x20\x02\x00\x00" + b"\x90\x03" + packets[1][2:4] + b"\x01")

    ours, theirs = socket.socketpair()
    c = MQTTClient("dev-pipelined", "unused", 0, connect_socket=lambda host, port: ours)
    c.timeout = 3
    c.subscribe("ek/dev/down/#")
    t = threading.Thread(target=broker_side, args=(theirs,))
    t.start()
    c.connect()
    t.join(5)
    assert seen == [1, 8] and c.connected  # CONNECT, SUBSCRIBE, then the acks
    c.close()
    theirs.close()
    # and with a real broker the subscription holds once connect() returns
    c, got = MQTTClient("dev-" + os.urandom(4).hex(), "127.0.0.1", broker.port), queue.Queue()
    c.on_message = lambda topic, payload: got.put((topic, payload))
    c.subscribe("dev/down")
    c.connect()
    peer = Peer(broker.port)
    peer.publish("dev/down", b"first")
    assert poll_until(c, lambda: not got.empty()) and got.get() == ("dev/down", b"first")
    c.close()
    peer.close()


def test_connack_refusal_is_a_clear_error(tmp_path):
    # mosquitto started as root reads the password file as user mosquitto
    pw_dir = tempfile.TemporaryDirectory()
    os.chmod(pw_dir.name, 0o755)
    passwd = os.path.join(pw_dir.name, "passwd")
    subprocess.run(["mosquitto_passwd", "-b", "-c", passwd, "dev", "s3cret"], check=True)
    os.chmod(passwd, 0o644)
    conf = "allow_anonymous false\npassword_file %s\n" % passwd
    with Mosquitto(tmp_path / "mosquitto", extra_conf=conf) as b:
        c = MQTTClient("anon", "127.0.0.1", b.port)
        with pytest.raises(OSError, match="not authorized"):
            c.connect()
        assert not c.connected
        ok = MQTTClient("dev", "127.0.0.1", b.port, user="dev", password="s3cret")
        ok.connect()
        assert ok.connected
        ok.close()
    pw_dir.cleanup()


def test_oversize_incoming_packet_drops_the_connection(broker):
    peer = Peer(broker.port)
    c, got = connected_client(broker.port)
    c.max_packet = 1024
    c.subscribe("dev/down")
    peer.publish("dev/down", os.urandom(2000))
    assert poll_until(c, lambda: not c.connected)
    assert "exceeds" in c.disconnect_reason and got.empty()
    peer.close()


def test_agent_over_the_client_delivers_signed_messages(broker, tmp_path):
    ident = Identity.create(os.urandom)
    gateway = Gateway(broker.port, ident)
    gateway.acking = False
    spool = Spool(str(tmp_path / "spool"))
    c = MQTTClient("ek-" + ident.hex, "127.0.0.1", broker.port, keepalive=5)
    agent = Agent(ident, c, Sensors(), spool, {"sample_interval": 0.1, "upload_interval": 0.5},
                  os.urandom, log=lambda m: None)
    agent.run(duration=2.5, flush_timeout=1)  # no acks yet: flush just sends
    end = time.monotonic() + 5
    while len(set(gateway.seqs)) < spool.last_seq and time.monotonic() < end:
        c.poll(0.1)
    assert gateway.errors == []
    assert "t" in gateway.kinds and set(gateway.seqs) == set(range(1, spool.last_seq + 1))
    assert len(spool.pending()) == spool.last_seq  # nothing forgotten without an ack
    # the gateway's ack, encoded by the device's own CBOR: {version: 1, seq: n}
    Peer(broker.port).publish(down_topic(ident.hex, "ack"), cbor.dumps({0: 1, 2: spool.last_seq}))
    assert poll_until(c, lambda: not spool.pending()), "the ack did not empty the spool"
    c.close()
    gateway.close()
