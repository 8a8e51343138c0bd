"""/metrics for Prometheus, read from the admin monitor's latest snapshot at scrape time.

Aggregates only (no device ids), so the endpoint can be scraped without a session; peers
are labelled with their short names (public keys' first 16 hex digits).
Ingest rate is `rate(edgekeep_messages_stored_total[1m])`.
"""
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.responses import Response

from gateway.alerts.rules import RULES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SnapshotCollector:
    def __init__(self, monitor):
        self.monitor = monitor

    def collect(self):
        s = self.monitor.snapshot
        yield CounterMetricFamily("edgekeep_messages_stored", "Messages verified and stored",
                                  value=s["messages"])
        rejects = CounterMetricFamily("edgekeep_rejects", "Messages rejected, by reason",
                                      labels=["reason"])
        for reason, n in sorted(s["rejects"].items()):
            rejects.add_metric([reason], n)
        yield rejects
        yield CounterMetricFamily("edgekeep_duplicates",
                                  "Messages received again with the same bytes: acked, not stored",
                                  value=s["duplicates"])
        devices = GaugeMetricFamily("edgekeep_devices", "Registered devices by state",
                                    labels=["state"])
        for state in ("online", "offline", "revoked"):
            devices.add_metric([state], s["devices"][state])
        yield devices
        yield GaugeMetricFamily("edgekeep_device_queue_depth",
                                "Messages queued on devices (sum of their last status reports)",
                                value=s["queued"])
        yield CounterMetricFamily("edgekeep_device_drops", "Batches devices dropped from full queues",
                                  value=s["drops"])
        yield GaugeMetricFamily("edgekeep_anchor_pending_epochs", "Sealed epochs not yet mined",
                                value=s["pending_epochs"])
        if s["anchor"]:
            yield GaugeMetricFamily("edgekeep_anchor_latency_seconds",
                                    "Seal to mined time of the last anchored epoch",
                                    value=s["anchor"]["latency"])
            yield GaugeMetricFamily("edgekeep_anchor_last_block", "Block of the last anchor",
                                    value=s["anchor"]["block"])
        if s["audit"]:  # a row of the Keeper's audits table; its `ok` column is the result
            yield GaugeMetricFamily("edgekeep_audit_last_ok", "1 if the last storage audit passed",
                                    value=1 if s["audit"].get("ok") else 0)
        storage = GaugeMetricFamily("edgekeep_storage_bytes", "Data directory usage",
                                    labels=["kind"])
        storage.add_metric(["used"], s["storage"]["used"])
        storage.add_metric(["free"], s["storage"]["free"])
        yield storage
        for name in ("broker", "chain"):
            ok = s[name]["ok"]
            if ok is not None:
                yield GaugeMetricFamily("edgekeep_%s_up" % name, "1 if the %s is reachable" % name,
                                        value=1 if ok else 0)
        yield from components(s.get("components") or {})
        yield from workers(s.get("workers") or [])
        if s.get("network") and "error" not in s["network"]:
            yield from network(s["network"])
        if s.get("alerts"):
            yield from alerts(s["alerts"])


def components(comps):
    """The supervised threads (gateway/health.py): up, state, restarts, the ingest's pause."""
    up = GaugeMetricFamily("edgekeep_component_up",
                           "1 if the component's thread runs (alive, waiting or paused)",
                           labels=["component"])
    state = GaugeMetricFamily("edgekeep_component_state",
                              "1 for the component's current state", labels=["component", "state"])
    restarts = CounterMetricFamily("edgekeep_component_restarts",
                                   "Restarts after an unexpected exception", labels=["component"])
    errors = CounterMetricFamily("edgekeep_component_errors",
                                 "Unexpected exceptions the supervisor caught", labels=["component"])
    for name, c in comps.items():
        up.add_metric([name], 1 if c["up"] else 0)
        state.add_metric([name, c["state"]], 1)
        restarts.add_metric([name], c["restarts"])
        errors.add_metric([name], c["errors"])
    yield from (up, state, restarts, errors)
    if "ingest" in comps:
        ingest = comps["ingest"]
        paused = GaugeMetricFamily("edgekeep_ingest_paused",
                                   "1 while the ingest takes no messages, by reason",
                                   labels=["reason"])
        paused.add_metric(["disk_full"], 1 if ingest["state"] == "paused"
                          and ingest["reason"] == "disk_full" else 0)
        yield paused


def workers(rows):
    """Each ingest worker (gateway/workers.py), labelled with its name; its msg/s is
    `rate(edgekeep_worker_stored_total[1m])`."""
    families = [
        (GaugeMetricFamily, "edgekeep_worker_up", "1 if the worker reported within 6 s", "alive"),
        (CounterMetricFamily, "edgekeep_worker_received",
         "Messages the worker took from the broker since it started", "received"),
        (CounterMetricFamily, "edgekeep_worker_stored",
         "New messages the worker stored since it started", "stored"),
        (GaugeMetricFamily, "edgekeep_worker_inflight",
         "Messages taken from the broker, not yet committed and acked", "inflight"),
        (GaugeMetricFamily, "edgekeep_worker_lag_seconds",
         "Seconds since the worker last committed while messages waited", "lag"),
        (GaugeMetricFamily, "edgekeep_worker_lease",
         "1 for the worker that seals, anchors and runs the Keepers", "lease")]
    for kind, name, doc, key in families:
        family = kind(name, doc, labels=["worker"])
        for w in rows:
            family.add_metric([w["name"]], float(w[key]))
        yield family


def alerts(a):
    """Alerts (gateway/alerts/): active ones by rule, notices sent and failed (each failed try)
    by channel, notices waiting by channel."""
    active = GaugeMetricFamily("edgekeep_alerts_active", "Active alerts by rule", labels=["rule"])
    for rule in RULES:
        active.add_metric([rule], a["by_rule"].get(rule, 0))
    notices = CounterMetricFamily("edgekeep_alert_notices",
                                  "Alert notices sent, and tries that failed, by channel",
                                  labels=["channel", "outcome"])
    for name, n in sorted(a["counts"].items()):
        channel, _, outcome = name.rpartition("_")
        notices.add_metric([channel, outcome], n)
    pending = GaugeMetricFamily("edgekeep_alert_notices_pending",
                                "Alert notices not delivered yet, by channel", labels=["channel"])
    for channel, n in sorted(a["pending"].items()):
        pending.add_metric([channel], n)
    yield from (active, notices, pending)


def network(n):
    """The Provider network (docs/network.md): refusals, what is not off-box yet, peers by
    status, and bytes each way per peer (labelled with its short name)."""
    refused = CounterMetricFamily("edgekeep_peer_refused",
                                  "Requests the peer port refused, by reason", labels=["reason"])
    for reason, count in sorted(n["refused"].items()):
        refused.add_metric([reason], count)
    yield refused
    yield GaugeMetricFamily("edgekeep_network_not_offbox_bytes",
                            "Bytes of blobs not yet durable off-box (fewer than k shares placed)",
                            value=n["not_offbox_bytes"])
    yield GaugeMetricFamily("edgekeep_network_not_offbox_blobs",
                            "Blobs not yet durable off-box (fewer than k shares placed)",
                            value=n["not_offbox_blobs"])
    peers = GaugeMetricFamily("edgekeep_peers", "Paired peers by status", labels=["status"])
    for status, count in sorted(n["statuses"].items()):
        peers.add_metric([status], count)
    yield peers
    placed = GaugeMetricFamily("edgekeep_peer_bytes_placed",
                               "Bytes of this gateway's share records on the peer",
                               labels=["peer"])
    for peer, size in sorted(n["placed"].items()):
        placed.add_metric([peer], size)
    yield placed
    held = GaugeMetricFamily("edgekeep_peer_bytes_held",
                             "Bytes of the peer's share records held here", labels=["peer"])
    for peer, size in sorted(n["held"].items()):
        held.add_metric([peer], size)
    yield held


def updates(u):
    """OTA rollouts (gateway/updates/): rollouts by status, the devices of open ones by state,
    refused bundle uploads by reason."""
    rollouts = GaugeMetricFamily("edgekeep_rollouts", "OTA rollouts by status", labels=["status"])
    for status, n in sorted(u["rollouts"].items()):
        rollouts.add_metric([status], n)
    devices = GaugeMetricFamily("edgekeep_rollout_devices",
                                "Devices of running or halted rollouts by the state of their update",
                                labels=["state"])
    for state, n in sorted(u["devices"].items()):
        devices.add_metric([state], n)
    rejected = CounterMetricFamily("edgekeep_update_bundles_rejected",
                                   "Bundle uploads (and release keys) refused, by reason",
                                   labels=["reason"])
    for reason, n in sorted(u["rejected"].items()):
        rejected.add_metric([reason], n)
    return [rollouts, devices, rejected]


class Families:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def endpoint(monitor, updates_of=None):
    """GET /metrics; updates_of(request): what updates() shows, read at each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(monitor))

    async def metrics(request):
        body = generate_latest(registry)
        if updates_of is not None:
            extra = CollectorRegistry(auto_describe=False)
            extra.register(Families(updates(updates_of(request))))
            body += generate_latest(extra)
        return Response(body, media_type=CONTENT_TYPE)
    return metrics
