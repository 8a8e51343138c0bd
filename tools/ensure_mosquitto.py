"""Make sure the Mosquitto broker and clients are installed (apt-get when root, else say how)."""
import os
import shutil
import subprocess
import sys

NEEDED = ("mosquitto", "mosquitto_sub", "mosquitto_pub", "mosquitto_passwd")
SBIN = ("/usr/sbin", "/sbin")


def missing():
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(SBIN)
    return [name for name in NEEDED if shutil.which(name, path=path) is None]


def main():
    if not missing():
        return 0
    cmd = "apt-get update && apt-get install -y mosquitto mosquitto-clients"
    if os.geteuid() != 0:
        print("Mosquitto is missing. Install it with:\n  sudo " + cmd, file=sys.stderr)
        return 1
    print("installing mosquitto: " + cmd, flush=True)
    subprocess.run(cmd, shell=True, check=True,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    # The package enables a system broker on :1883; EdgeKeep starts its own.
    subprocess.run("systemctl disable --now mosquitto", shell=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    left = missing()
    if left:
        print("still missing after install: " + ", ".join(left), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
