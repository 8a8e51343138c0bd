"""`gateway demo`: a whole EdgeKeep on one machine, with its own broker, chain and devices.

Layout of the demo directory:
    <dir>/            the gateway's data directory (store.db, chain/, broker/)
    <dir>/sim/        what would live elsewhere in a real deployment: each simulated
                      device's flash (its keys and queue) and the owner's keyring

With no simulated devices (--trackers 0 --cameras 0) it is a gateway waiting for a first
real or virtual device: it runs until stopped (or --duration), and what it prints is all
that connecting one takes.
"""
import logging
import os
import secrets
import threading
import time

from agent import sim, simcamera
from gateway.chain import registry
from gateway.config import ChainConfig, Config
from gateway.mqtt.broker import Mosquitto
from gateway.owner.keyring import Keyring
from gateway.service import Gateway
from gateway.store.database import Store, db_path

log = logging.getLogger("edgekeep.demo")

DEVICE_STOP = 5     # seconds the simulated devices get, all together, to hand over their queue


def owner_passphrase(sim_dir):
    """The demo owner's keyring passphrase, kept in a 0600 file beside the keyring."""
    path = os.path.join(sim_dir, "owner-passphrase")
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(18) + "\n")
    with open(path) as f:
        return f.read().strip(), path


def provision(paths, kind, store, chain, ring, broker):
    """Make (or reuse) simulated devices: keys made on the 'device', registration on chain and
    at the gateway, a broker account of their own, the data key in the owner's keyring."""
    idents = [sim.provision_dir(path, os.path.basename(path)) for path in paths]
    registry.register_many(store, chain, [(ident.public, os.path.basename(path), kind)
                                          for path, ident in zip(paths, idents)])
    for path, ident in zip(paths, idents):
        if broker and broker.credentials:
            sim.save_credentials(path, ident.hex, broker.add_device_credentials(ident.hex))
        ring.add(ident.hex, ident.data_key)
    ring.save()
    return paths


def run(args, stopping=lambda: None):
    """Run the demo until --duration has passed or KeyboardInterrupt (the CLI raises it on
    SIGTERM, SIGINT and SIGHUP); then stop the devices, the gateway, the chain and the broker,
    in that order, and return 0. stopping(): called as the stop begins (the CLI's
    hold_signals, so that a second signal does not cut the stop short)."""
    data_dir = os.path.abspath(args.data_dir)
    sim_dir = os.path.join(data_dir, "sim")
    os.makedirs(sim_dir, exist_ok=True)
    broker = None
    cfg = Config(data_dir=data_dir, broker=args.broker, epoch_seconds=args.epoch_seconds,
                 web_port=0, chain=ChainConfig(block_time=args.block_time))
    if not args.broker:
        broker = Mosquitto(os.path.join(data_dir, "broker"), auth=True)
        cfg.broker = broker.url
        cfg.broker_username = "gateway"
        cfg.broker_password_file = broker.credentials.gateway_secret
    url = cfg.broker
    gw = Gateway(cfg)
    stop = threading.Event()
    threads = []
    try:
        if broker:
            broker.start()
        gw.start()
        gw.wait_chain()  # the devices are registered on chain below
        store = Store.connect(data_dir)  # gw.start() opened (migrated) it
        passphrase, passfile = owner_passphrase(sim_dir)
        keyring = os.path.join(sim_dir, "owner-keyring.json")
        ring = Keyring.open_or_create(keyring, passphrase)
        provision(sim.tracker_dirs(sim_dir, args.trackers), "tracker", store, gw.chain, ring, broker)
        sim.write_device_list(sim_dir, args.trackers)
        cameras = provision([os.path.join(sim_dir, "camera-%d" % (i + 1))
                             for i in range(args.cameras)], "camera", store, gw.chain, ring, broker)
        gw.ingest.reload_devices()
        _print_where(cfg, gw, url, sim_dir, keyring, passfile)
        _print_how_to_connect(cfg, url, sim_dir, keyring, passfile, own_broker=bool(broker))
        config = {"sample_interval": args.sample_interval, "upload_interval": args.upload_interval}
        recorder = sim.Recorder(args.record) if args.record else None
        target = sim.runner(args.runtime, args.heap)
        for path in sim.tracker_dirs(sim_dir, args.trackers):
            t = threading.Thread(target=target, daemon=True,
                                 args=(path, url, config, args.duration, stop.is_set, recorder))
            t.start()
            threads.append(t)
        # --camera-clips: the Pi profile's MP4 clips with pre-roll (docs/camera.md)
        camera_config = {"clip": "mp4"} if getattr(args, "camera_clips", False) else {}
        for path in cameras:
            t = threading.Thread(target=simcamera.run_camera, daemon=True,
                                 args=(path, url, camera_config, args.duration, stop.is_set))
            t.start()
            threads.append(t)
        _wait(threads, args.duration, stop)
        stopping()
    except KeyboardInterrupt:
        stopping()
        _say("stopping...")
    finally:
        stopping()
        stop.set()
        _join(threads, DEVICE_STOP)
        gw.stop()  # logs a step that fails and goes on
        if broker:
            try:
                broker.stop()
            except Exception:
                log.exception("stopping the broker failed")
    try:
        _print_summary(data_dir)
    except Exception as e:  # e.g. stopped before the store was made
        log.warning("no summary: %s", e)
    return 0


def _join(threads, timeout):
    """Wait for the devices' threads, `timeout` seconds for all of them. A device still
    flushing keeps its queue on its flash (sim/<device>/spool) and sends it next time."""
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    left = sum(t.is_alive() for t in threads)
    if left:
        log.info("%d simulated device(s) still flushing; their queue stays on their flash", left)


def _say(text):
    try:
        print(text, flush=True)
    except OSError:  # the terminal is gone (SIGHUP)
        pass


def _wait(threads, duration, stop):
    """Until the devices end (their --duration, and at most 60 s more to flush); with no
    devices, until --duration passes, or until stopped. A stop signal ends either early."""
    if not threads:
        _say("no simulated devices: running until stopped%s (Ctrl-C)"
             % (" or for %g s" % duration if duration is not None else ""))
        _sleep_until(None if duration is None else time.monotonic() + duration)
        return
    end = None if duration is None else time.monotonic() + duration + 60
    while any(t.is_alive() for t in threads):
        if end is not None and time.monotonic() > end:
            stop.set()
        time.sleep(0.2)


def _sleep_until(end):
    """Until time.monotonic() reaches end; None: until a stop signal."""
    while end is None or time.monotonic() < end:
        time.sleep(0.2)


def _print_where(cfg, gw, url, sim_dir, keyring, passfile):
    print("EdgeKeep demo", flush=True)
    print("  broker        %s" % url)
    print("  chain         %s (chain id %d)" % (gw.chain.rpc_url, gw.chain.chain_id))
    for name, address in gw.chain.deployment["contracts"].items():
        print("  %-13s %s" % (name, address))
    print("  gateway data  %s" % cfg.data_dir)
    print("  devices       %s" % sim_dir)
    print("  owner keyring %s (passphrase in %s)" % (keyring, passfile))
    print("  epoch         every %g s, one anchor transaction each" % cfg.epoch_seconds)
    print("  admin page    %s (password in %s)" % (
        gw.web.url, gw.admin_password_file or "the one set with `gateway admin set-password`"))
    print("verify with:   python -m gateway verify --data-dir %s --all" % cfg.data_dir, flush=True)


def _print_how_to_connect(cfg, url, sim_dir, keyring, passfile, own_broker):
    """The commands that connect a first device to this demo (docs/flashing.md walks them)."""
    print("connect a device (docs/flashing.md):")
    print("  no hardware?  edgekeep-flash virtual-device --dir %s  (prints its PORT)"
          % os.path.join(sim_dir, "virtual-1"))
    print("  provision     edgekeep-flash provision --port PORT --gateway %s --gateway-data-dir %s"
          " --owner-keyring %s --passphrase-file %s" % (url, cfg.data_dir, keyring, passfile))
    print("  deploy        edgekeep-flash deploy --port PORT --release-key release.key.pub BUNDLE"
          "  (python -m firmware keygen, build)")
    print("  update        edgekeep ota push --data-dir %s --device ID --release-key "
          "release.key.pub BUNDLE" % cfg.data_dir)
    print("  ports         edgekeep-flash ports  (boards on USB, running virtual devices)")
    if own_broker:
        # Mosquitto (gateway/mqtt/broker.py) listens on 127.0.0.1 only.
        print("  this broker listens on 127.0.0.1 only: a virtual device or a process on this "
              "machine reaches it; a board on Wi-Fi needs a gateway on your network "
              "(docs/operations.md) or --broker mqtt://LAN-ADDRESS:PORT", flush=True)


def _print_summary(data_dir):
    if not os.path.exists(db_path(data_dir)):
        return
    store = Store.connect(data_dir)
    epochs = store.epochs()
    mined = sum(1 for e in epochs if e["status"] == "mined")
    _say("stored %d messages from %d devices; %d epochs, %d anchored" % (
        store.message_count(), len(store.devices()), len(epochs), mined))
    store.close()
