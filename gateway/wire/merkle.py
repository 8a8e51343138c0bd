"""Merkle trees over message digests, RFC 9162 (Certificate Transparency v2) with SHA-256.

leaf hash = SHA-256(0x00 || leaf), node hash = SHA-256(0x01 || left || right). The tree is
the RFC's left-balanced shape: build it bottom-up, pairing neighbours and carrying a
lone last node up unchanged. ProofAnchor.verifyInclusion checks the same proofs on chain.
"""
from collections.abc import Sequence
from hashlib import sha256


def leaf_hash(leaf: bytes) -> bytes:
    return sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right).digest()


def levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """All levels of the tree, leaf hashes first, the root level last."""
    if not leaves:
        raise ValueError("merkle: no leaves")
    level = [leaf_hash(x) for x in leaves]
    out = [level]
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        out.append(nxt)
        level = nxt
    return out


def root(leaves: Sequence[bytes]) -> bytes:
    return levels(leaves)[-1][0]


def proof_from_levels(tree: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    """The audit path for leaf index, bottom up."""
    path = []
    for level in tree[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
    return path


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    return proof_from_levels(levels(leaves), index)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes],
                     expected_root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn = index, size - 1
    r = leaf_hash(leaf)
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root
