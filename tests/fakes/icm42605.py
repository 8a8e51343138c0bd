"""Fake TDK ICM-42605 at register level (DS-000292, user bank 0).

Output registers are computed at read time from the physical motion set on the fake and the
full-scale currently configured in ACCEL_CONFIG0/GYRO_CONFIG0, as 16-bit big-endian two's
complement. A sensor that is off reads -32768, like the real part.
"""

from .i2c import FakeDevice

ACCEL_FS_G = (16, 8, 4, 2)  # ACCEL_FS_SEL 0..3
GYRO_FS_DPS = (2000, 1000, 500, 250, 125, 62.5, 31.25, 15.625)  # GYRO_FS_SEL 0..7


def _be16(value):
    value = max(-32768, min(32767, value))
    return [(value >> 8) & 0xFF, value & 0xFF]


class FakeICM42605(FakeDevice):
    def __init__(self, addr=0x69, who_am_i=0x42):
        super().__init__(addr)
        self.who_am_i = who_am_i
        self.accel_mg = (0, 0, 1000)  # lying flat
        self.gyro_mdps = (0, 0, 0)
        self.resets = 0
        self._defaults()

    def _defaults(self):
        self.regs[:] = bytes(256)
        self.regs[0x75] = self.who_am_i
        self.regs[0x4F] = 0x06  # +-2000 dps, 1 kHz
        self.regs[0x50] = 0x06  # +-16 g, 1 kHz

    def write_reg(self, reg, value):
        if reg == 0x11 and value & 0x01:
            self.resets += 1
            self._defaults()
            return
        self.regs[reg] = value

    def _outputs(self):
        pwr = self.regs[0x4E]
        fs_g = ACCEL_FS_G[self.regs[0x50] >> 5 & 0x03]
        fs_dps = GYRO_FS_DPS[self.regs[0x4F] >> 5]
        out = []
        for mg in self.accel_mg:
            out += _be16(round(mg * 32768 / (fs_g * 1000))) if pwr & 0x03 >= 2 else _be16(-32768)
        for mdps in self.gyro_mdps:
            on = pwr >> 2 & 0x03 == 0x03
            out += _be16(round(mdps * 32768 / (fs_dps * 1000))) if on else _be16(-32768)
        return out

    def read(self, reg, n):
        outputs = self._outputs()
        return bytes(outputs[r - 0x1F] if 0x1F <= r <= 0x2A else self.regs[r]
                     for r in ((reg + i) & 0xFF for i in range(n)))
