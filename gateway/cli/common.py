"""What every command group shares: opening a data directory's store and its chain."""
import contextlib
import os
from collections.abc import Iterator

from gateway.chain.client import Chain
from gateway.store.database import Store, db_path


@contextlib.contextmanager
def chain_for(data_dir: str, rpc: str | None) -> Iterator[Chain]:
    """The data dir's chain; a local anvil this command had to start is stopped after."""
    from gateway.chain import node
    from gateway.chain.client import DEFAULT_DEV_KEY
    started = not rpc and node.running_url(data_dir) is None
    url = rpc or node.ensure_running(data_dir)
    try:
        yield Chain(url, os.environ.get("EDGEKEEP_CHAIN_KEY", DEFAULT_DEV_KEY),
                    os.path.join(data_dir, "chain", "deployment.json"))
    finally:
        if started:
            node.stop_running(data_dir)


def open_store(data_dir: str, create: bool = False) -> Store:
    """The store of an existing gateway data directory (or a new one, with create), migrated
    to this EdgeKeep's schema: a command's one Store.open."""
    if not create and not os.path.exists(db_path(data_dir)):
        raise SystemExit("error: %s is not a gateway data directory (no store.db)" % data_dir)
    return Store.open(data_dir)
