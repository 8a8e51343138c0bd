"""Epochs and their anchors: sealing stored messages into a Merkle tree per epoch, and
the outbox that puts each root on chain. Imports wire, store, chain.
"""
