"""python -m agent sim ...: run simulated devices."""
import argparse
import sys


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m agent")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sim", help="run simulated Pebble-class trackers")
    s.add_argument("--trackers", type=int, default=3)
    s.add_argument("--broker", required=True, help="mqtt://HOST:PORT")
    s.add_argument("--keys", required=True, help="directory holding each device's flash (keys, queue)")
    s.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    s.add_argument("--sample-interval", type=float, default=10.0)
    s.add_argument("--upload-interval", type=float, default=30.0)
    s.add_argument("--record", help="append every reading produced to this JSON-lines file")
    s.add_argument("--runtime", choices=("cpython", "micropython"), default="cpython",
                   help="run each tracker in this process (cpython) or as a MicroPython process")
    s.add_argument("--heap", type=int, default=65536,
                   help="MicroPython heap per tracker in bytes (--runtime micropython)")
    args = p.parse_args(argv)
    from agent import sim
    return sim.run(args)


if __name__ == "__main__":
    sys.exit(main())
