"""Gateway configuration: a TOML file, every key optional.

    data_dir = "/var/lib/edgekeep"
    database_url = ""                       # the store: empty = SQLite in data_dir; or
                                            # "postgresql://user@host/db" (a password from
                                            # ~/.pgpass or PGPASSFILE; docs/operations.md)
    broker = "mqtt://127.0.0.1:1883"       # the gateway's own Mosquitto
    broker_username = "gateway"             # optional
    broker_password_file = "/etc/edgekeep/broker.pass"
    epoch_seconds = 10                      # one anchor transaction per epoch
    max_message_bytes = 65536
    web_host = "127.0.0.1"                  # the admin web page; web_port = -1 turns it off
    web_port = 8080                         # 0: any free port
    web_allowed_hosts = []                  # more names the admin page answers to (the Host
                                            # header; others get 400, against DNS rebinding):
                                            # always web_host, localhost, any IP address,
                                            # this machine's hostname and hostname.local
    web_trusted_proxies = []                # addresses or networks of your reverse proxy,
                                            # e.g. ["127.0.0.1"]: only their X-Forwarded-For
                                            # and -Proto are believed; none: no one's
    web_tls = false                         # https with a self-signed certificate made at
                                            # first start (data_dir/web-cert.pem, its SHA-256
                                            # fingerprint logged at every start)
    web_cert = ""                           # or your own certificate and key (PEM files):
    web_key = ""                            # https with these (web_tls not needed)
    audit_seconds = 600                     # the Keeper's audit period
    retention_days = 30                     # camera objects older than this are deleted
    retention_max_bytes = 0                 # disk budget for camera objects; 0: none
    homeassistant = true                    # Home Assistant MQTT discovery on the broker
    gateway_id = "edgekeep"                 # this gateway's id in Home Assistant
    audit_samples = 16                      # challenges per audit
    storage_roots = ["/media/sd/edgekeep", "/media/usb/edgekeep"]  # default: data_dir/objects/{a,b}
    ec_k = 2                                # Reed-Solomon: any ec_k of ec_m shares rebuild a blob
    ec_m = 4                                # (shares go round-robin over the roots)
    min_free_bytes = 67108864               # below this free on data_dir's filesystem the
                                            # ingest pauses (messages wait on the devices and
                                            # in the broker) and resumes by itself; 0: no check

    # The Provider network (docs/network.md): peers hold shares of this gateway's blobs.
    peer_port = -1                          # the HTTPS peer port (8443 is usual); -1: closed
    peer_host = "0.0.0.0"
    peer_endpoint = ""                      # how peers reach it, e.g. https://pi.example:8443
    network_k = 2                           # any network_k of network_m shares on peers
    network_m = 3                           # rebuild a blob; one share per peer
    network_audit_seconds = 3600            # audits of each peer
    network_samples = 4                     # challenges per peer per audit
    peer_grace_seconds = 86400              # unreachable this long: its shares are re-placed

    # Ingest workers (docs/operations.md, "More than one machine").
    worker_group = "edgekeep"               # the MQTT shared subscription's group
    worker_name = ""                        # unique per worker; default host/INDEX
    lease_seconds = 15                      # a dead lease holder's jobs move after this

    [chain]
    rpc_url = "local"                       # "local": anvil under data_dir/chain; or any JSON-RPC URL
    private_key_file = ""                   # empty on "local": anvil's public dev key
    block_time = 5                          # local anvil only (IoTeX's block time)

    [alerts]                                # docs/operations.md, "Alerts"
    enabled = true
    interval_seconds = 30                   # conditions are checked this often
    off = []                                # rules turned off, e.g. ["motion"]
    offline_minutes = 10                    # device_offline: not heard from this long
    battery_mv = 3400                       # battery_low: below this (clears 100 mV above)
    drops_quiet_minutes = 60                # queue_drops: clears after this without new drops
    motion_minutes = 5                      # motion: a camera event this recent
    audit = true                            # audit_failed: the Keeper's last audit failed
    anchor_minutes = 30                     # anchors_behind: a sealed epoch unmined this long
    disk_percent = 90                       # disk_full: data_dir's filesystem this full
    peer_minutes = 30                       # peer_unreachable: a peer unanswering this long
    webhook_url = ""                        # POST each alert and its end here (ntfy, Gotify,
                                            # HA webhook); may hold a token: never logged
    webhook_topic = ""                      # the ntfy topic (ntfy's JSON publish: POST the
                                            # server's root URL with the topic in the body)
    webhook_token_file = ""                 # a token sent as Authorization: Bearer
    webhook_timeout = 10                    # seconds per POST; retried with back-off
    keep_days = 30                          # resolved alerts are listed this long
"""
import os
import tomllib
from dataclasses import dataclass, field, fields


@dataclass
class ChainConfig:
    rpc_url: str = "local"
    private_key_file: str = ""
    block_time: float = 5


@dataclass
class AlertsConfig:
    enabled: bool = True
    interval_seconds: float = 30
    off: list = field(default_factory=list)
    offline_minutes: float = 10
    battery_mv: int = 3400
    drops_quiet_minutes: float = 60
    motion_minutes: float = 5
    audit: bool = True
    anchor_minutes: float = 30
    disk_percent: float = 90
    peer_minutes: float = 30
    webhook_url: str = ""
    webhook_topic: str = ""
    webhook_token_file: str = ""
    webhook_timeout: float = 10
    keep_days: float = 30

    def check(self):
        # the rule names in `off` are checked as the alerts start (gateway/alerts/runner.py)
        if self.webhook_url and not self.webhook_url.startswith(("http://", "https://")):
            raise ValueError("[alerts] webhook_url must start with http:// or https://")

    def webhook_token(self):
        if not self.webhook_token_file:
            return None
        with open(self.webhook_token_file) as f:
            return f.read().strip()


@dataclass
class Config:
    data_dir: str = "data"
    database_url: str = ""
    broker: str = "mqtt://127.0.0.1:1883"
    broker_username: str = ""
    broker_password_file: str = ""
    epoch_seconds: float = 10
    max_message_bytes: int = 65536
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    web_allowed_hosts: list = field(default_factory=list)
    web_trusted_proxies: list = field(default_factory=list)
    web_tls: bool = False
    web_cert: str = ""
    web_key: str = ""
    audit_seconds: float = 600
    retention_days: float = 30
    retention_max_bytes: int = 0
    homeassistant: bool = True
    gateway_id: str = "edgekeep"
    audit_samples: int = 16
    storage_roots: list = field(default_factory=list)
    ec_k: int = 2
    ec_m: int = 4
    min_free_bytes: int = 64 << 20
    peer_port: int = -1
    peer_host: str = "0.0.0.0"
    peer_endpoint: str = ""
    network_k: int = 2
    network_m: int = 3
    network_audit_seconds: float = 3600
    network_samples: int = 4
    peer_grace_seconds: float = 86400
    worker_group: str = "edgekeep"
    worker_name: str = ""
    lease_seconds: float = 15
    chain: ChainConfig = field(default_factory=ChainConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    @classmethod
    def load(cls, path):
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        chain = ChainConfig(**_known(ChainConfig, raw.pop("chain", {}), "[chain]"))
        alerts = AlertsConfig(**_known(AlertsConfig, raw.pop("alerts", {}), "[alerts]"))
        alerts.check()
        cfg = cls(chain=chain, alerts=alerts, **_known(cls, raw, "top level"))
        if cfg.database_url and not cfg.database_url.startswith(("postgresql://",
                                                                 "postgres://")):
            raise ValueError("database_url must be postgresql://... (or empty: SQLite in "
                             "data_dir), not %r" % cfg.database_url)
        base = os.path.dirname(os.path.abspath(path))
        cfg.data_dir = os.path.join(base, cfg.data_dir)
        cfg.storage_roots = [os.path.join(base, r) for r in cfg.storage_roots]
        cfg.web_cert, cfg.web_key = (p and os.path.join(base, p) for p in (cfg.web_cert, cfg.web_key))
        alerts.webhook_token_file = alerts.webhook_token_file and os.path.join(
            base, alerts.webhook_token_file)
        return cfg

    def broker_password(self):
        if not self.broker_password_file:
            return None
        with open(self.broker_password_file) as f:
            return f.read().strip()


def _known(cls, raw, where):
    names = {f.name for f in fields(cls)} - {"chain", "alerts"}
    unknown = set(raw) - names
    if unknown:
        raise ValueError("unknown config key(s) at %s: %s" % (where, ", ".join(sorted(unknown))))
    return raw
