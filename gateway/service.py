"""The running gateway: chain connection, anchor outbox, ingest and Keeper, started and stopped
together.

A Gateway is one worker of its deployment (gateway/workers.py): it always ingests; the jobs
that run once per deployment (anchor outbox, Keeper, Provider network, Home Assistant
bridge, and the sealing of epochs in the ingest) start when it takes the workers' lease,
which a lone gateway does as it starts.

Every long-running thread is supervised (gateway/health.py): restarted with back-off when it
raises, and when one keeps failing the process exits with EXIT_FATAL so systemd restarts it.
Nothing here waits for the chain: the anchor outbox makes the Chain client (and starts the
local anvil) in its own thread when the chain answers, and catches up.
"""
import logging
import os
import threading
import time

from gateway import health
from gateway.anchor.epochs import Anchorer
from gateway.chain import node
from gateway.chain.client import DEFAULT_DEV_KEY, Chain
from gateway.ingest.pipeline import Ingest
from gateway.integrations.homeassistant import Bridge
from gateway.keeper.audit import Keeper, KeeperLoop
from gateway.store import provider
from gateway.store.database import Store
from gateway.workers import LeaseHolder, default_name

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


EXIT_FATAL = 70          # EX_SOFTWARE: a component kept failing; systemd restarts the gateway
FATAL_STOP_TIMEOUT = 20  # seconds to stop what still runs before exiting


class ChainLink:
    """The gateway's Chain client, made on first use: a call returns it, connecting (and
    starting the local anvil, deploying the contracts) if it is not there yet, or raises
    while the chain does not answer. The anchor outbox and the Keeper share it."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.chain = None
        self.error = None
        self.ready = threading.Event()
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            if self.chain is None:
                try:
                    self.chain = open_chain(self.cfg)
                except Exception as e:
                    self.error = e
                    raise
                self.error = None
                self.ready.set()
            return self.chain


class Gateway:
    def __init__(self, cfg, exit_on_fatal=True, worker=0):
        """exit_on_fatal: when a component is dead (gateway/health.py), stop and exit the
        process with EXIT_FATAL (`gateway run`); False leaves that to the caller (tests),
        who finds it in self.health.fatal_reason. worker: this process's index among the
        workers of this machine (`run --workers N` numbers its children 1..N-1); it names
        the worker unless the config's worker_name does."""
        self.cfg = cfg
        self.worker = worker
        self.name = cfg.worker_name or default_name(worker)
        self.lease = None
        self.exit_on_fatal = exit_on_fatal
        self.health = health.Registry(on_fatal=self._fatal)
        self.link = ChainLink(cfg)
        self.anchorer = None
        self.ingest = None
        self.keeper = None
        self.web = None
        self.homeassistant = None
        self.rollouts = None
        self.alerts = None
        self.identity = None
        self.peer_server = self.placer = self.committer = self.remote_keeper = None
        self.admin_password_file = None

    def start(self):
        cfg = self.cfg
        # The one place the running gateway migrates its store; every thread below opens a
        # connection of its own with Store.connect.
        Store.open(cfg.data_dir, cfg.database_url).close()
        provider.configure(cfg.data_dir, cfg.storage_roots, cfg.ec_k, cfg.ec_m)
        self.lease = LeaseHolder(Store.connect(cfg.data_dir), self.name, self.start_singletons,
                                 self._lease_lost, ttl=cfg.lease_seconds,
                                 health=self.health)
        self.ingest = Ingest(cfg.data_dir, cfg.broker, cfg.max_message_bytes, cfg.epoch_seconds,
                             client_id=self.client_id(),
                             username=cfg.broker_username or None,
                             password=cfg.broker_password(), on_sealed=self.sealed,
                             object_keep_days=cfg.retention_days,
                             object_max_bytes=cfg.retention_max_bytes or None,
                             min_free_bytes=cfg.min_free_bytes, health=self.health,
                             group=cfg.worker_group, lease=self.lease)
        self.lease.ingest = self.ingest
        self.lease.start()
        self.ingest.start()
        if cfg.web_port >= 0:
            self.start_web()
        log.info("gateway up: worker %s, data %s, broker %s, chain %s (anchoring starts when "
                 "it answers)%s", self.name, cfg.data_dir, cfg.broker, cfg.chain.rpc_url,
                 "" if self.lease.held else "; another worker holds the lease")
        return self

    def client_id(self):
        """The ingest's MQTT client id: each worker keeps a persistent session of its own.
        The first worker of `run` keeps the id a lone gateway always had."""
        return "edgekeep-gateway" if self.worker == 0 and not self.cfg.worker_name else \
            "edgekeep-gateway-" + self.name

    def start_singletons(self):
        """The jobs one worker of the deployment runs (it took the lease): anchor outbox,
        Keeper, Provider network, Home Assistant bridge, alerts."""
        cfg = self.cfg
        # the chain is connected in the anchor thread, when it answers (ChainLink)
        self.anchorer = Anchorer(Store.connect(cfg.data_dir), self.link, health=self.health,
                                 fence=self.lease.fence)
        self.keeper = KeeperLoop(Keeper.open(Store.connect(cfg.data_dir), None),
                                 cfg.audit_seconds, cfg.audit_samples, connect=self.link,
                                 health=self.health)
        self.start_network()
        self.start_rollouts()
        self.anchorer.start()
        self.keeper.start()
        if cfg.homeassistant:
            self.homeassistant = Bridge(cfg.data_dir, cfg.broker, cfg.gateway_id,
                                        cfg.broker_username or None, cfg.broker_password(),
                                        health=self.health).start()
        if cfg.alerts.enabled:
            from gateway.alerts.runner import Runner
            self.alerts = Runner(cfg, self.health, self.homeassistant and self.homeassistant.publisher,
                                 fence=self.lease.fence).start()

    def start_rollouts(self):
        """The OTA rollout engine (gateway/updates/engine.py), on the gateway's broker account."""
        from gateway.ingest.ota import Pusher
        from gateway.updates.engine import Engine
        cfg = self.cfg

        def pusher(progress):
            return Pusher(cfg.broker, {}, cfg.broker_username or None, cfg.broker_password(),
                          progress, client_id="edgekeep-rollouts-" + self.name)
        self.rollouts = Engine(Store.connect(cfg.data_dir), pusher, health=self.health).start()

    def _lease_lost(self, why):
        """Another worker may run the one-of-a-kind jobs now: they must stop here. The
        process exits (its service manager starts it again, as a worker without them)."""
        self._fatal("lease", "this worker lost the lease (%s)" % why)

    def start_network(self):
        """The Provider network (docs/network.md): the identity, the peer port if it is open,
        and the threads that place this gateway's blobs and metadata on its peers, commit
        them on chain and audit the peers. They idle while there is no peer."""
        from gateway.network.audit import RemoteKeeper, RemoteKeeperLoop
        from gateway.network.commits import Committer
        from gateway.network.identity import Identity
        from gateway.network.metadata import Metadata
        from gateway.network.placement import Placer, PlacerLoop
        from gateway.network.server import PeerServer
        cfg = self.cfg
        self.identity = Identity.load_or_create(cfg.data_dir)
        if cfg.peer_port >= 0:
            self.peer_server = PeerServer(cfg.data_dir, self.identity, cfg.peer_host,
                                          cfg.peer_port, health=self.health,
                                          endpoint=cfg.peer_endpoint or None).start()
            log.info("peer port %s (gateway %s)", self.peer_server.url, self.identity.short)
        store = Store.connect(cfg.data_dir)
        placer = Placer(store, provider.Provider.open(store), self.identity, cfg.network_k,
                        cfg.network_m)
        self.placer = PlacerLoop(placer, health=self.health,
                                 metadata=Metadata(store, placer.provider, self.identity))
        self.committer = Committer(Store.connect(cfg.data_dir), self.identity, self.link,
                                   health=self.health, period=cfg.epoch_seconds,
                                   endpoint=cfg.peer_endpoint,
                                   on_commit=lambda epoch: self.remote_keeper.notify())
        self.remote_keeper = RemoteKeeperLoop(
            RemoteKeeper(Store.connect(cfg.data_dir), self.identity, LinkedChain(self.link), None,
                         LockedPlacer(placer, self.placer.lock), cfg.peer_grace_seconds,
                         cfg.network_samples),
            cfg.network_audit_seconds, health=self.health)
        self.placer.start()
        self.committer.start()
        self.remote_keeper.start()

    @property
    def chain(self):
        """The Chain client, or None until the chain has answered."""
        return self.link.chain

    @property
    def chain_error(self):
        """Why the chain is not connected yet (an exception), or None."""
        return self.link.error

    def wait_chain(self, timeout=120):
        """The Chain client once the anchor thread has connected it; TimeoutError if the
        chain has not answered within timeout seconds."""
        if not self.link.ready.wait(timeout):
            raise TimeoutError("the chain did not answer within %g s: %s" % (
                timeout, self.link.error or "not tried yet"))
        return self.link.chain

    def _fatal(self, component, reason):
        """A component is dead (gateway/health.py): stop what still runs and exit non-zero,
        so that the service manager starts the gateway again."""
        if not self.exit_on_fatal:
            return

        def bail():
            log.critical("exiting with status %d so that the service manager restarts the "
                         "gateway: %s", EXIT_FATAL, reason)
            stopper = threading.Thread(target=self._stop_quietly, name="fatal-stop", daemon=True)
            stopper.start()
            stopper.join(FATAL_STOP_TIMEOUT)
            logging.shutdown()
            os._exit(EXIT_FATAL)
        threading.Thread(target=bail, name="fatal", daemon=True).start()

    def _stop_quietly(self):
        try:
            self.stop()
        except Exception:
            log.exception("stopping after a fatal error failed")

    def sealed(self, epoch):
        if self.anchorer:
            self.anchorer.notify(epoch)
        if self.keeper:
            self.keeper.notify(epoch)
        if self.placer:
            self.placer.notify(epoch)

    def start_web(self):
        from gateway.web import auth
        from gateway.web.app import WebServer, create_app
        self.admin_password_file = auth.ensure_password(self.cfg.data_dir)
        self.web = WebServer(create_app(self.cfg, self), self.cfg.web_host, self.cfg.web_port).start()
        log.info("admin page %s%s", self.web.url, " (first-run password in %s)"
                 % self.admin_password_file if self.admin_password_file else "")

    def stop(self):
        """Drain the ingest, seal and anchor the last epoch, then stop the local chain.

        Every step runs even if one before it failed (a dead broker must not skip the drain,
        the last anchor or the chain's stop): a failure is logged and the next step runs.
        Works on a gateway that started only partly. Bounded (docs/operations.md,
        "Stopping"): the Keeper's copy backlog and the epochs the outbox could not anchor
        within its drain time are left for the next start.
        """
        # The lease stops being renewed first (no job starts during the stop) and is given up
        # last (the ingest seals the last epoch while it still holds it).
        steps = [("lease renewal", self.lease and self.lease.stop),
                 ("admin page", self.web and self.web.stop),
                 ("peer port", self.peer_server and self.peer_server.stop),
                 ("network keeper", self.remote_keeper and self.remote_keeper.stop),
                 ("network placer", self.placer and self.placer.stop),
                 ("network commits", self.committer and self.committer.stop),
                 ("alerts", self.alerts and self.alerts.stop),
                 ("Home Assistant bridge", self.homeassistant and self.homeassistant.stop),
                 ("rollouts", self.rollouts and self.rollouts.stop),
                 ("ingest", self.ingest and self.ingest.stop),
                 ("keeper", self.keeper and self.keeper.stop),
                 ("anchor outbox", self.anchorer and self.anchorer.stop),
                 ("lease", self.lease and self.lease.release)]
        if self.cfg.chain.rpc_url == "local" and self.worker == 0:  # `run` started it
            steps.append(("local chain", lambda: node.stop_running(self.cfg.data_dir)))
        for name, step in steps:
            if not step:
                continue
            started = time.monotonic()
            try:
                step()
            except Exception:
                log.exception("stopping the %s failed; going on", name)
            log.debug("stopped the %s in %.1f s", name, time.monotonic() - started)


class LockedPlacer:
    """A Placer used from another thread than its loop's: each call under the loop's lock."""

    def __init__(self, placer, lock):
        self._placer, self._lock = placer, lock

    def __getattr__(self, name):
        method = getattr(self._placer, name)

        def locked(*args, **kwargs):
            with self._lock:
                return method(*args, **kwargs)
        return locked


class LinkedChain:
    """The ChainLink's Chain for code that takes a Chain: each use connects if need be (and
    raises while the chain does not answer)."""

    def __init__(self, link):
        self._link = link

    def __getattr__(self, name):
        return getattr(self._link(), name)
