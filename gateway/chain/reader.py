"""Read-only chain access from contract addresses alone: what an independent verifier or
Keeper uses (no key, no deployment file)."""
from web3 import Web3

from gateway.chain.compile import load_artifact


class ChainReader:
    """Read-only chain access from contract addresses: what an independent Keeper uses."""

    def __init__(self, rpc_url, contracts):
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 10}))
        self.chain_id = self.w3.eth.chain_id
        c = {name: self.w3.eth.contract(address=Web3.to_checksum_address(contracts[name]),
                                        abi=load_artifact(name)["abi"])
             for name in ("DeviceRegistry", "ProofAnchor", "StorageAudit")}
        self.registry, self.proof_anchor, self.storage_audit = (
            c["DeviceRegistry"], c["ProofAnchor"], c["StorageAudit"])
        self._anchors = {}

    def anchor_of(self, epoch):
        if epoch not in self._anchors:
            root, count, block, _ = self.proof_anchor.functions.anchorOf(epoch).call()
            self._anchors[epoch] = (None if root == bytes(32) else
                                    {"root": bytes(root), "count": count, "block_number": block})
        return self._anchors[epoch]

    def device(self, id8):
        pubkey, owner, active, registered_at = self.registry.functions.deviceKey(id8).call()
        return {"pubkey": bytes(pubkey), "active": active} if registered_at else None

    def latest_block(self):
        return {"number": self.w3.eth.block_number}

    def block_hash(self, number):
        return self.w3.eth.get_block(number)["hash"].to_0x_hex()
