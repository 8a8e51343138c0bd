"""A Mosquitto broker of the gateway's own: config and persistence under the data directory."""
import os
import shutil
import socket
import subprocess
import time

SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def find_mosquitto():
    path = shutil.which("mosquitto", path=os.pathsep.join(
        [os.environ.get("PATH", "")] + list(SBIN)))
    if not path:
        raise RuntimeError("mosquitto is not installed: run `make setup` "
                           "(or `sudo apt-get install mosquitto mosquitto-clients`)")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(host, port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Mosquitto:
    """mosquitto -c <dir>/mosquitto.conf, listening on 127.0.0.1 only."""

    def __init__(self, directory, port=None, extra_conf=""):
        self.dir = os.path.abspath(directory)
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.proc = None

    @property
    def url(self):
        return "mqtt://127.0.0.1:%d" % self.port

    def write_conf(self):
        os.makedirs(self.dir, exist_ok=True)
        conf = os.path.join(self.dir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("listener %d 127.0.0.1\n" % self.port)
            f.write("allow_anonymous true\n")
            f.write("persistence true\npersistence_location %s/\n" % self.dir)
            f.write("autosave_interval 1\n")
            f.write("max_queued_messages 100000\n")
            f.write("log_dest file %s/mosquitto.log\n" % self.dir)
            f.write(self.extra_conf)
        return conf

    def start(self, timeout=10):
        conf = self.write_conf()
        self.proc = subprocess.Popen([find_mosquitto(), "-c", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_port("127.0.0.1", self.port, timeout):
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError("mosquitto did not start on port %d: %s" % (self.port, err.strip()))
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
