"""Device registration: the gateway's table and the on-chain DeviceRegistry, kept in step."""
from agent.proto import device_id


class RegistryError(Exception):
    pass


def register(store, chain, public_key, name=None, kind="tracker", owner=None):
    """Register a device by its public key on chain and locally; returns its hex id."""
    return register_many(store, chain, [(public_key, name, kind)], owner)[0]


def register_many(store, chain, devices, owner=None):
    """Register [(public_key, name, kind)] on chain and locally; their hex ids. Every
    registration is sent before any is waited for, so a hundred devices take a block or two,
    not a hundred. A device already on chain with the same key is only added locally."""
    owner = owner or chain.address
    ids, sent = [], []
    for public_key, _, _ in devices:
        if len(public_key) != 65 or public_key[0] != 4:
            raise RegistryError("public key must be 65-byte uncompressed P-256 (04||X||Y)")
        dev = device_id(public_key)
        on_chain = chain.device(dev)
        if on_chain is None:
            sent.append(chain.send_register_device(dev, public_key, owner))
        elif on_chain["pubkey"] != public_key:
            raise RegistryError("device id %s is registered on chain with another key" % dev.hex())
        ids.append(dev.hex())
    for tx_hash in sent:
        chain.wait_mined(tx_hash)
    for dev, (public_key, name, kind) in zip(ids, devices):
        store.add_device(dev, public_key, name, kind, owner)
    return ids


def revoke(store, chain, dev_hex, broker=None):
    """Revoke on chain and locally; with broker (gateway.mqtt.broker.Credentials), its MQTT account too."""
    dev = bytes.fromhex(dev_hex)
    on_chain = chain.device(dev)
    if on_chain is None and store.device(dev_hex) is None:
        raise RegistryError("no device %s" % dev_hex)
    if on_chain and on_chain["active"]:
        chain.revoke_device(dev)
    store.revoke_device(dev_hex)
    if broker is not None and dev_hex in broker.users():
        broker.revoke_device(dev_hex)


def rename(store, dev_hex, name):
    """Change the local display name (the chain holds keys, not names)."""
    name = (name or "").strip()
    if not name or len(name) > 64:
        raise RegistryError("a device name has 1 to 64 characters")
    if not store.rename_device(dev_hex, name):
        raise RegistryError("no device %s" % dev_hex)

