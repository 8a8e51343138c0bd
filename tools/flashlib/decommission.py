"""Decommissioning: the device is revoked everywhere (the gateway's table, its broker
account, the on-chain DeviceRegistry), then its keys and config are wiped from its flash.

Revoking goes through the gateway's API (--gateway https://...) with an enrollment token,
the device signing its own retirement with its key (a token alone revokes nothing), or with
the admin password (a session, as the admin page); or through the gateway's data directory
on this machine (--gateway-data-dir). The revocation comes first: if it fails, the device is
left as it was, so that it can still prove who it is. The owner's keyring keeps the device's
data key: what it sent stays readable.
"""
from agent.proto import device_hex, device_id
from tools.flashlib import FlashError
from tools.flashlib.provision import device_public, is_remote, revoke_local, sign_retire

# What holds a secret on the device: its keys, its config (broker password, Wi-Fi password)
# and the simulators' credentials. Overwritten, then removed.
SECRETS = ("identity.json", "identity.json.new", "config.json", "config.json.new",
           "credentials.json")
WIPE = """
import os
_gone = []
for _p in %r:
    try:
        _n = os.stat(_p)[6]
    except OSError:
        continue
    with open(_p, 'wb') as _f:
        for _i in range(0, _n, 256):
            _f.write(bytes(min(256, _n - _i)))
    os.remove(_p)
    _gone.append(_p)
print(repr(_gone))
"""


def decommission(dev, args, log=print):
    """Revoke the device on dev everywhere, then wipe its keys; returns its id."""
    public = device_public(dev)
    if public is None:
        raise FlashError("the device on %s has no identity: there is nothing to decommission"
                         % dev.port, "it is wiped already; `provision` makes it a new device")
    dev_hex = device_hex(device_id(public))
    if args.wipe_only:
        log("%s: not revoked (--wipe-only): revoke it on the gateway, `edgekeep devices revoke "
            "--device %s`, or it stays registered" % (dev_hex, dev_hex))
    elif args.gateway and is_remote(args.gateway):
        revoke_remote(dev, dev_hex, args, log)
    elif args.gateway:
        raise FlashError("decommission's --gateway is the admin page, https://HOST:PORT, not "
                         "%r" % args.gateway,
                         "give the admin page's address, or --gateway-data-dir on the gateway "
                         "host")
    elif args.gateway_data_dir:
        revoke_local(args.gateway_data_dir, dev_hex, log)
    else:
        raise FlashError(
            "decommission revokes the device on its gateway, and no gateway was given",
            "give --gateway https://HOST:PORT (with --token-file, or --admin-password-file), "
            "or --gateway-data-dir DIR on the gateway host; --wipe-only wipes without revoking")
    gone = dev.eval(WIPE % (SECRETS,))
    log("%s: wiped %s from the device" % (dev_hex, ", ".join(gone) or "nothing"))
    return dev_hex


def revoke_remote(dev, dev_hex, args, log):
    from tools.flashlib.remote import Gateway, has_password, read_password, read_token
    gateway = Gateway(args.gateway, args.fingerprint, args.ca_file)
    if has_password(args):
        gateway.login(read_password(args))
        try:
            gateway.revoke(dev_hex)
        finally:
            gateway.logout()
    else:
        token = read_token(args)
        gateway.check_token(token)    # its certificate and the token, before the device signs
        gateway.retire(token, {"device": dev_hex,
                               "signature": sign_retire(dev, dev_hex, b"", log)})
    log("revoked %s through %s (gateway, broker account, chain)" % (dev_hex, gateway.url))
