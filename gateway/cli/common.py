"""What every command group shares: opening a data directory's store and its chain."""
import contextlib
import os
from collections.abc import Iterator

from gateway.chain.client import Chain
from gateway.store import schema
from gateway.store.database import Store, db_path, postgres_marker


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


def open_store(data_dir: str, create: bool = False, url: str | None = None) -> Store:
    """The store of an existing gateway data directory (or a new one, with create), migrated
    to this EdgeKeep's schema: a command's one Store.open. url: the config's database_url
    (PostgreSQL), for the commands that take --config."""
    if not create and not url and not os.path.exists(db_path(data_dir)) \
            and not os.path.exists(postgres_marker(data_dir)):
        raise SystemExit("error: %s is not a gateway data directory (no store.db)" % data_dir)
    try:
        return Store.open(data_dir, url)
    except schema.SchemaError as e:
        raise SystemExit("error: %s" % e)
