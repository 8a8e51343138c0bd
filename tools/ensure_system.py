"""Make sure the system packages EdgeKeep runs with are installed: apt-get when root, else
print the one command to run.

    python3 tools/ensure_system.py            # what the gateway runs with: the broker and
                                              # its clients, ISA-L (fast erasure coding)
    python3 tools/ensure_system.py --browser  # also Chromium (browser tests)
    python3 tools/ensure_system.py --postgresql  # also PostgreSQL's server (the tests start
                                              # their own in a temporary directory)
"""
import ctypes.util
import glob
import os
import shutil
import subprocess
import sys

SBIN = ("/usr/sbin", "/sbin")
BROKER = {"mosquitto": "mosquitto", "mosquitto_sub": "mosquitto-clients",
          "mosquitto_pub": "mosquitto-clients", "mosquitto_passwd": "mosquitto"}
BROWSER = {"chromium": "chromium"}
LIBRARIES = {"isal": "libisal2"}  # gateway/store/erasure.py; without it zfec codes, 7x slower
# Debian keeps PostgreSQL's server programs off PATH, in /usr/lib/postgresql/<version>/bin
POSTGRESQL = {"/usr/lib/postgresql/*/bin/initdb": "postgresql"}


def missing(commands, files=()):
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(SBIN)
    return sorted({pkg for cmd, pkg in commands.items() if shutil.which(cmd, path=path) is None}
                  | {pkg for lib, pkg in LIBRARIES.items() if ctypes.util.find_library(lib) is None}
                  | {pkg for pattern, pkg in files if not glob.glob(pattern)})


def main(argv):
    commands = dict(BROKER, **(BROWSER if "--browser" in argv else {}))
    files = list(POSTGRESQL.items()) if "--postgresql" in argv else []
    packages = missing(commands, files)
    if not packages:
        return 0
    cmd = "apt-get update && apt-get install -y --no-install-recommends " + " ".join(packages)
    if os.geteuid() != 0:
        print("Missing system packages. Install them with:\n  sudo " + cmd, file=sys.stderr)
        return 1
    print("installing: " + " ".join(packages), flush=True)
    subprocess.run(cmd, shell=True, check=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if "mosquitto" in packages:
        # The package enables a system broker on :1883; EdgeKeep starts its own.
        subprocess.run("systemctl disable --now mosquitto", shell=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if "postgresql" in packages:
        # The package starts a system cluster on :5432; the tests start their own.
        subprocess.run("systemctl disable --now postgresql", shell=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    left = missing(commands, files)
    if left:
        print("still missing after install: " + ", ".join(left), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
