"""The Provider network as the admin page, /api/network, the dashboard's Off-box card and
/metrics show it (docs/network.md, docs/web.md): this gateway's name and peer endpoint, what
its current peers survive (the Placer's own statement), and each peer's state and bytes.

Everything is read from a store the caller owns (the request's, or the monitor thread's),
never from the running placer's connection.
"""
import logging
import threading
import time

from gateway.network.identity import Identity
from gateway.network.placement import Placer
from gateway.network.server import COUNTER, STATUS
from gateway.store.peers import STATUSES
from gateway.web.pages import ago

log = logging.getLogger("edgekeep.web")

REFUSED_PREFIX = COUNTER % ""
REASONS = tuple(sorted(STATUS))


def when(t, now=None):
    """A time as a person reads it: "10:42" today, "3 May 10:42" this year, else the date."""
    if not t:
        return "-"
    now = time.time() if now is None else now
    lt, ln = time.localtime(t), time.localtime(now)
    if lt[:3] == ln[:3]:
        return time.strftime("%H:%M", lt)
    if lt.tm_year == ln.tm_year:
        return time.strftime("%d %b %H:%M", lt).lstrip("0")
    return time.strftime("%Y-%m-%d", lt)


def reachable(peer, now=None):
    """(True/False/None, words): "yes, 2 min ago", "no, since 10:42", "not called yet"."""
    if peer.unreachable_since:
        return False, "no, since %s" % when(peer.unreachable_since, now)
    if peer.last_seen:
        return True, "yes, %s" % ago(peer.last_seen)
    return None, "not called yet"


class Network:
    """This gateway's side of the network for the pages: its identity (the running gateway's,
    else the data directory's, made at first use as the gateway does) and peer endpoint."""

    def __init__(self, cfg, gateway=None):
        self.cfg = cfg
        self.gateway = gateway
        self._identity = None
        self._lock = threading.Lock()   # the monitor thread and requests: one key made

    def identity(self):
        own = getattr(self.gateway, "identity", None)
        if own is not None:
            return own
        with self._lock:
            if self._identity is None:
                self._identity = Identity.load_or_create(self.cfg.data_dir)
            return self._identity

    def endpoint(self):
        """(how peers reach this gateway or None, what to say instead)."""
        server = getattr(self.gateway, "peer_server", None)
        if server is not None:
            return getattr(server, "endpoint", None) or server.url, None
        if self.cfg.peer_port < 0:
            return None, "peer port closed: set peer_port"
        return None, "peer port not open in this process"

    def me(self):
        ident = self.identity()
        endpoint, note = self.endpoint()
        return {"name": ident.name, "short": ident.short, "endpoint": endpoint,
                "endpoint_note": note}

    def survival(self, store):
        """Placer.survival() over this store, with the gateway's code (network_k of
        network_m), plus "level": "bad" (not restorable without this gateway), "caution"
        (fewer than m peers: it and one peer lost lose data) or "ok"."""
        s = Placer(store, None, None, self.cfg.network_k, self.cfg.network_m).survival()
        s["level"] = ("bad" if s["survives"] is None else
                      "caution" if s["peers"] < s["m"] else "ok")
        return s

    def peers(self, store, now=None):
        """Every peer as the page and /api/network show it, removed ones last."""
        now = time.time() if now is None else now
        held = store.peers.used_by_owner()
        rows = []
        for p in store.peers.all():
            ok, words = reachable(p, now)
            rows.append({
                "name": p.name, "short": p.short, "endpoint": p.endpoint, "status": p.status,
                "reachable": ok, "reachable_text": words, "last_seen": p.last_seen,
                "unreachable_since": p.unreachable_since,
                "bytes_placed": store.placements.bytes_on(p.name),
                "bytes_held": held.get(p.name, 0), "capacity": p.capacity, "quota": p.quota,
                "paired_at": p.paired_at, "term_end": p.term_end, "last_audit": p.last_audit,
                "audit_failures": p.audit_failures, "last_error": p.last_error})
        rows.sort(key=lambda r: (r["status"] == "removed", r["name"]))
        return rows

    def view(self, store, now=None):
        """What GET /api/network answers and the Peers page shows."""
        return {"gateway": self.me(), "survival": self.survival(store),
                "peers": self.peers(store, now), "refused": refused(store)}

    def summary(self, store):
        """The monitor's snapshot entry (the Off-box card, /metrics): survival, peers by
        status, refusals and each peer's bytes by short name."""
        try:
            s = self.survival(store)
            peers = self.peers(store)
            ident = self.identity()
        except Exception as e:      # the rest of the snapshot goes on without it
            log.warning("network state not read: %s", e)
            return {"error": str(e)[:200], "statement": "network state not read: %s" % e}
        statuses = dict.fromkeys(STATUSES, 0)
        for p in peers:
            statuses[p["status"]] = statuses.get(p["status"], 0) + 1
        s.update(short=ident.short, paired=len(peers), statuses=statuses,
                 refused=refused(store),
                 placed={p["short"]: p["bytes_placed"] for p in peers},
                 held={p["short"]: p["bytes_held"] for p in peers})
        return s


def refused(store):
    """{reason: requests the peer port refused}, every reason (0 if none)."""
    counts = dict.fromkeys(REASONS, 0)
    for name, n in store.counts().items():
        if name.startswith(REFUSED_PREFIX):
            counts[name[len(REFUSED_PREFIX):]] = n
    return counts
