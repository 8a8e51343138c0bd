"""Gas per epoch anchor against messages per epoch, on a local anvil: it must stay flat.

    .venv/bin/python bench/anchor_gas.py
"""
import os
import tempfile

import common  # noqa: F401  (puts the repo on sys.path)

from gateway.chain.client import DEFAULT_DEV_KEY, Chain
from gateway.chain.node import Anvil
from gateway.wire import merkle

COUNTS = (1, 10, 100, 1000, 10000, 100000)


def main():
    with tempfile.TemporaryDirectory(prefix="ek-gas-") as tmp, Anvil(tmp, block_time=0) as anvil:
        chain = Chain(anvil.rpc_url, DEFAULT_DEV_KEY, os.path.join(tmp, "deployment.json"))
        gas = []
        for epoch, n in enumerate(COUNTS, 1):
            root = merkle.root([os.urandom(32) for _ in range(n)])
            receipt = chain.wait_receipt(chain.send_anchor(epoch, root, n), 30)
            gas.append(receipt["gas_used"])
    per = ", ".join("%d msgs: %d" % (n, g) for n, g in zip(COUNTS, gas))
    print("bench/anchor_gas: gas per epoch tx %s; spread %d gas (%.2f%%)"
          % (per, max(gas) - min(gas), 100.0 * (max(gas) - min(gas)) / min(gas)))


if __name__ == "__main__":
    main()
