import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")


def cli(*args, env=None, timeout=180):
    """`python -m ARGS` from the repository; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)
