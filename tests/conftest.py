"""Fixtures every test module can use, and the default marker.

Helpers that test modules import (wait_for, MQTT clients, ...) live in tests/helpers/; test
modules never import each other."""
import os

import pytest

from gateway.mqtt.broker import Mosquitto
from tests.helpers.postgres import PostgresMissing, PostgresServer

MARKERS = ("unit", "integration", "browser")


def pytest_collection_modifyitems(items):
    """A test module without pytestmark = pytest.mark.unit/integration/browser is integration:
    it is left out of `make test-unit` until someone shows it is pure. A test that starts
    PostgreSQL (the postgres_* fixtures; database_url's PostgreSQL case) is integration too,
    in whichever module: `make test-unit` runs `-m "unit and not integration"`."""
    for item in items:
        if not any(item.get_closest_marker(m) for m in MARKERS) \
                or "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def broker_options():
    """Keyword arguments for the `broker` fixture's Mosquitto; a module that needs accounts
    overrides it: `def broker_options(): return {"auth": True}`."""
    return {}


@pytest.fixture
def broker(tmp_path, broker_options):
    """A real Mosquitto on a free port, in tmp_path/broker."""
    with Mosquitto(os.path.join(tmp_path, "broker"), **broker_options) as b:
        yield b


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL for the whole session, in a temporary directory
    (tests/helpers/postgres.py). None installed: the tests that need it fail, saying what to
    install."""
    server = None
    try:
        server = PostgresServer()
        server.start()
    except PostgresMissing as e:
        if server is not None:
            server.stop()
        pytest.fail(str(e), pytrace=False)
    except BaseException:
        if server is not None:
            server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    from gateway.store import postgres
    name, url = postgres_server.create_database()
    yield url
    postgres.close_pools(url)
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def new_database_url(request):
    """new_database_url(): the database_url of a new, empty store, on the backend of the
    test's case: "" (SQLite: each data directory has its own file) or a new PostgreSQL
    database (an integration case: it starts a server), dropped after the test. A test that
    takes it, or database_url, runs on both backends."""
    if request.param == "sqlite":
        yield lambda: ""
        return
    from gateway.store import postgres
    server = request.getfixturevalue("postgres_server")
    made = []

    def new():
        name, url = server.create_database()
        made.append((name, url))
        return url
    yield new
    for name, url in made:
        postgres.close_pools(url)
        server.drop_database(name)


@pytest.fixture
def database_url(new_database_url):
    """The database_url of the test's store, on each backend in turn (new_database_url)."""
    return new_database_url()
