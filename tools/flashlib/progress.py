"""A one-line progress bar on stderr, redrawn in place."""
import sys

WIDTH = 30


class Progress:
    def __init__(self, label, total, unit="B"):
        self.label, self.total, self.unit = label, max(1, total), unit
        self.done = 0

    def advance(self, n):
        self.update(self.done + n)

    def update(self, done):
        self.done = done
        filled = WIDTH * min(done, self.total) // self.total
        sys.stderr.write("\r%s [%s%s] %d/%d %s" % (self.label, "#" * filled, "." * (WIDTH - filled),
                                                 done, self.total, self.unit))
        sys.stderr.flush()

    def close(self):
        sys.stderr.write("\n")
