"""agent/modem.py: MQTT over a (simulated, pty-attached) nRF91 Serial LTE Modem whose socket
is bridged to a real Mosquitto; registration, network drops and AT timeouts."""
import errno
import os
import threading
import time

import pytest

from agent.device import Agent
from agent.identity import Identity
from agent.modem import SLM
from agent.mqtt import MQTTClient
from agent.spool import Spool
from tests.fakes.slm_modem import FakeSLM
from tests.helpers.device import Sensors, poll_until
from tests.helpers.mqtt import Gateway, Peer

pytestmark = pytest.mark.integration

# Bytes that would confuse a naive AT driver: the data-mode terminator, a trailing "+",
# response lines, NUL, CR/LF.
NASTY = b"+++" + b"\r\nOK\r\n" + b"#XRECV: 5\r\n" + b"\x00\xff" + b"a++b" + b"++++" + b"+"


@pytest.fixture
def modem():
    fake = FakeSLM()
    yield fake
    fake.close()


def modem_client(fake, port, timeout=1, **kw):
    slm = SLM(fake.uart(), timeout=timeout)
    c = MQTTClient("dev-" + os.urandom(4).hex(), "127.0.0.1", port,
                   connect_socket=slm.connect_socket, **kw)
    return slm, c


def wait_for(condition, timeout):
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.05)
    return condition()


def test_mqtt_over_the_modem_is_binary_safe(broker, modem):
    peer = Peer(broker.port, ["up/#"])
    _, c = modem_client(modem, broker.port)
    got = []
    c.on_message = lambda topic, payload: got.append((topic, payload))
    c.connect()
    c.subscribe("down/#")
    blob = os.urandom(3000) + NASTY
    c.publish("up/nasty", NASTY)
    c.publish("up/blob", blob)
    assert {peer.get()[0:2] for _ in range(2)} == {("up/nasty", NASTY), ("up/blob", blob)}
    assert 'AT#XSEND="+++"' in modem.commands  # runs of "+" left data mode
    peer.publish("down/x", NASTY)
    peer.publish("down/y", blob)
    assert poll_until(c, lambda: len(got) == 2)
    assert got == [("down/x", NASTY), ("down/y", blob)]
    c.close()
    assert modem.handle is None  # AT#XSOCKET=0 closed it on the modem
    peer.close()


def test_no_registration_is_a_clear_error_until_registered(broker):
    fake = FakeSLM(registers_after=2)
    _, c = modem_client(fake, broker.port)
    for _ in range(2):
        with pytest.raises(OSError, match=r"no network registration \(CEREG stat 2\)"):
            c.connect()
    c.connect()
    assert c.connected and "AT+CFUN=1" in fake.commands
    c.close()
    fake.close()

    stuck = FakeSLM(registers_after=None, searching_stat=0)
    _, c = modem_client(stuck, broker.port)
    with pytest.raises(OSError, match=r"CEREG stat 0"):
        c.connect()
    stuck.close()


def test_at_timeout_names_the_command_and_the_client_recovers(broker, modem):
    slm, c = modem_client(modem, broker.port, timeout=0.5)
    c.connect()
    modem.hang(2)
    with pytest.raises(OSError) as e:
        slm.command("AT+CEREG?")
    assert e.value.errno == errno.ETIMEDOUT and "AT+CEREG?" in str(e.value)
    c.poll(0.2)
    assert not c.connected and "AT#XPOLL" in c.disconnect_reason
    assert wait_for(lambda: time.monotonic() > modem.hung_until, 3)
    c.connect()
    assert c.connected and c.session == 2
    c.close()


def run_agent(fake, port, tmp_path, log):
    """The real agent loop over MQTTClient over the modem, in a thread; returns its parts."""
    ident = Identity.create(os.urandom)
    gateway = Gateway(port, ident)
    slm = SLM(fake.uart(), timeout=0.5)
    client = MQTTClient("ek-" + ident.hex, "127.0.0.1", port, keepalive=5,
                        connect_socket=slm.connect_socket)
    spool = Spool(str(tmp_path / "spool"))
    agent = Agent(ident, client, Sensors(), spool,
                  {"sample_interval": 0.1, "upload_interval": 0.3}, os.urandom, log=log.append)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, kwargs={"stopped": stop.is_set})
    thread.start()
    return gateway, client, spool, stop, thread


def assert_all_delivered_once(gateway, spool):
    assert gateway.errors == []
    assert spool.last_seq > 0 and spool.pending() == []
    assert sorted(set(gateway.seqs)) == list(range(1, spool.last_seq + 1))  # no gap


FAULTS = {
    "socket dropped": lambda fake: fake.drop_socket(),
    "socket dropped, v1.x notice": lambda fake: fake.drop_socket(notify=True),
    "registration lost": lambda fake: fake.lose_registration(),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_agent_delivers_everything_across_a_network_drop(broker, modem, tmp_path, fault):
    log = []
    gateway, client, spool, stop, thread = run_agent(modem, broker.port, tmp_path, log)
    try:
        gateway.acking = False  # hold the acks so several batches are in flight
        assert wait_for(lambda: len(gateway.seqs) >= 4, 10), log
        unacked = len(spool.pending())
        FAULTS[fault](modem)
        assert wait_for(lambda: client.session >= 2, 10), log  # reconnected by itself
        gateway.acking = True
        gateway.ack()
    finally:
        stop.set()
        thread.join(30)
    assert unacked >= 4
    assert_all_delivered_once(gateway, spool)
    if fault == "registration lost":
        assert any("no network registration (CEREG stat 2)" in m for m in log), log
    gateway.close()


def test_agent_recovers_from_a_hung_modem(broker, modem, tmp_path):
    log = []
    gateway, client, spool, stop, thread = run_agent(modem, broker.port, tmp_path, log)
    try:
        assert wait_for(lambda: len(gateway.seqs) >= 3, 10), log
        modem.hang(2)
        assert wait_for(lambda: client.session >= 2, 10), log
        sealed = spool.last_seq
        assert wait_for(lambda: gateway.contiguous() > sealed, 10), log  # flowing again
    finally:
        stop.set()
        thread.join(30)
    assert any("no reply from the modem" in m and "AT" in m for m in log), log
    assert_all_delivered_once(gateway, spool)
    gateway.close()
