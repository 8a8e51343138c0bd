#!/usr/bin/env python3
"""Flash MicroPython, provision keys, deploy the agent: python tools/flash.py COMMAND --help.

    ports [--all]                  list virtual devices and serial ports, marking likely boards
    firmware --port P --board B    write the MicroPython image (esptool), check the REPL
    provision --port P --gateway mqtt://HOST:PORT [--wifi SSID] [--apn APN] [--owner-keyring F]
    provision --port P --gateway https://HOST:PORT --token-file F --fingerprint AA:BB:...
                                   the same from another machine, through the gateway's API
    config --port P [--interval S] [--broker mqtt://HOST:PORT] [--wifi SSID] [--apn APN] ...
                                   change a device's settings, keeping its identity
    decommission --port P          revoke the device everywhere, wipe its keys
    deploy --port P BUNDLE         verify the bundle's signature, copy the changed files
    info --port P                  device id, agent version, free flash and heap
    shell --port P                 the board's REPL (mpremote)
    virtual-device --dir DIR       a MicroPython board on a pty, for use without hardware

Built on mpremote's serial transport and esptool. See docs/flashing.md.
"""
import argparse
import os
import signal
import sys

if not __package__:  # run as `python tools/flash.py`: the repository's packages on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from firmware import images, signing  # noqa: E402
from firmware.boards import BOARDS, FLASH_OFFSETS  # noqa: E402
from tools.flashlib import FlashError  # noqa: E402

NRF_ROUTE = ("the nRF9160 is not flashed with esptool: build MicroPython's ports/nrf for your "
             "board and write it with nrfjprog or nRF Connect Programmer (docs/flashing.md, "
             "\"nRF9160 boards\"); then run provision and deploy as for any board")


def cmd_ports(args):
    import serial.tools.list_ports

    from tools.flashlib import ports
    found = ports.all_ports(serial.tools.list_ports.comports(), ports.virtual_devices())
    for line in ports.listing(found, args.all):
        print(line)
    return 0


def cmd_firmware(args):
    board = BOARDS[args.board]
    if board.get("runtime") != "micropython":
        raise FlashError("%s runs CPython, not MicroPython" % args.board,
                         "install it as docs/flashing.md says")
    if board["chip"] is None:
        raise FlashError("%s: %s" % (args.board, NRF_ROUTE),
                         "follow the nRF9160 route in docs/flashing.md")
    from tools.flashlib.device import Device, check_port
    check_port(args.port)
    try:
        image = args.image or images.fetch(args.board)
    except images.ImageError as e:
        raise FlashError(str(e), "pin the image (`python -m firmware pin --board %s`) or pass --image"
                         % args.board)
    import esptool
    offset = FLASH_OFFSETS[board["chip"]]
    print("writing %s to the %s on %s at 0x%x" % (image, board["chip"], args.port, offset))
    try:
        esptool.main(["--chip", board["chip"], "--port", args.port, "--baud", str(args.baud),
                      "write-flash", "--erase-all", hex(offset), image])
    except (esptool.FatalError, OSError) as e:
        raise FlashError("esptool failed: %s" % e,
                         "hold the board's BOOT button while it connects, or try a lower --baud")
    with Device(args.port) as dev:
        print("MicroPython %s answers on %s (%s)" % (dev.about["micropython"], args.port,
                                                     dev.about["machine"]))
    return 0


def cmd_provision(args):
    from gateway.owner.keyring import KeyringError, passphrase_from
    from tools.flashlib.device import Device
    from tools.flashlib.provision import provision
    try:
        passphrase = passphrase_from(args.passphrase_file)
    except OSError as e:
        raise FlashError("cannot read the passphrase file: %s" % e, "check --passphrase-file")
    with Device(args.port) as dev:
        try:
            dev_hex, public_hex = provision(dev, args, passphrase)
        except KeyringError as e:
            raise FlashError(str(e), "give the keyring's passphrase (--passphrase-file or "
                             "$EDGEKEEP_PASSPHRASE)")
    print("provisioned device %s\npublic key %s" % (dev_hex, public_hex))
    return 0


def cmd_config(args):
    from tools.flashlib.config import configure
    from tools.flashlib.device import Device
    with Device(args.port) as dev:
        configure(dev, args)
        if not args.no_reset:
            dev.soft_reset()
            print("the device restarts with its new settings")
    return 0


def cmd_decommission(args):
    from tools.flashlib.decommission import decommission
    from tools.flashlib.device import Device
    with Device(args.port) as dev:
        dev_hex = decommission(dev, args)
    print("decommissioned device %s" % dev_hex)
    return 0


def cmd_deploy(args):
    from tools.flashlib.deploy import deploy, load_bundle
    from tools.flashlib.device import Device
    key_path = args.release_key or os.environ.get("EDGEKEEP_RELEASE_KEY")
    if not key_path:
        raise FlashError("no release key to check the bundle against",
                         "pass --release-key release.key.pub (or set $EDGEKEEP_RELEASE_KEY)")
    try:
        public = signing.load_public(key_path)
    except signing.SigningError as e:
        raise FlashError(str(e), "pass the .pub file written by `python -m firmware keygen`")
    manifest = load_bundle(args.bundle, public)
    with Device(args.port) as dev:
        deploy(dev, args.bundle, manifest, public)
        if not args.no_reset:
            dev.soft_reset()
            print("the device restarts and runs the agent")
    return 0


INFO = """
import binascii, hashlib, json
r = {}
try:
    pk = binascii.unhexlify(json.load(open('identity.json'))['pk'])
    r['device'] = binascii.hexlify(hashlib.sha256(pk).digest()[:8]).decode()
except OSError:
    r['device'] = None
try:
    r['version'] = json.load(open('manifest.json'))['version']
except OSError:
    r['version'] = None
print(repr(r))
"""


def cmd_info(args):
    from tools.flashlib.device import Device
    with Device(args.port) as dev:
        about = dict(dev.about, **dev.eval(INFO))  # the public key only: never the secret
    print("device id:     %s" % (about["device"] or "not provisioned"))
    print("agent version: %s" % (about["version"] or "no agent deployed"))
    print("board:         %s (MicroPython %s)" % (about["machine"], about["micropython"]))
    print("free flash:    %d KB of %d KB" % (about["flash_free"] // 1024, about["flash_size"] // 1024))
    print("free heap:     %d KB" % (about["heap_free"] // 1024))
    return 0


def cmd_shell(args):
    from tools.flashlib.device import check_port
    check_port(args.port)
    os.execv(sys.executable, [sys.executable, "-m", "mpremote", "connect", args.port, "repl"])


def cmd_virtual_device(args):
    from tools.flashlib.ports import register_virtual, unregister_virtual
    from tools.virtual_device import VirtualDevice
    dev = VirtualDevice(args.dir, args.board).start()
    registered = register_virtual(dev.port, args.board, args.dir)  # for `flash.py ports`
    print(dev.port, flush=True)
    print("virtual %s board on %s (flash: %s); Ctrl-C to stop" % (args.board, dev.port, args.dir),
          file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *a: dev.stop())
    try:
        dev.wait()
    except KeyboardInterrupt:
        pass
    finally:
        unregister_virtual(registered)
    dev.stop()
    return 0


def add_remote_arguments(s):
    """How the flash tool reaches the gateway's API (tools/flashlib/remote.py)."""
    s.add_argument("--token-file", help="with https: the enrollment token (from `edgekeep "
                   "devices enroll`), else $EDGEKEEP_ENROLL_TOKEN, else a prompt")
    s.add_argument("--token", help="the token itself: visible to other users (ps) and kept "
                   "in your shell's history, prefer --token-file")
    s.add_argument("--fingerprint", help="with https: the SHA-256 fingerprint of the gateway's "
                   "certificate, AA:BB:... as the gateway prints it (pins a self-signed one)")
    s.add_argument("--ca-file", help="with https: trust the gateway's certificate through this "
                   "CA (PEM) instead")


def build_parser():
    prog = "python tools/flash.py" if __name__ == "__main__" else "edgekeep-flash"
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ports", help="list virtual devices and serial ports, marking likely boards")
    s.add_argument("--all", action="store_true",
                   help="also the serial ports without a USB device (e.g. /dev/ttyS0)")
    s.set_defaults(fn=cmd_ports)

    s = sub.add_parser("firmware", help="write the MicroPython image")
    s.add_argument("--port", required=True)
    s.add_argument("--board", required=True, choices=sorted(BOARDS))
    s.add_argument("--image", help="image file (default: the board's pinned official image)")
    s.add_argument("--baud", type=int, default=460800)
    s.set_defaults(fn=cmd_firmware)

    s = sub.add_parser("provision", help="make the device's keys and config, register it")
    s.add_argument("--port", required=True)
    s.add_argument("--gateway", required=True,
                   help="the gateway's broker, mqtt://HOST:PORT (with --gateway-data-dir on the "
                        "gateway host); or its admin page, https://HOST:PORT, with an "
                        "enrollment token (from another machine)")
    s.add_argument("--gateway-data-dir", help="register with the gateway on this machine")
    add_remote_arguments(s)
    s.add_argument("--broker", help="with https: the broker URL for the device's config "
                   "(default: the one the gateway answers)")
    s.add_argument("--board", choices=sorted(n for n in BOARDS if BOARDS[n].get("match")),
                   help="default: detected from the device")
    s.add_argument("--name", help="the device's name on the gateway")
    s.add_argument("--wifi", help="Wi-Fi SSID")
    s.add_argument("--wifi-password", default=os.environ.get("EDGEKEEP_WIFI_PASSWORD"))
    s.add_argument("--apn", help="cellular APN")
    s.add_argument("--mqtt-user")
    s.add_argument("--mqtt-password", default=os.environ.get("EDGEKEEP_MQTT_PASSWORD"))
    s.add_argument("--interval", type=float, default=10, help="s between readings")
    s.add_argument("--upload-interval", type=float, default=30, help="s between batches")
    s.add_argument("--duration", type=float, help=argparse.SUPPRESS)  # tests: the agent stops
    s.add_argument("--owner-keyring", default=os.path.expanduser("~/.edgekeep/owner-keyring.json"))
    s.add_argument("--passphrase-file", help="else $EDGEKEEP_PASSPHRASE, else a prompt")
    s.add_argument("--force", action="store_true",
                   help="replace an existing identity (revoked: gateway, broker, chain)")
    s.set_defaults(fn=cmd_provision)

    s = sub.add_parser("config", help="change a provisioned device's settings (its identity "
                       "stays)")
    s.add_argument("--port", required=True)
    s.add_argument("--interval", type=int, help="s between readings")
    s.add_argument("--upload-interval", type=int, help="s between batches")
    s.add_argument("--status-every", type=int, help="a status message every N batches")
    s.add_argument("--broker", help="the gateway's broker, mqtt://HOST:PORT")
    s.add_argument("--wifi", help="Wi-Fi SSID")
    s.add_argument("--wifi-password-file", help="the Wi-Fi password, from this file")
    s.add_argument("--apn", help="cellular APN")
    s.add_argument("--config-trial", type=int,
                   help="s a config sent over the air has to reach the gateway (default 120)")
    s.add_argument("--gateway-key", help="trust this gateway's config key for settings over "
                   "the air (its data directory's config-signing.key.pub)")
    s.add_argument("--no-reset", action="store_true", help="do not restart the device after")
    s.set_defaults(fn=cmd_config)

    s = sub.add_parser("decommission", help="revoke the device everywhere (gateway, broker, "
                       "chain), then wipe its keys")
    s.add_argument("--port", required=True)
    s.add_argument("--gateway", help="the gateway's admin page, https://HOST:PORT")
    s.add_argument("--gateway-data-dir", help="revoke with the gateway on this machine")
    add_remote_arguments(s)
    s.add_argument("--admin-password-file",
                   help="with --gateway: log in as the admin instead of using a token "
                        "(else $EDGEKEEP_ADMIN_PASSWORD)")
    s.add_argument("--wipe-only", action="store_true",
                   help="wipe the keys without revoking (revoke it on the gateway yourself)")
    s.set_defaults(fn=cmd_decommission)

    s = sub.add_parser("deploy", help="copy a signed bundle's changed files")
    s.add_argument("--port", required=True)
    s.add_argument("--release-key", help="the release public key (else $EDGEKEEP_RELEASE_KEY)")
    s.add_argument("--no-reset", action="store_true", help="do not restart the device after")
    s.add_argument("bundle")
    s.set_defaults(fn=cmd_deploy)

    s = sub.add_parser("info", help="device id, agent version, free flash and heap")
    s.add_argument("--port", required=True)
    s.set_defaults(fn=cmd_info)

    s = sub.add_parser("shell", help="the board's REPL")
    s.add_argument("--port", required=True)
    s.set_defaults(fn=cmd_shell)

    s = sub.add_parser("virtual-device", help="a MicroPython board on a pty")
    s.add_argument("--dir", required=True, help="its flash (persists)")
    s.add_argument("--board", default="esp32", choices=sorted(n for n in BOARDS if BOARDS[n].get("virtual")))
    s.set_defaults(fn=cmd_virtual_device)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except FlashError as e:
        print("\nerror: %s\n  fix: %s" % (e, e.fix), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
