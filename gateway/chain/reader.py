"""Read-only chain access: DeviceRegistry, ProofAnchor, StorageAudit and StorageNetwork by
their addresses.

What an independent verifier or Keeper needs (no key, no deployment file); the gateway's
own client (gateway/chain/client.py) is this plus transactions and deployment.
"""
from typing import Any

from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import BlockNotFound

from gateway.chain.compile import load_artifact

CONTRACTS = ("DeviceRegistry", "ProofAnchor", "StorageAudit", "StorageNetwork")
# Proof files and deployments written before StorageNetwork existed name only these; a reader
# on them works, but for the StorageNetwork methods.
REQUIRED = ("DeviceRegistry", "ProofAnchor", "StorageAudit")


def connect(rpc_url: str, request_timeout: float = 10) -> Web3:
    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": request_timeout}))


def hex0x(value: bytes | str) -> str:
    return HexBytes(value).to_0x_hex()


def check_len(name: str, value: Any, size: int) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != size:
        raise ValueError("%s must be %d bytes, got %r" % (name, size, value))


class ChainReader:
    def __init__(self, rpc_url: str, contracts: dict[str, str],
                 request_timeout: float = 10) -> None:
        self.w3 = connect(rpc_url, request_timeout)
        self.chain_id: int = self.w3.eth.chain_id
        self.bind(contracts)

    def bind(self, contracts: dict[str, str]) -> None:
        """Talk to the contracts at these addresses (StorageNetwork may be missing)."""
        missing = [name for name in REQUIRED if name not in contracts]
        if missing:
            raise ValueError("no address for %s" % ", ".join(missing))
        # (load_artifact: gateway/chain/compile.py is not annotated; the ABI is JSON)
        c: dict[str, Contract] = {
            name: self.w3.eth.contract(
                address=Web3.to_checksum_address(contracts[name]),
                abi=load_artifact(name)["abi"])  # type: ignore[no-untyped-call]
            for name in CONTRACTS if name in contracts}
        self.registry, self.proof_anchor, self.storage_audit = (
            c["DeviceRegistry"], c["ProofAnchor"], c["StorageAudit"])
        self._storage_network = c.get("StorageNetwork")
        self._anchors: dict[int, dict[str, Any]] = {}  # an anchored root never changes

    @property
    def rpc_url(self) -> str:
        return str(self.w3.provider.endpoint_uri)  # type: ignore[attr-defined]

    # device registry

    def device(self, id8: bytes) -> dict[str, Any] | None:
        """The device's registration (pubkey, owner, active, registered_at), None if none."""
        check_len("device id", id8, 8)
        pubkey, owner, active, registered_at = self.registry.functions.deviceKey(
            bytes(id8)).call()
        if registered_at == 0:
            return None
        return {"pubkey": bytes(pubkey), "owner": owner, "active": active,
                "registered_at": registered_at}

    def device_key(self, device: str) -> bytes | None:
        """The registered public key of a device by its hex id; None if it has none (or the
        id is not one)."""
        try:
            record = self.device(bytes.fromhex(device))
        except ValueError:
            return None
        return record["pubkey"] if record else None

    def revoked_in(self, device: str) -> int | None:
        """The block in which the device was revoked (its DeviceRevoked log), None if it is
        active or unknown."""
        try:
            record = self.device(bytes.fromhex(device))
        except ValueError:
            return None
        if record is None or record["active"]:
            return None
        logs = self.registry.events.DeviceRevoked.get_logs(
            from_block=0, argument_filters={"id": bytes.fromhex(device)})
        return min(int(log["blockNumber"]) for log in logs) if logs else None

    # proof anchor

    def anchor_of(self, epoch: int) -> dict[str, Any] | None:
        """The epoch's anchor (root, count, block_number, timestamp), None if not anchored."""
        if epoch not in self._anchors:
            root, count, block, timestamp = self.proof_anchor.functions.anchorOf(epoch).call()
            if root == bytes(32):
                return None
            self._anchors[epoch] = {"root": bytes(root), "count": count, "block_number": block,
                                    "timestamp": timestamp}
        return self._anchors[epoch]

    def verify_inclusion(self, root32: bytes, leaf32: bytes, index: int, size: int,
                         proof: list[bytes]) -> bool:
        return bool(self.proof_anchor.functions.verifyInclusion(
            bytes(root32), bytes(leaf32), index, size, [bytes(p) for p in proof]).call())

    def verify_anchored(self, epoch: int, leaf32: bytes, index: int, size: int,
                        proof: list[bytes]) -> bool:
        return bool(self.proof_anchor.functions.verifyAnchored(
            epoch, bytes(leaf32), index, size, [bytes(p) for p in proof]).call())

    # storage audits

    def audit_of(self, audit: int) -> dict[str, Any] | None:
        root, seed_hash, seed_block, challenges, failed, block_number = \
            self.storage_audit.functions.auditOf(audit).call()
        if root == bytes(32):
            return None
        return {"root": bytes(root), "seed_hash": bytes(seed_hash), "seed_block": seed_block,
                "challenges": challenges, "failed": failed, "block_number": block_number}

    def verify_audit_record(self, audit: int, record32: bytes, index: int, size: int,
                            proof: list[bytes]) -> bool:
        return bool(self.storage_audit.functions.verifyRecord(
            audit, bytes(record32), index, size, [bytes(p) for p in proof]).call())

    def verify_chunk(self, proof: dict[str, Any]) -> bool:
        """StorageAudit.verifyChunk over a dict with the ChunkProof struct's fields."""
        p = proof
        return bool(self.storage_audit.functions.verifyChunk((
            p["epoch"], bytes(p["manifest"]), p["root_offset"], p["leaf"], p["size"],
            [bytes(h) for h in p["epoch_path"]], bytes(p["chunk_hash"]), p["chunk_index"],
            p["chunk_count"], [bytes(h) for h in p["chunk_path"]])).call())

    # storage network

    @property
    def storage_network(self) -> Contract:
        if self._storage_network is None:
            raise LookupError("no StorageNetwork address: these contracts predate it")
        return self._storage_network

    def gateway_of(self, identity32: bytes) -> dict[str, Any] | None:
        """The identity's registration (account, roles, endpoint, registered_at), None if none."""
        check_len("identity", identity32, 32)
        account, roles, endpoint, registered_at = self.storage_network.functions.gatewayOf(
            bytes(identity32)).call()
        if registered_at == 0:
            return None
        return {"account": account, "roles": roles, "endpoint": endpoint,
                "registered_at": registered_at}

    def commit_of(self, owner32: bytes, epoch: int) -> dict[str, Any] | None:
        """The owner's network epoch (root, agreements, block_number, timestamp), None if it is
        not committed."""
        check_len("owner", owner32, 32)
        root, agreements, block, timestamp = self.storage_network.functions.commitOf(
            bytes(owner32), epoch).call()
        if root == bytes(32):
            return None
        return {"root": bytes(root), "agreements": agreements, "block_number": block,
                "timestamp": timestamp}

    def latest_network_epoch(self, owner32: bytes) -> int:
        """The owner's last committed network epoch, 0 before its first."""
        check_len("owner", owner32, 32)
        return int(self.storage_network.functions.latestEpoch(bytes(owner32)).call())

    def agreement_of(self, owner32: bytes, provider32: bytes) -> dict[str, Any] | None:
        """The owner's last recorded agreement with the provider (capacity, term_end,
        since_epoch), None if it never recorded one."""
        check_len("owner", owner32, 32)
        check_len("provider", provider32, 32)
        capacity, term_end, since_epoch = self.storage_network.functions.agreementOf(
            bytes(owner32), bytes(provider32)).call()
        if since_epoch == 0:
            return None
        return {"capacity": capacity, "term_end": term_end, "since_epoch": since_epoch}

    # blocks

    def latest_block(self) -> dict[str, Any]:
        block = self.w3.eth.get_block("latest")
        return {"number": block["number"], "hash": hex0x(block["hash"])}

    def block_hash(self, number: int) -> str | None:
        """Hash (hex) of canonical block `number`, or None if the chain is not that long."""
        try:
            return hex0x(self.w3.eth.get_block(number)["hash"])
        except BlockNotFound:
            return None

    def block_is_mined(self, number: int, block_hash: str) -> bool:
        """True if block `number` on the canonical chain has this hash (no reorg dropped it)."""
        canonical = self.block_hash(number)
        return canonical is not None and HexBytes(canonical) == HexBytes(block_hash)
