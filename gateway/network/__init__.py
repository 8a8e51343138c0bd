"""The Provider network (docs/network.md): the gateway's identity, pairing with peers, the
signed HTTPS peer protocol, the shares it places on peers and holds for them, audits
across peers and restore. Imports keeper, anchor, store, chain, wire.
"""
