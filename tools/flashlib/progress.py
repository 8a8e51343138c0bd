"""Progress of a long copy on stderr: on a terminal, a one-line bar redrawn in place; anywhere
else (a log file, a pipe, CI) a few plain lines, since every redraw would be a line there."""
import sys

WIDTH = 30
QUARTERS = 4


class Progress:
    def __init__(self, label, total, unit="B", stream=None):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.bar = _is_terminal(self.stream)
        self.done = 0
        self.quarter = 0  # the last quarter a plain line was written for
        if not self.bar and total > 0:
            self._line("%d of %d %s (0%%)" % (0, total, unit))

    def advance(self, n):
        self.update(self.done + n)

    def update(self, done):
        self.done = done
        if self.bar:
            self._draw()
        else:
            self._line_at_each_quarter()

    def close(self):
        if self.bar:
            self.stream.write("\n")
            self.stream.flush()
        else:
            self._line("done, %d %s" % (self.done, self.unit))

    def _draw(self):
        filled = WIDTH * min(self.done, self.total) // max(1, self.total)
        self.stream.write("\r%s [%s%s] %d/%d %s" % (self.label, "#" * filled, "." * (WIDTH - filled),
                                                    self.done, self.total, self.unit))
        self.stream.flush()

    def _line_at_each_quarter(self):
        quarter = QUARTERS * min(self.done, self.total) // max(1, self.total)
        if self.quarter < quarter < QUARTERS:  # the last quarter is close()'s "done" line
            self.quarter = quarter
            self._line("%d of %d %s (%d%%)" % (self.done, self.total, self.unit,
                                              100 * quarter // QUARTERS))

    def _line(self, text):
        self.stream.write("%s: %s\n" % (self.label, text))
        self.stream.flush()


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
