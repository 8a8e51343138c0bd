# ams TSL2572 ambient light sensor over I2C: lux (x100) from the datasheet's two-channel
# equation, with the gain stepped down on saturation and back up in dim light.

from hw.pebble.delay import sleep_ms

IDS = (0x34, 0x3D)  # TSL25721/TSL25725, TSL25723/TSL25727
_CMD = 0x80  # every register address carries the command bit
_AUTO_INC = 0x20
_REG_ENABLE = 0x00
_REG_ATIME = 0x01
_REG_CONFIG = 0x0D
_REG_CONTROL = 0x0F
_REG_ID = 0x12
_REG_STATUS = 0x13
_REG_C0DATA = 0x14  # C0DATA, C0DATAH, C1DATA, C1DATAH

_PON = 0x01
_AEN = 0x02
_AVALID = 0x01
_AGL = 0x04  # scales the 1x and 8x gains by 0.16

# Gain steps, lowest first: (gain x100, CONFIG, CONTROL).
GAINS = ((16, _AGL, 0), (100, 0, 0), (800, 0, 1), (1600, 0, 2), (12000, 0, 3))


def centilux(c0, c1, cycles, gain_x100, ga_x100=100):
    """Lux x100: CPL = (ATIME_ms * AGAINx) / (GA * 60), ATIME_ms = 2.73 * cycles,
    Lux = max((C0 - 1.87 * C1) / CPL, (0.63 * C0 - C1) / CPL, 0)."""
    n = max(100 * c0 - 187 * c1, 63 * c0 - 100 * c1, 0)
    den = cycles * 273 * gain_x100
    return (n * 6000 * ga_x100 + den // 2) // den


class TSL2572:
    def __init__(self, i2c, addr=0x39, atime=0xED, gain=1, ga_x100=100):
        """atime: ATIME register, integration = (256 - atime) x 2.73 ms (0xED: 51.87 ms, as the
        Pebble firmware). gain: index into GAINS to start from. ga_x100: glass attenuation."""
        self.i2c = i2c
        self.addr = addr
        self.cycles = 256 - atime
        self.ga_x100 = ga_x100
        self.max_count = min(1024 * self.cycles, 65535)
        self._one = bytearray(1)
        self._data = bytearray(4)
        self._check_id()
        self._write(_REG_ENABLE, 0)
        self._write(_REG_ATIME, atime)
        self.set_gain(gain)

    def _check_id(self):
        self.i2c.readfrom_mem_into(self.addr, _CMD | _REG_ID, self._one)
        if self._one[0] not in IDS:
            raise OSError(19, "TSL2572 at 0x%02x: ID 0x%02x, expected 0x34 or 0x3d"
                          % (self.addr, self._one[0]))

    def _write(self, reg, value):
        self._one[0] = value
        self.i2c.writeto_mem(self.addr, _CMD | reg, self._one)

    def set_gain(self, index):
        """Select GAINS[index] and restart integration, so the next reading uses it."""
        self.gain = index
        self._write(_REG_ENABLE, _PON)
        self._write(_REG_CONFIG, GAINS[index][1])
        self._write(_REG_CONTROL, GAINS[index][2])
        sleep_ms(3)  # 2.4 ms from PON before the ALS may be enabled
        self._write(_REG_ENABLE, _PON | _AEN)  # AVALID now waits for a fresh integration

    def counts(self):
        """(C0, C1) of the next complete integration."""
        for _ in range(self.cycles * 3 // 10 + 5):  # up to ~1.1x the integration time
            self.i2c.readfrom_mem_into(self.addr, _CMD | _REG_STATUS, self._one)
            if self._one[0] & _AVALID:
                break
            sleep_ms(10)
        else:
            raise OSError(110, "TSL2572 at 0x%02x: no ALS data" % self.addr)
        # One auto-increment read, so the high bytes are latched with the low ones.
        d = self._data
        self.i2c.readfrom_mem_into(self.addr, _CMD | _AUTO_INC | _REG_C0DATA, d)
        return d[0] | (d[1] << 8), d[2] | (d[3] << 8)

    def read(self):
        """Lux x100, or None if the light saturates even the lowest gain."""
        c0, c1 = self.counts()
        while c0 >= self.max_count or c1 >= self.max_count:
            if self.gain == 0:
                return None
            self.set_gain(self.gain - 1)
            c0, c1 = self.counts()
        lux = centilux(c0, c1, self.cycles, GAINS[self.gain][0], self.ga_x100)
        up = self.gain + 1
        # Step up for the next reading when the higher gain would still stay below half scale.
        if up < len(GAINS) and c0 * GAINS[up][0] < self.max_count * GAINS[self.gain][0] // 2:
            self.set_gain(up)
        return lux
