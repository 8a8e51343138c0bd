"""The epoch outbox against a real anvil: one tx per epoch, retries while the chain is down,
idempotent after a crash, and a conflicting root is refused."""
import hashlib
import os
import threading

import pytest

from gateway.anchor import epochs as anchor
from gateway.anchor.epochs import Anchorer
from gateway.chain.client import DEFAULT_DEV_KEY, Chain
from gateway.chain.node import Anvil, rpc_call
from gateway.store.database import Store
from gateway.wire import merkle
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration


def add_messages(store, n, device="00" * 8, start=1):
    for seq in range(start, start + n):
        raw = os.urandom(40)
        store.db.execute(
            "INSERT INTO messages (device, seq, kind, time, count, digest, raw, received_at) "
            "VALUES (?, ?, 't', 0, 1, ?, ?, 0)", (device, seq, hashlib.sha256(raw).digest(), raw))


@pytest.fixture
def chain_env(tmp_path, database_url):
    data = str(tmp_path / "gw")
    anvil = Anvil(data, block_time=0).start()
    chain = Chain(anvil.rpc_url, DEFAULT_DEV_KEY, os.path.join(data, "chain", "deployment.json"))
    store = Store.open(data, database_url)
    yield data, anvil, chain, store
    anvil.stop()


def test_one_transaction_per_epoch_whatever_the_count(chain_env):
    data, anvil, chain, store = chain_env
    nonce0 = chain.w3.eth.get_transaction_count(chain.address)
    a = Anchorer(Store.connect(data), chain)
    for n in (1, 50, 700):
        add_messages(store, n, start=store.message_count() + 1)
        epoch = anchor.seal_epoch(store)
        a.anchor(epoch)
    assert anchor.seal_epoch(store) is None  # nothing new: no epoch, no tx
    assert chain.w3.eth.get_transaction_count(chain.address) - nonce0 == 3
    for e in store.epochs():
        assert e["status"] == "mined" and e["gas"] > 21000
        on_chain = chain.anchor_of(e["epoch"])
        assert on_chain["root"] == e["root"] == merkle.root(store.epoch_leaves(e["epoch"]))
        assert on_chain["count"] == e["count"]
    assert [e["count"] for e in store.epochs()] == [1, 50, 700]


def test_outbox_retries_until_the_chain_is_back(chain_env):
    data, anvil, chain, store = chain_env
    port = anvil.port
    a = Anchorer(Store.connect(data), chain)
    a.start()
    anvil.stop()
    add_messages(store, 5)
    epoch = anchor.seal_epoch(store)
    a.notify()
    wait_for(lambda: (store.epoch(epoch)["attempts"] or 0) >= 1, what="a failed attempt")
    assert store.epoch(epoch)["status"] != "mined" and store.epoch(epoch)["last_error"]
    restarted = Anvil(data, port=port, block_time=0).start()
    try:
        wait_for(lambda: store.epoch(epoch)["status"] == "mined", timeout=90, what="mined after restart")
        assert chain.anchor_of(epoch)["root"] == store.epoch(epoch)["root"]
    finally:
        a.stop(drain_timeout=1)
        restarted.stop()


def test_resend_after_crash_is_recognised_without_a_new_tx(chain_env):
    data, anvil, chain, store = chain_env
    add_messages(store, 3)
    epoch = anchor.seal_epoch(store)
    a = Anchorer(Store.connect(data), chain)
    a.anchor(epoch)
    # a crash right after sending, before the outcome was recorded
    store.db.execute("UPDATE epochs SET status = 'sent', block = NULL WHERE epoch = ?", (epoch,))
    nonce = chain.w3.eth.get_transaction_count(chain.address)
    a.anchor(epoch)
    assert store.epoch(epoch)["status"] == "mined" and store.epoch(epoch)["block"]
    assert chain.w3.eth.get_transaction_count(chain.address) == nonce


def test_conflicting_root_is_refused_and_kept_for_inspection(chain_env):
    data, anvil, chain, store = chain_env
    add_messages(store, 2)
    epoch = anchor.seal_epoch(store)
    a = Anchorer(Store.connect(data), chain)
    a.anchor(epoch)
    store.db.execute("UPDATE epochs SET status = 'pending', root = ? WHERE epoch = ?",
                     (b"\x11" * 32, epoch))
    with pytest.raises(RuntimeError, match="another root on chain"):
        a.anchor(epoch)
    assert store.epoch(epoch)["status"] == "pending"


def test_a_transaction_still_in_the_pool_is_waited_for_not_sent_again(tmp_path, database_url):
    """The worker that sent an epoch's anchor died before it was mined; the worker that took
    over finds the transaction in the node's pool and waits for it: one transaction."""
    data = str(tmp_path / "gw")
    with Anvil(data, block_time=0) as anvil:
        chain = Chain(anvil.rpc_url, DEFAULT_DEV_KEY, os.path.join(data, "chain",
                                                                    "deployment.json"))
        store = Store.open(data, database_url)
        add_messages(store, 3)
        epoch = anchor.seal_epoch(store)
        rpc_call(anvil.rpc_url, "evm_setAutomine", [False])
        tx = chain.send_anchor(epoch, store.epoch(epoch)["root"], 3)
        store.epoch_sent(epoch, tx)                      # ... and the sender died here
        nonce = chain.w3.eth.get_transaction_count(chain.address, "pending")
        taker = Anchorer(Store.connect(data), chain)
        t = threading.Thread(target=taker.anchor, args=(epoch,))
        t.start()
        wait_for(lambda: t.is_alive(), what="the taker waiting")
        rpc_call(anvil.rpc_url, "evm_mine", [])
        t.join(30)
        assert store.epoch(epoch)["status"] == "mined" and store.epoch(epoch)["tx_hash"] == tx
        assert chain.w3.eth.get_transaction_count(chain.address, "pending") == nonce


def test_an_anchorer_fenced_off_sends_nothing(chain_env):
    data, anvil, chain, store = chain_env
    add_messages(store, 2)
    epoch = anchor.seal_epoch(store)
    nonce = chain.w3.eth.get_transaction_count(chain.address)
    fenced = Anchorer(Store.connect(data), chain, fence=lambda s: False)
    assert fenced.step() and store.epoch(epoch)["status"] == "pending"
    assert chain.w3.eth.get_transaction_count(chain.address) == nonce
    assert Anchorer(Store.connect(data), chain, fence=lambda s: True).step()
    assert store.epoch(epoch)["status"] == "mined"
