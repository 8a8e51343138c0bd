"""The running gateway: chain connection, anchor outbox, ingest and Keeper, started and stopped
together."""
import logging
import os

from gateway.anchor.epochs import Anchorer
from gateway.chain import node
from gateway.chain.client import DEFAULT_DEV_KEY, Chain
from gateway.ingest.pipeline import Ingest
from gateway.integrations.homeassistant import Bridge
from gateway.keeper.audit import Keeper, KeeperLoop
from gateway.store import provider
from gateway.store.database import Store

log = logging.getLogger("edgekeep")


def chain_url(cfg):
    if cfg.chain.rpc_url == "local":
        return node.ensure_running(cfg.data_dir, block_time=cfg.chain.block_time)
    return cfg.chain.rpc_url


def chain_key(cfg):
    if cfg.chain.private_key_file:
        with open(cfg.chain.private_key_file) as f:
            return f.read().strip()
    if cfg.chain.rpc_url != "local":
        raise ValueError("chain.private_key_file is required for a non-local chain")
    return DEFAULT_DEV_KEY


def open_chain(cfg):
    """The Chain client for this gateway (starting the local anvil if that is the chain)."""
    return Chain(chain_url(cfg), chain_key(cfg),
                 os.path.join(cfg.data_dir, "chain", "deployment.json"))


class Gateway:
    def __init__(self, cfg):
        self.cfg = cfg
        self.chain = None
        self.anchorer = None
        self.ingest = None
        self.keeper = None
        self.web = None
        self.homeassistant = None
        self.admin_password_file = None

    def start(self):
        cfg = self.cfg
        # The one place the running gateway migrates its store; every thread below opens a
        # connection of its own with Store.connect. The Anchorer takes this one.
        store = Store.open(cfg.data_dir)
        self.chain = open_chain(cfg)
        self.anchorer = Anchorer(store, self.chain)
        provider.configure(cfg.data_dir, cfg.storage_roots, cfg.ec_k, cfg.ec_m)
        self.keeper = KeeperLoop(Keeper.open(Store.connect(cfg.data_dir), self.chain),
                                 cfg.audit_seconds, cfg.audit_samples)
        self.ingest = Ingest(cfg.data_dir, cfg.broker, cfg.max_message_bytes, cfg.epoch_seconds,
                             username=cfg.broker_username or None,
                             password=cfg.broker_password(), on_sealed=self.sealed,
                             object_keep_days=cfg.retention_days,
                             object_max_bytes=cfg.retention_max_bytes or None)
        self.anchorer.start()
        self.keeper.start()
        self.ingest.start()
        if cfg.web_port >= 0:
            self.start_web()
        if cfg.homeassistant:
            self.homeassistant = Bridge(cfg.data_dir, cfg.broker, cfg.gateway_id,
                                        cfg.broker_username or None, cfg.broker_password()).start()
        log.info("gateway up: data %s, broker %s, chain %s (chain id %d)", cfg.data_dir,
                 cfg.broker, self.chain.rpc_url, self.chain.chain_id)
        return self

    def sealed(self, epoch):
        self.anchorer.notify(epoch)
        self.keeper.notify(epoch)

    def start_web(self):
        from gateway.web import auth
        from gateway.web.app import WebServer, create_app
        self.admin_password_file = auth.ensure_password(self.cfg.data_dir)
        self.web = WebServer(create_app(self.cfg, self), self.cfg.web_host, self.cfg.web_port).start()
        log.info("admin page %s%s", self.web.url, " (first-run password in %s)"
                 % self.admin_password_file if self.admin_password_file else "")

    def stop(self):
        """Drain the ingest, seal and anchor the last epoch, then stop the local chain."""
        if self.web:
            self.web.stop()
        if self.homeassistant:
            self.homeassistant.stop()
        if self.ingest:
            self.ingest.stop()
        if self.keeper:
            self.keeper.stop()
        if self.anchorer:
            self.anchorer.stop()
        if self.cfg.chain.rpc_url == "local":
            node.stop_running(self.cfg.data_dir)
