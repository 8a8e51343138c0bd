"""Fake ams TSL2572 at register level.

Every transfer starts with a command byte: CMD bit 0x80, TYPE 00 (repeated byte: multi-byte
reads return the same register) or 01 (auto-increment). Counts are computed from the light set
on the fake (counts per ms at gain 1x for each channel), the integration time (ATIME) and the
gain (AGAIN, and AGL's 0.16 scaling), and clip at the datasheet's maximum count. Enabling the
ALS clears AVALID; the integration completes on the following STATUS read.
"""

from .i2c import FakeDevice

AGAIN = (1, 8, 16, 120)


class FakeTSL2572(FakeDevice):
    def __init__(self, addr=0x39, chip_id=0x34):
        super().__init__(addr)
        self.regs[0x01] = 0xFF  # ATIME reset value
        self.regs[0x12] = chip_id
        self.ch0_rate = 0.0  # counts per ms at gain 1x: visible + IR
        self.ch1_rate = 0.0  # IR
        self.integrations = 0
        self._integrating = False

    def _register(self, command):
        if not command & 0x80:
            raise ValueError("TSL2572: command byte 0x%02x lacks the CMD bit" % command)
        if command >> 5 & 0x03 not in (0, 1):
            raise ValueError("TSL2572: unexpected command type in 0x%02x" % command)
        return command & 0x1F, command & 0x20

    def gain(self):
        g = AGAIN[self.regs[0x0F] & 0x03]
        if self.regs[0x0D] & 0x04 and g in (1, 8):
            return g * 0.16
        return g

    def max_count(self):
        return min(1024 * (256 - self.regs[0x01]), 65535)

    def integration_ms(self):
        return 2.73 * (256 - self.regs[0x01])

    def read(self, command, n):
        reg, auto = self._register(command)
        regs = [(reg + i) & 0x1F if auto else reg for i in range(n)]
        return bytes(self.read_reg(r) for r in regs)

    def write(self, command, data):
        reg, auto = self._register(command)
        for i, value in enumerate(data):
            r = (reg + i) & 0x1F if auto else reg
            self.writes.append((r, value))
            self.write_reg(r, value)

    def write_reg(self, reg, value):
        was_on = self.regs[0x00] & 0x03 == 0x03
        self.regs[reg] = value
        if reg == 0x00:
            on = value & 0x03 == 0x03
            if not on:
                self._integrating = False
            elif not was_on:
                self.regs[0x13] &= 0xFE  # AVALID waits for a fresh integration
                self._integrating = True

    def read_reg(self, reg):
        value = self.regs[reg]
        if reg == 0x13 and self._integrating:
            self._integrating = False
            self._integrate()  # done after this read, which still sees it running
        return value

    def _integrate(self):
        scale = self.integration_ms() * self.gain()
        c0 = min(int(self.ch0_rate * scale), self.max_count())
        c1 = min(int(self.ch1_rate * scale), self.max_count())
        self.regs[0x14], self.regs[0x15] = c0 & 0xFF, c0 >> 8
        self.regs[0x16], self.regs[0x17] = c1 & 0xFF, c1 >> 8
        self.regs[0x13] |= 0x01
        self.integrations += 1
