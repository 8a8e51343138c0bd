"""Broker accounts and ACLs against a real Mosquitto: each device is confined to its own topics.

Denied publishes are dropped silently by Mosquitto (MQTT 3.1.1 has no way to say no), so
"did not arrive" is shown with a marker: one client's messages reach a subscriber in order,
so once the permitted marker sent after the forbidden ones has arrived, they never will.
"""
import datetime
import ipaddress
import os
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.mqtt.broker import GATEWAY_USER, CredentialError, Credentials, Mosquitto
from tests.helpers.mqtt import Client
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A = "aaaaaaaaaaaaaaaa"
B = "bbbbbbbbbbbbbbbb"


@pytest.fixture
def broker_options():
    return {"auth": True}


@pytest.fixture
def clients():
    made = []
    yield lambda *a, **kw: made.append(Client(*a, **kw)) or made[-1]
    for c in made:
        c.close()


def gateway(broker, clients):
    gw = clients(broker.port, GATEWAY_USER, broker.gateway_password())
    assert gw.refused is None
    return gw


def test_device_publishes_only_on_its_own_uplink(broker, clients):
    gw = gateway(broker, clients)
    gw.subscribe("ek/#", "edgekeep/#", "homeassistant/#")
    dev_a = clients(broker.port, A, broker.add_device_credentials(A))
    broker.add_device_credentials(B)
    for topic in ("ek/%s/up/t" % B, "ek/%s/down/ack" % A, "ek/%s/down/ack" % B,
                  "edgekeep/%s/state" % A, "homeassistant/device/%s/config" % A, "ek/x"):
        dev_a.publish(topic, b"forged")
    dev_a.publish("ek/%s/up/t" % A, b"mine")
    wait_for(lambda: gw.messages, what="A's own uplink at the gateway")
    assert gw.messages == [("ek/%s/up/t" % A, b"mine")]


def test_device_reads_only_its_own_downlink(broker, clients):
    gw = gateway(broker, clients)
    dev_a = clients(broker.port, A, broker.add_device_credentials(A))
    dev_b = clients(broker.port, B, broker.add_device_credentials(B))
    dev_a.subscribe("ek/#", "ek/%s/down/#" % B, "ek/+/up/#", "ek/%s/down/#" % A)
    dev_b.subscribe("ek/%s/down/#" % B)
    dev_b.publish("ek/%s/up/t" % B, b"B's uplink")
    gw.publish("ek/%s/down/ack" % B, b"for B")
    gw.publish("ek/%s/down/ack" % A, b"for A")
    wait_for(lambda: dev_a.messages, what="A's own downlink")
    wait_for(lambda: dev_b.messages, what="B's own downlink")
    assert dev_a.messages == [("ek/%s/down/ack" % A, b"for A")]
    assert dev_b.messages == [("ek/%s/down/ack" % B, b"for B")]


def test_device_cannot_read_another_devices_queued_downlink_by_taking_its_client_id(broker, clients):
    gw = gateway(broker, clients)
    dev_b = clients(broker.port, B, broker.add_device_credentials(B), client_id="dev-b", clean=False)
    dev_b.subscribe("ek/%s/down/#" % B)
    dev_b.close()
    gw.publish("ek/%s/down/ack" % B, b"queued for B")
    thief = clients(broker.port, A, broker.add_device_credentials(A), client_id="dev-b", clean=False)
    thief.subscribe("ek/%s/down/#" % A)
    gw.publish("ek/%s/down/ack" % A, b"marker")
    wait_for(lambda: thief.messages, what="A's marker")
    assert thief.messages == [("ek/%s/down/ack" % A, b"marker")]


def test_unknown_users_wrong_passwords_and_anonymous_clients_are_refused(broker, clients):
    password = broker.add_device_credentials(A)
    assert clients(broker.port, A, password + "x").refused == "Not authorized"
    assert clients(broker.port, B, password).refused == "Not authorized"
    assert clients(broker.port, None, None).refused == "Not authorized"
    assert clients(broker.port, A, password).refused is None


def test_adding_and_revoking_take_effect_without_a_restart(broker, clients):
    pid = broker.proc.pid
    dev_a = clients(broker.port, A, broker.add_device_credentials(A))
    dev_b = clients(broker.port, B, broker.add_device_credentials(B))
    assert dev_a.refused is None and dev_b.refused is None
    broker.revoke_device_credentials(A)
    wait_for(dev_a.disconnected.is_set, what="the revoked device's session to be dropped")
    again = clients(broker.port, A, "any password it had")
    assert again.refused == "Not authorized"
    dev_b.subscribe("ek/%s/down/#" % B)   # B's session was left alone
    assert not dev_b.disconnected.is_set()
    assert broker.proc.pid == pid and broker.proc.poll() is None
    with pytest.raises(CredentialError, match="no broker account"):
        broker.revoke_device_credentials(A)


def test_cli_edits_credentials_of_a_running_broker(broker, clients):
    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "gateway", "broker", *args, "--dir", broker.dir],
                           cwd=REPO, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout

    password = cli("add-device", "--device", A).strip()
    dev = clients(broker.port, A, password)
    assert dev.refused is None
    assert A in cli("list").split()
    cli("revoke-device", "--device", A)
    wait_for(dev.disconnected.is_set, what="the revoked device's session to be dropped")
    assert clients(broker.port, A, password).refused == "Not authorized"


def test_bad_device_ids_are_refused(tmp_path):
    creds = Credentials(tmp_path)
    creds.init()
    for bad in ("AAAAAAAAAAAAAAAA", "aaaa", "gateway", "aaaaaaaaaaaaaaaa/#", None):
        with pytest.raises(CredentialError):
            creds.add_device(bad)
    with pytest.raises(CredentialError, match="not a broker user"):
        creds.set_password("root")
    assert creds.users() == [GATEWAY_USER]


def test_credentials_need_init(tmp_path):
    with pytest.raises(CredentialError, match="broker init"):
        Credentials(tmp_path).add_device(A)


def self_signed(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(certfile, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(keyfile, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return certfile, keyfile


def test_tls_listener_uses_the_same_accounts(tmp_path, clients):
    certfile, keyfile = self_signed(tmp_path)
    with Mosquitto(os.path.join(tmp_path, "broker"), auth=True, tls=(certfile, keyfile)) as b:
        password = b.add_device_credentials(A)
        gw = clients(b.port, GATEWAY_USER, b.gateway_password())
        gw.subscribe("ek/+/up/#")
        dev = clients(b.tls_port, A, password, tls_ca=certfile)
        assert dev.refused is None
        dev.publish("ek/%s/up/t" % A, b"over TLS")
        wait_for(lambda: gw.messages, what="the TLS uplink")
        assert gw.messages == [("ek/%s/up/t" % A, b"over TLS")]
        assert clients(b.tls_port, A, "wrong", tls_ca=certfile).refused == "Not authorized"


def test_registering_a_device_gives_it_a_broker_account_and_revoking_removes_it(
        tmp_path, broker, clients):
    """`gateway devices add` on a gateway whose broker has accounts (<data_dir>/broker)."""
    import json

    from agent.identity import Identity
    from gateway.chain import node
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ident = Identity.create(os.urandom)
    out = tmp_path / "mqtt.json"

    def gateway_cli(*args):
        r = subprocess.run([sys.executable, "-m", "gateway", "devices", *args, "--data-dir",
                            str(tmp_path)], cwd=repo, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    try:
        said = gateway_cli("add", "--public-key", ident.public.hex(), "--name", "t1",
                           "--credentials-out", str(out))
        creds = json.loads(out.read_text())
        assert creds["mqtt_user"] == ident.hex
        assert creds["mqtt_password"] not in said
        assert out.stat().st_mode & 0o777 == 0o600
        gw = gateway(broker, clients)
        gw.subscribe("ek/+/up/#")
        dev = clients(broker.port, creds["mqtt_user"], creds["mqtt_password"])
        assert dev.refused is None
        dev.publish("ek/%s/up/t" % ident.hex, b"hello")
        wait_for(lambda: gw.topics() == ["ek/%s/up/t" % ident.hex], what="the device's uplink")

        gateway_cli("revoke", "--device", ident.hex)
        assert dev.disconnected.wait(10), "the revoked device stayed connected"
        again = clients(broker.port, creds["mqtt_user"], creds["mqtt_password"])
        assert again.refused is not None
    finally:
        node.stop_running(str(tmp_path))


# -- the gateway's client ids (gateway/mqtt/client.py) ----------------------------------------

def test_private_client_ids_are_stable_per_password_and_keep_their_name():
    from gateway.mqtt.client import private_client_id
    one = private_client_id("edgekeep-gateway", "secret-1")
    assert one == private_client_id("edgekeep-gateway", "secret-1")
    assert one.startswith("edgekeep-gateway-") and len(one) == len("edgekeep-gateway-") + 24
    assert one != private_client_id("edgekeep-gateway", "secret-2")
    assert one[-24:] != private_client_id("edgekeep-ha-edgekeep", "secret-1")[-24:]
    assert "secret-1" not in one
    assert private_client_id("edgekeep-gateway", None) == "edgekeep-gateway"


def test_a_device_taking_a_client_id_disconnects_whoever_had_it(broker, clients):
    """Why the gateway's ids are private: Mosquitto lets any account take any id."""
    victim = clients(broker.port, GATEWAY_USER, broker.gateway_password(), client_id="edgekeep-gateway")
    clients(broker.port, A, broker.add_device_credentials(A), client_id="edgekeep-gateway")
    wait_for(victim.disconnected.is_set, what="the takeover")


def session_present(port, client_id, user, password):
    """Connect with a persistent session, report whether the broker had one, disconnect."""
    import threading

    import paho.mqtt.client as mqtt
    got = {}
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    c.username_pw_set(user, password)
    c.on_connect = lambda cl, u, flags, rc, p: (got.update(present=flags.session_present),
                                                done.set())
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert done.wait(10), "no CONNACK"
    c.disconnect()
    c.loop_stop()
    return got["present"]


def test_a_device_with_the_gateways_client_ids_cannot_disconnect_the_gateway(tmp_path, broker, clients):
    """A device account connecting as "edgekeep-gateway", "edgekeep-ha-<gateway id>" or
    "edgekeep-ota-<pid>" takes nobody's session: the ingest stays connected and stores, and
    the ingest, Home Assistant bridge and OTA sender all connect."""
    import threading

    from agent import message
    from agent.identity import Identity
    from gateway.ingest.ota import Pusher
    from gateway.ingest.pipeline import Ingest
    from gateway.integrations.discovery import Publisher
    from gateway.store.database import Store

    password = broker.gateway_password()
    # An older gateway's persistent session under the plain id: the new ingest ends it.
    old = clients(broker.port, GATEWAY_USER, password, client_id="edgekeep-gateway", clean=False)
    old.subscribe("ek/+/up/#")
    old.close()
    data = str(tmp_path / "gw")
    store = Store.open(data)
    ident = Identity.create(os.urandom)
    store.add_device(ident.hex, ident.public, "t")
    ingest = Ingest(data, broker.url, epoch_seconds=3600, username=GATEWAY_USER, password=password)
    events = []
    on_connect = ingest.client.on_connect
    ingest.client.on_connect = lambda *a: (events.append("connect"), on_connect(*a))
    ingest.client.on_disconnect = lambda *a: events.append("disconnect")
    ha = Publisher(broker.url, "edgekeep", GATEWAY_USER, password)
    ha.client.on_disconnect = lambda *a: events.append("ha disconnect")
    ota = Pusher(broker.url, {}, GATEWAY_USER, password)
    try:
        ingest.start()
        assert not session_present(broker.port, "edgekeep-gateway", GATEWAY_USER, password)
        ha.start()
        ota_connack = threading.Event()
        ota.client.on_connect = lambda *a: ota_connack.set()
        ota.client.connect(ota.host, ota.port)
        ota.client.loop_start()
        assert ota_connack.wait(10), "the OTA sender did not connect"
        ota.client.on_disconnect = lambda *a: events.append("ota disconnect")
        for cid in (ingest.client._client_id, ha.client._client_id, ota.client._client_id):
            assert cid.decode().count("-") >= 2 and password not in cid.decode()

        dev_password = broker.add_device_credentials(ident.hex)
        squatters = [clients(broker.port, ident.hex, dev_password, client_id=cid, clean=False)
                     for cid in ("edgekeep-gateway", "edgekeep-ha-edgekeep",
                                 "edgekeep-ota-%d" % os.getpid())]
        assert all(s.refused is None for s in squatters)
        nonces = message.Nonces(os.urandom)
        for seq in (1, 2, 3):
            squatters[0].publish("ek/%s/up/t" % ident.hex,
                                 message.seal(ident, nonces, seq, 1790000000 + seq, "t", seq,
                                              b"\x82hpebble/1@", 0))
        wait_for(lambda: ingest.stats["stored"] == 3, what="the device's messages stored")
        assert events == ["connect"]
        assert ingest.is_connected() and ha.client.is_connected() and ota.client.is_connected()
        assert not any(s.disconnected.is_set() for s in squatters)
    finally:
        ota.client.disconnect()
        ota.client.loop_stop()
        ha.stop()
        ingest.stop()
