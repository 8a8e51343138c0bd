"""The gateway's view of the chain: DeviceRegistry, ProofAnchor, StorageAudit and StorageNetwork
through web3.py.

Works against any EVM JSON-RPC endpoint: the local anvil (gateway.chain.node) or, for
example, IoTeX testnet. Contracts are deployed on first use and their addresses kept in a
deployment file, so later runs talk to the same contracts; a contract the file lacks (one
added in a later release) is deployed and added to it.
"""
import json
import os
import threading
from pathlib import Path

from eth_abi import decode as abi_decode
from eth_account import Account
from eth_utils import keccak
from hexbytes import HexBytes
from web3.exceptions import ContractLogicError, TimeExhausted, TransactionNotFound

from gateway.chain.compile import load_artifact
from gateway.chain.reader import CONTRACTS, ChainReader, check_len, connect, hex0x

# anvil's dev account 0, derived from the public "test test ... junk" mnemonic. Everyone knows
# this key: use it only on a local anvil chain, never on a public network.
DEFAULT_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
# StorageAudit is built over ProofAnchor, so it is deployed once ProofAnchor has an address.
DEPLOY_STAGES = (("DeviceRegistry", "ProofAnchor", "StorageNetwork"), ("StorageAudit",))
GAS_MARGIN = 1.2  # over eth_estimateGas, in case state shifts before the tx is mined
DEPLOY_TIMEOUT = 120


class ChainError(Exception):
    """A transaction or call failed; reason is the contract's custom error name, if any."""

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason


class Chain(ChainReader):
    """The chain as the gateway writes it: a ChainReader that also deploys the contracts
    (once, recorded in the deployment file) and sends transactions from its account."""

    def __init__(self, rpc_url, private_key, deployment_file, request_timeout=10):
        self.w3 = connect(rpc_url, request_timeout)
        self.account = Account.from_key(private_key)
        self.address = self.account.address
        self.chain_id = self.w3.eth.chain_id
        self.deployment_file = Path(deployment_file)
        self._lock = threading.Lock()
        self._last_sent = None  # (nonce, tx hash) of the last transaction sent
        artifacts = {name: load_artifact(name) for name in CONTRACTS}
        self._errors = _error_table(artifacts)
        self.deployment = self._load_deployment() or {"contracts": {}}
        if set(CONTRACTS) - set(self.deployment["contracts"]):
            self.deployment = self._deploy(artifacts, self.deployment)
        self.bind(self.deployment["contracts"])

    # deployment

    def _load_deployment(self):
        """The recorded deployment if it is for this chain and its code is there, else None."""
        try:
            deployment = json.loads(self.deployment_file.read_text())
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise ChainError("%s is not valid JSON (%s); fix or remove it"
                             % (self.deployment_file, e)) from None
        if deployment.get("chain_id") != self.chain_id:
            return None
        for address in deployment["contracts"].values():
            if not self.w3.eth.get_code(address):
                return None
        return deployment

    def _deploy(self, artifacts, deployment):
        """Deploy the contracts `deployment` lacks; write and return the completed deployment."""
        contracts = dict(deployment["contracts"])
        blocks = []
        for stage in DEPLOY_STAGES:
            tx_hashes = {}
            for name in stage:
                if name not in contracts:
                    args = (contracts["ProofAnchor"],) if name == "StorageAudit" else ()
                    factory = self.w3.eth.contract(abi=artifacts[name]["abi"],
                                                   bytecode=artifacts[name]["bytecode"])
                    tx_hashes[name] = self._send(factory.constructor(*args))
            for name, tx in tx_hashes.items():
                receipt = self._mined(tx, DEPLOY_TIMEOUT)
                contracts[name] = receipt["contractAddress"]
                blocks.append(receipt["blockNumber"])
        deployment = {
            "chain_id": self.chain_id,
            "deploy_block": deployment.get("deploy_block", min(blocks)),
            "deployer": deployment.get("deployer", self.address),
            "sources_sha256": artifacts[CONTRACTS[0]]["sources_sha256"],
            "contracts": contracts,
        }
        self.deployment_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.deployment_file.with_name(self.deployment_file.name + ".tmp")
        tmp.write_text(json.dumps(deployment, indent=2) + "\n")
        os.replace(tmp, self.deployment_file)
        return deployment

    # transactions

    def _send(self, call):
        """Build, sign and send a contract call or constructor; return the tx hash (hex)."""
        with self._lock:
            nonce = self._nonce()
            try:
                tx = call.build_transaction({"from": self.address, "nonce": nonce, "chainId": self.chain_id})
            except ContractLogicError as e:
                raise self._revert_error(e) from None
            tx["gas"] = int(tx["gas"] * GAS_MARGIN)
            tx_hash = self.w3.eth.send_raw_transaction(self.account.sign_transaction(tx).raw_transaction)
            self._last_sent = (nonce, tx_hash)
        return hex0x(tx_hash)

    def _nonce(self):
        """The node's pending nonce, unless it lags behind a transaction this process sent."""
        pending = self.w3.eth.get_transaction_count(self.address, "pending")
        if self._last_sent is None or pending > self._last_sent[0]:
            return pending
        nonce, tx_hash = self._last_sent
        try:
            self.w3.eth.get_transaction(tx_hash)
        except TransactionNotFound:
            return pending  # our last tx was dropped (say, the node restarted): reuse its nonce
        return nonce + 1  # the node holds our last tx but does not count it as pending

    def _wait(self, tx_hash, timeout):
        try:
            return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.2)
        except TimeExhausted:
            raise TimeoutError("transaction %s not mined within %s s" % (tx_hash, timeout)) from None

    def _mined(self, tx_hash, timeout):
        receipt = self._wait(tx_hash, timeout)
        if receipt["status"] != 1:
            raise ChainError("transaction %s reverted" % tx_hash)
        return receipt

    def _transact(self, call, timeout=60):
        return self._receipt_dict(self._mined(self._send(call), timeout))

    def _revert_error(self, e):
        data = e.data if isinstance(e.data, str) else None
        decoded = data and self._errors.get(bytes(HexBytes(data))[:4])
        if not decoded:
            return ChainError("reverted: %s" % (e.message or e))
        name, types = decoded
        args = abi_decode(types, bytes(HexBytes(data))[4:])
        shown = ", ".join(hex0x(a) if isinstance(a, bytes) else str(a) for a in args)
        return ChainError("reverted: %s(%s)" % (name, shown), reason=name)

    @staticmethod
    def _receipt_dict(receipt):
        return {"block_number": receipt["blockNumber"], "block_hash": hex0x(receipt["blockHash"]),
                "gas_used": receipt["gasUsed"], "status": receipt["status"]}

    # device registry

    def register_device(self, id8, pubkey65, owner):
        return self._receipt_dict(self.wait_mined(self.send_register_device(id8, pubkey65,
                                                                            owner)))

    def send_register_device(self, id8, pubkey65, owner):
        """Send register(id, key, owner) without waiting; the tx hash (wait_mined)."""
        check_len("device id", id8, 8)
        check_len("public key", pubkey65, 65)
        return self._send(self.registry.functions.register(bytes(id8), bytes(pubkey65), owner))

    def wait_mined(self, tx_hash, timeout=60):
        """The receipt of a transaction sent here once mined; ChainError if it reverted."""
        return self._mined(tx_hash, timeout)

    def revoke_device(self, id8):
        check_len("device id", id8, 8)
        return self._transact(self.registry.functions.revoke(bytes(id8)))

    def add_registrar(self, address):
        return self._transact(self.registry.functions.addRegistrar(address))

    # proof anchor

    def send_anchor(self, epoch, root32, count):
        """Send anchor(epoch, root, count) without waiting; resending the same root is harmless."""
        check_len("root", root32, 32)
        return self._send(self.proof_anchor.functions.anchor(epoch, bytes(root32), count))

    def known(self, tx_hash):
        """Whether the node has the transaction, mined or waiting in its pool."""
        try:
            self.w3.eth.get_transaction(tx_hash)
        except TransactionNotFound:
            return False
        return True

    def wait_receipt(self, tx_hash, timeout):
        """Receipt of a mined transaction (status 0 if it reverted); TimeoutError if not mined."""
        return self._receipt_dict(self._wait(tx_hash, timeout))

    def add_anchorer(self, address):
        return self._transact(self.proof_anchor.functions.addAnchorer(address))

    # storage audits

    def send_audit(self, audit, seed_block, root32, challenges, failed):
        """Send StorageAudit.record without waiting; resending the same audit is harmless."""
        check_len("root", root32, 32)
        return self._send(self.storage_audit.functions.record(audit, seed_block, bytes(root32),
                                                              challenges, failed))

    # storage network

    def register_gateway(self, identity32, roles, endpoint, signature):
        """Register (or update) the gateway identity from this account; wait for it.
        `signature`: the identity's Ed25519 signature (64 bytes), only emitted on chain."""
        check_len("identity", identity32, 32)
        check_len("signature", signature, 64)
        return self._transact(self.storage_network.functions.register(
            bytes(identity32), roles, endpoint, bytes(signature)))

    def send_commit(self, owner32, epoch, root32, agreements, changed):
        """Send StorageNetwork.commit without waiting; return the tx hash. `changed` is a list
        of (provider32, capacity, term_end); resending the same epoch is harmless."""
        check_len("owner", owner32, 32)
        check_len("root", root32, 32)
        for provider32, _, _ in changed:
            check_len("provider", provider32, 32)
        return self._send(self.storage_network.functions.commit(
            bytes(owner32), epoch, bytes(root32), agreements,
            [(bytes(p), capacity, term_end) for p, capacity, term_end in changed]))


def _error_table(artifacts):
    """4-byte selector -> (name, argument types) for every custom error in the ABIs."""
    table = {}
    for artifact in artifacts.values():
        for entry in artifact["abi"]:
            if entry["type"] == "error":
                types = [i["type"] for i in entry["inputs"]]
                signature = "%s(%s)" % (entry["name"], ",".join(types))
                table[keccak(text=signature)[:4]] = (entry["name"], types)
    return table
