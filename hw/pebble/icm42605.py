# TDK InvenSense ICM-42605 (DS-000292) over I2C: accelerometer in milli-g, gyroscope in
# milli-degrees per second, both in low-noise mode.

from hw.pebble.delay import sleep_ms

WHO_AM_I = 0x42
_REG_DEVICE_CONFIG = 0x11
_REG_ACCEL_DATA_X1 = 0x1F  # accel X/Y/Z then gyro X/Y/Z, 16-bit big-endian, to 0x2A
_REG_PWR_MGMT0 = 0x4E
_REG_GYRO_CONFIG0 = 0x4F
_REG_ACCEL_CONFIG0 = 0x50
_REG_WHO_AM_I = 0x75

_SOFT_RESET = 0x01
_GYRO_LN_ACCEL_LN = 0x0F  # GYRO_MODE = 11, ACCEL_MODE = 11
_INVALID = -32768  # what the data registers hold while a sensor is off or not yet sampled

# Full scale -> FS_SEL field (bits 7:5) of ACCEL_CONFIG0 (g) and GYRO_CONFIG0 (dps).
ACCEL_FS = {16: 0, 8: 1, 4: 2, 2: 3}
GYRO_FS = {2000: 0, 1000: 1, 500: 2, 250: 3, 125: 4, 62.5: 5, 31.25: 6, 15.625: 7}
# Output data rate (Hz) -> ODR field (bits 3:0), the rates both sensors have in low-noise mode.
ODR = {8000: 3, 4000: 4, 2000: 5, 1000: 6, 500: 15, 200: 7, 100: 8, 50: 9, 25: 10, 12.5: 11}


def _s16(b, i):
    v = (b[i] << 8) | b[i + 1]
    return v - 0x10000 if v & 0x8000 else v


def _scale(b, i, full_scale):
    """Sample at b[i] in units of full_scale / 32768, rounded."""
    return (_s16(b, i) * full_scale + 16384) // 32768


class ICM42605:
    def __init__(self, i2c, addr=0x69, accel_fs=4, gyro_fs=2000, odr=100):
        self.i2c = i2c
        self.addr = addr
        self._one = bytearray(1)
        self._data = bytearray(12)
        self._check_who_am_i()
        self._write(_REG_DEVICE_CONFIG, _SOFT_RESET)
        sleep_ms(1)  # registers are usable 1 ms after a soft reset
        self.configure(accel_fs, gyro_fs, odr)
        self._write(_REG_PWR_MGMT0, _GYRO_LN_ACCEL_LN)
        sleep_ms(45)  # gyroscope start-up time; no register writes for 200 us anyway

    def _check_who_am_i(self):
        self.i2c.readfrom_mem_into(self.addr, _REG_WHO_AM_I, self._one)
        if self._one[0] != WHO_AM_I:
            raise OSError(19, "ICM-42605 at 0x%02x: WHO_AM_I 0x%02x, expected 0x%02x"
                          % (self.addr, self._one[0], WHO_AM_I))

    def _write(self, reg, value):
        self._one[0] = value
        self.i2c.writeto_mem(self.addr, reg, self._one)

    def configure(self, accel_fs, gyro_fs, odr):
        """Set full scales (g, dps) and output data rate (Hz); ValueError if not supported."""
        if accel_fs not in ACCEL_FS or gyro_fs not in GYRO_FS or odr not in ODR:
            raise ValueError("ICM-42605: unsupported accel_fs %r, gyro_fs %r or odr %r"
                             % (accel_fs, gyro_fs, odr))
        self._write(_REG_ACCEL_CONFIG0, (ACCEL_FS[accel_fs] << 5) | ODR[odr])
        self._write(_REG_GYRO_CONFIG0, (GYRO_FS[gyro_fs] << 5) | ODR[odr])
        self._accel_mg = accel_fs * 1000
        self._gyro_mdps = int(gyro_fs * 1000)

    def read(self):
        """(ax, ay, az, gx, gy, gz) in milli-g and milli-dps, or None while there is no valid
        sample (the sensor reports -32768)."""
        d = self._data
        self.i2c.readfrom_mem_into(self.addr, _REG_ACCEL_DATA_X1, d)
        if _s16(d, 0) == _INVALID or _s16(d, 6) == _INVALID:
            return None
        a = self._accel_mg
        g = self._gyro_mdps
        return (_scale(d, 0, a), _scale(d, 2, a), _scale(d, 4, a),
                _scale(d, 6, g), _scale(d, 8, g), _scale(d, 10, g))
