"""database_url in the config chooses the store's backend, and the commands that take
--config pass it through; a PostgreSQL data directory is never opened as SQLite."""
import os

import pytest

from gateway.config import Config
from gateway.store.database import Store, db_path
from tests.helpers.paths import cli

pytestmark = pytest.mark.integration


def write_config(tmp_path, url):
    path = tmp_path / "gateway.toml"
    path.write_text('data_dir = "gw"\ndatabase_url = "%s"\n' % url)
    return str(path)


def test_the_config_says_which_database(tmp_path, postgres_url):
    cfg = Config.load(write_config(tmp_path, postgres_url))
    assert cfg.database_url == postgres_url
    assert Config.load(write_config(tmp_path, "")).database_url == ""
    with pytest.raises(ValueError, match="database_url must be postgresql://"):
        Config.load(write_config(tmp_path, "mysql://x/y"))


def test_commands_use_the_postgresql_of_the_config_or_of_the_data_directory(tmp_path,
                                                                           postgres_url):
    config = write_config(tmp_path, postgres_url)
    data = str(tmp_path / "gw")
    store = Store.open(data, postgres_url)
    store.peers.add("ab" * 32, "https://friend:8443", 1 << 30, 1 << 30, 1765000000.0, 1.8e9)
    store.close()
    done = cli("gateway", "peer", "list", "--config", config)
    assert done.returncode == 0, done.stderr
    assert "abababab" in done.stdout                      # the peer stored in PostgreSQL
    assert not os.path.exists(db_path(data))

    # without --config: the URL the data directory's marker names (no password in it)
    done = cli("gateway", "peer", "list", "--data-dir", data)
    assert done.returncode == 0, done.stderr
    assert "abababab" in done.stdout
    assert not os.path.exists(db_path(data))
