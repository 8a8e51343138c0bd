"""GET /api/devices/{id}/messages (issue 19, point 3): a time range, pages newest first that
follow the Link header to the oldest message (each message once, also when several share a
time), a 4xx saying what to send for every bad parameter, and one index range per page."""
import base64
import re

import pytest
from starlette.testclient import TestClient

from gateway.config import Config
from gateway.store.database import Store
from gateway.web import auth
from gateway.web.app import create_app
from tests.helpers.telemetry import store_history

pytestmark = pytest.mark.unit

PASSWORD = "correct horse battery"
T0 = 1_790_000_000
# 25 messages a minute apart, then three sharing one time (a device whose clock stood still)
TIMES = [T0 + 60 * i for i in range(25)] + [T0 + 3000] * 3


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("messages") / "gw")
    store = Store.open(d)
    ident, messages = store_history(store, TIMES)
    store.close()
    auth.set_password(d, PASSWORD)
    with TestClient(create_app(Config(data_dir=d)), follow_redirects=False) as c:
        r = c.post("/api/session", json={"password": PASSWORD})
        assert r.status_code == 200
        yield {"client": c, "device": ident.hex, "messages": messages, "data": d}


def url(gw, query=""):
    return "/api/devices/%s/messages%s" % (gw["device"], query)


def next_link(r):
    m = re.fullmatch(r'<([^>]+)>; rel="next"', r.headers.get("link", ""))
    return m and m.group(1)


def walk(client, first):
    """Every page from `first` on, following Link: [(status, [seq, ...])]."""
    pages, link = [], first
    while link:
        r = client.get(link)
        assert r.status_code == 200, r.text
        pages.append([m["seq"] for m in r.json()])
        link = next_link(r)
    return pages


def newest_first(messages):
    return [m["seq"] for m in sorted(messages, key=lambda m: (m["time"], m["seq"]), reverse=True)]


def test_pages_reach_the_oldest_message_each_message_once(gateway):
    c = gateway["client"]
    pages = walk(c, url(gateway, "?kind=t&limit=5"))
    assert [len(p) for p in pages] == [5, 5, 5, 5, 5, 3]       # the last, not full, has no Link
    seqs = [s for p in pages for s in p]
    assert seqs == newest_first(gateway["messages"])     # 28, 27, 26 (same time), 25, ... 1
    assert seqs[-1] == 1 and len(set(seqs)) == len(TIMES)
    # the stored bytes, as they are
    first = c.get(url(gateway, "?limit=1")).json()[0]
    stored = Store.open(gateway["data"])
    try:
        raw = stored.message(gateway["device"], first["seq"])["raw"]
    finally:
        stored.close()
    assert base64.b64decode(first["raw"]) == raw


def test_a_time_range_selects_by_the_messages_time_to_exclusive(gateway):
    c = gateway["client"]
    start, end = T0 + 60 * 5, T0 + 60 * 10          # messages 6 ... 10 (seq = minute + 1)
    r = c.get(url(gateway, "?from=%d&to=%d" % (start, end)))
    assert [m["seq"] for m in r.json()] == [10, 9, 8, 7, 6]
    assert all(start <= m["time"] < end for m in r.json()) and "link" not in r.headers
    # paged, the range stays in the next link
    pages = walk(c, url(gateway, "?from=%d&to=%d&limit=2" % (start, end)))
    assert pages == [[10, 9], [8, 7], [6]]
    assert [m["seq"] for m in c.get(url(gateway, "?from=%d" % (T0 + 3000))).json()] == [28, 27, 26]
    assert c.get(url(gateway, "?to=%d" % T0)).json() == []
    assert [m["seq"] for m in c.get(url(gateway, "?kind=s")).json()] == []


def test_a_full_last_page_ends_with_an_empty_one(gateway):
    pages = walk(gateway["client"], url(gateway, "?limit=%d" % len(TIMES)))
    assert [len(p) for p in pages] == [len(TIMES), 0]


@pytest.mark.parametrize("query, words", [
    ("?limit=0", "limit must be between 1 and 1000"),
    ("?limit=1001", "limit must be between 1 and 1000"),
    ("?limit=ten", "limit must be an integer"),
    ("?from=-1", "from must be between 0 and 4294967295"),
    ("?from=1.5", "from must be an integer"),
    ("?from=" + "9" * 40, "from must be between"),
    ("?to=0", "to must be between 1 and 4294967296"),
    ("?to=tomorrow", "to must be an integer"),
    ("?from=100&to=100", "from (100) must be before to (100)"),
    ("?from=200&to=100", "must be before"),
    ("?cursor=abc", "cursor must be time-seq"),
    ("?cursor=100-0", "cursor must be time-seq"),
    ("?cursor=9999999999-1", "cursor must be time-seq"),
    ("?cursor=100-" + "1" * 11, "cursor must be time-seq"),
    ("?cursor=", "cursor must be time-seq"),
    ("?kind=T", "kind must be a message kind"),
    ("?kind=" + "t" * 9, "kind must be a message kind"),
    ("?since=100", "unknown parameter since: use kind, from, to, cursor, limit"),
])
def test_bad_parameters_get_a_400_saying_what_to_send(gateway, query, words):
    r = gateway["client"].get(url(gateway, query))
    assert r.status_code == 400, (query, r.status_code, r.text)
    assert words in r.json()["error"], (query, r.json())


def test_no_such_device_is_a_404(gateway):
    assert gateway["client"].get("/api/devices/%s/messages" % ("0" * 16)).status_code == 404


def test_each_page_is_one_range_of_the_index(gateway):
    """With a kind (as the device page asks), a page is a search of messages_device_time:
    no table scan, no sort, whatever the device has stored (bench/dashboard.py times it
    with a million messages). SQLite's plan of the very statement the store ran."""
    store = Store.open(gateway["data"])
    try:
        ran = []
        store.db.set_trace_callback(ran.append)
        rows = store.messages_page(gateway["device"], "t", 0, 2 ** 32, (T0 + 600, 11), 3)
        store.db.set_trace_callback(None)
        assert [r["seq"] for r in rows] == [10, 9, 8]
        plan = " ".join(row[-1] for row in store.db.execute("EXPLAIN QUERY PLAN " + ran[-1]))
    finally:
        store.close()
    assert plan.startswith("SEARCH messages USING COVERING INDEX messages_device_time") or \
        plan.startswith("SEARCH messages USING INDEX messages_device_time"), plan
    # the cursor bounds the range searched (time<?), so a page far back costs what the first does
    assert "time<?" in plan and "TEMP B-TREE" not in plan and "SCAN" not in plan, plan


def test_the_link_keeps_the_query_and_needs_the_session(gateway):
    c = gateway["client"]
    r = c.get(url(gateway, "?kind=t&from=%d&limit=2" % T0))
    link = next_link(r)
    assert link.startswith("/api/devices/%s/messages?" % gateway["device"])
    assert "kind=t" in link and "from=%d" % T0 in link and "limit=2" in link and "cursor=" in link
    with TestClient(create_app(Config(data_dir=gateway["data"]))) as anonymous:
        assert anonymous.get(link).status_code == 401


def test_the_store_pages_alike_on_both_backends(tmp_path, database_url):
    """Store.messages_page on SQLite and PostgreSQL: the same pages, ties in time broken by
    seq, the range's ends kept, other kinds and devices left out."""
    store = Store.open(str(tmp_path / "gw"), database_url)
    try:
        ident, messages = store_history(store, TIMES)
        other, _ = store_history(store, TIMES[:3], name="other")
        pages, after = [], None
        while True:
            rows = store.messages_page(ident.hex, "t", T0 + 60, T0 + 3001, after, 4)
            pages.append([r["seq"] for r in rows])
            if len(rows) < 4:
                break
            after = (rows[-1]["time"], rows[-1]["seq"])
        assert store.messages_page(ident.hex, "s", 0, 2 ** 32, None, 10) == []
    finally:
        store.close()
    assert [s for p in pages for s in p] == newest_first(
        [m for m in messages if T0 + 60 <= m["time"] < T0 + 3001])
    assert [len(p) for p in pages] == [4] * 6 + [3]


def test_the_csp_lets_map_tiles_in_as_images_only(gateway):
    """The device page's map tiles (track.js, when the owner turns them on): the tile host
    is in img-src and nowhere else; scripts, styles and requests stay this origin's."""
    csp = gateway["client"].get("/login").headers["content-security-policy"]
    rules = {r.split()[0]: r.split()[1:] for r in csp.split("; ")}
    assert "https://tile.openstreetmap.org" in rules["img-src"]
    assert rules["default-src"] == ["'self'"]
    assert [name for name, values in rules.items()
            if any("openstreetmap" in v for v in values)] == ["img-src"]
