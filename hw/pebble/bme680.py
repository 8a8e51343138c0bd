# Bosch BME680 (BST-BME680-DS001) over I2C in forced mode: temperature, pressure, humidity, gas.
# Compensation is the datasheet's integer code, as in Bosch's BME680 API, so results are bit-exact
# with it: temperature in 0.01 degC, pressure in Pa, humidity in 0.001 %RH, gas in ohms.

from hw.pebble.delay import sleep_ms

CHIP_ID = 0x61
_REG_CHIP_ID = 0xD0
_REG_RESET = 0xE0
_SOFT_RESET = 0xB6
_REG_FIELD0 = 0x1D  # meas_status_0, then the 14 data bytes up to gas_r_lsb (0x2B)
_REG_RES_HEAT0 = 0x5A
_REG_GAS_WAIT0 = 0x64
_REG_CTRL_GAS1 = 0x71
_REG_CTRL_HUM = 0x72
_REG_CTRL_MEAS = 0x74
_REG_CONFIG = 0x75
_REG_COEFF1 = 0x8A  # 23 bytes: par_t2 .. par_p10
_REG_COEFF2 = 0xE1  # 14 bytes: par_h2 .. par_g3
_REG_COEFF3 = 0x00  # 5 bytes: res_heat_val, -, res_heat_range, -, range_sw_err

_NEW_DATA = 0x80
_MEASURING = 0x20
_GAS_VALID = 0x20
_HEAT_STAB = 0x10
_RUN_GAS = 0x10
_FORCED_MODE = 0x01
_POLL_MS = 10

_OVERSAMPLING = {0: 0, 1: 1, 2: 2, 4: 3, 8: 4, 16: 5}
_FILTER = {0: 0, 1: 1, 3: 2, 7: 3, 15: 4, 31: 5, 63: 6, 127: 7}

# The BME680's gas-range tables (const_array1/const_array2 of the datasheet, in the integer form
# of Bosch's API). The BME688 uses a different formula.
_GAS_K1 = (2147483647, 2147483647, 2147483647, 2147483647, 2147483647, 2126008810, 2147483647,
           2130303777, 2147483647, 2147483647, 2143188679, 2136746228, 2147483647, 2126008810,
           2147483647, 2147483647)
_GAS_K2 = (4096000000, 2048000000, 1024000000, 512000000, 255744255, 127110228, 64000000,
           32258064, 16016016, 8000000, 4000000, 2000000, 1000000, 500000, 250000, 125000)


def _u16(b, i):
    return b[i] | (b[i + 1] << 8)


def _s16(b, i):
    v = _u16(b, i)
    return v - 0x10000 if v & 0x8000 else v


def _s8(v):
    return v - 0x100 if v & 0x80 else v


def _cdiv(a, b):
    # C's integer division truncates toward zero; Python's // floors.
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def heater_duration_code(ms):
    """gas_wait_x: 6-bit duration in units of 1, 4, 16 or 64 ms."""
    if ms >= 0xFC0:
        return 0xFF
    factor = 0
    while ms > 0x3F:
        ms //= 4
        factor += 1
    return ms + factor * 64


class BME680:
    def __init__(self, i2c, addr=0x76, temp_os=8, pres_os=4, hum_os=2, filter_size=3,
                 heater_temp=320, heater_ms=150, ambient=25):
        self.i2c = i2c
        self.addr = addr
        self.heater_temp = min(heater_temp, 400)
        self.ambient = ambient  # degC, refined by each measurement; the heater target uses it
        self._one = bytearray(1)
        self._field = bytearray(15)
        self._check_chip_id()
        self._write(_REG_RESET, _SOFT_RESET)
        sleep_ms(5)  # start-up time after a soft reset is 2 ms
        self._read_calibration()
        self._ctrl_meas = (_OVERSAMPLING[temp_os] << 5) | (_OVERSAMPLING[pres_os] << 2)
        self._write(_REG_CTRL_HUM, _OVERSAMPLING[hum_os])
        self._write(_REG_CONFIG, _FILTER[filter_size] << 2)
        self._write(_REG_GAS_WAIT0, heater_duration_code(heater_ms))
        self._write(_REG_CTRL_GAS1, _RUN_GAS)  # nb_conv = 0: heater set-point 0
        # Bosch's measurement duration: 1.963 ms per oversampling cycle, plus fixed overheads.
        cycles = temp_os + pres_os + hum_os
        self.duration_ms = (cycles * 1963 + 477 * 9 + 500 + 500) // 1000 + 1 + heater_ms

    def _check_chip_id(self):
        self.i2c.readfrom_mem_into(self.addr, _REG_CHIP_ID, self._one)
        if self._one[0] != CHIP_ID:
            raise OSError(19, "BME680 at 0x%02x: chip id 0x%02x, expected 0x%02x"
                          % (self.addr, self._one[0], CHIP_ID))

    def _write(self, reg, value):
        # One register per transfer: in I2C mode the BME680 takes multi-byte writes as
        # address/data pairs, which machine.I2C.writeto_mem does not produce.
        self._one[0] = value
        self.i2c.writeto_mem(self.addr, reg, self._one)

    def _read_calibration(self):
        c = bytearray(23)
        self.i2c.readfrom_mem_into(self.addr, _REG_COEFF1, c)
        self.par_t2 = _s16(c, 0)
        self.par_t3 = _s8(c[2])
        self.par_p1 = _u16(c, 4)
        self.par_p2 = _s16(c, 6)
        self.par_p3 = _s8(c[8])
        self.par_p4 = _s16(c, 10)
        self.par_p5 = _s16(c, 12)
        self.par_p7 = _s8(c[14])
        self.par_p6 = _s8(c[15])
        self.par_p8 = _s16(c, 18)
        self.par_p9 = _s16(c, 20)
        self.par_p10 = c[22]
        c = bytearray(14)
        self.i2c.readfrom_mem_into(self.addr, _REG_COEFF2, c)
        self.par_h2 = (c[0] << 4) | (c[1] >> 4)
        self.par_h1 = (c[2] << 4) | (c[1] & 0x0F)
        self.par_h3 = _s8(c[3])
        self.par_h4 = _s8(c[4])
        self.par_h5 = _s8(c[5])
        self.par_h6 = c[6]
        self.par_h7 = _s8(c[7])
        self.par_t1 = _u16(c, 8)
        self.par_g2 = _s16(c, 10)
        self.par_g1 = _s8(c[12])
        self.par_g3 = _s8(c[13])
        c = bytearray(5)
        self.i2c.readfrom_mem_into(self.addr, _REG_COEFF3, c)
        self.res_heat_val = _s8(c[0])
        self.res_heat_range = (c[2] >> 4) & 0x03
        self.range_sw_err = _s8(c[4]) >> 4  # signed upper nibble

    def heater_resistance_code(self):
        """res_heat_x for the heater target at the current ambient temperature."""
        var1 = _cdiv(self.ambient * self.par_g3, 1000) * 256
        var2 = (self.par_g1 + 784) * _cdiv(_cdiv((self.par_g2 + 154009) * self.heater_temp * 5,
                                                 100) + 3276800, 10)
        var4 = _cdiv(var1 + _cdiv(var2, 2), self.res_heat_range + 4)
        var5 = 131 * self.res_heat_val + 65536
        return _cdiv((_cdiv(var4, var5) - 250) * 34 + 50, 100) & 0xFF

    def start(self):
        """Start one forced-mode measurement (TPH, then gas with the heater on)."""
        self._write(_REG_RES_HEAT0, self.heater_resistance_code())
        self._write(_REG_CTRL_MEAS, self._ctrl_meas | _FORCED_MODE)

    def read(self):
        """Wait for the measurement started by start(). Returns (temp, pres, hum, gas):
        0.01 degC, Pa, 0.001 %RH, ohms; gas is None unless the heater was stable and the
        gas reading valid."""
        f = self._field
        for _ in range(self.duration_ms // _POLL_MS + 5):
            self.i2c.readfrom_mem_into(self.addr, _REG_FIELD0, f)
            if f[0] & _NEW_DATA and not f[0] & _MEASURING:
                break
            sleep_ms(_POLL_MS)
        else:
            raise OSError(110, "BME680 at 0x%02x: no new data" % self.addr)
        temp = self.temperature((f[5] << 12) | (f[6] << 4) | (f[7] >> 4))
        pres = self.pressure((f[2] << 12) | (f[3] << 4) | (f[4] >> 4))
        hum = self.humidity((f[8] << 8) | f[9])
        gas = None
        if f[14] & _GAS_VALID and f[14] & _HEAT_STAB:
            gas = self.gas_resistance((f[13] << 2) | (f[14] >> 6), f[14] & 0x0F)
        self.ambient = temp // 100
        return temp, pres, hum, gas

    def measure(self):
        self.start()
        return self.read()

    def temperature(self, adc):
        """0.01 degC; also sets t_fine for pressure and humidity."""
        var1 = (adc >> 3) - (self.par_t1 << 1)
        var2 = (var1 * self.par_t2) >> 11
        var3 = ((((var1 >> 1) * (var1 >> 1)) >> 12) * (self.par_t3 << 4)) >> 14
        self.t_fine = var2 + var3
        return (self.t_fine * 5 + 128) >> 8

    def pressure(self, adc):
        """Pa, from the t_fine of the same measurement."""
        var1 = (self.t_fine >> 1) - 64000
        var2 = ((((var1 >> 2) * (var1 >> 2)) >> 11) * self.par_p6) >> 2
        var2 += (var1 * self.par_p5) << 1
        var2 = (var2 >> 2) + (self.par_p4 << 16)
        var1 = (((((var1 >> 2) * (var1 >> 2)) >> 13) * (self.par_p3 << 5)) >> 3) \
            + ((self.par_p2 * var1) >> 1)
        var1 = ((32768 + (var1 >> 18)) * self.par_p1) >> 15
        p = (1048576 - adc - (var2 >> 12)) * 3125
        # Same operation order as the 32-bit reference, which divides first for large values.
        if p >= 0x40000000:
            p = _cdiv(p, var1) << 1
        else:
            p = _cdiv(p << 1, var1)
        var1 = (self.par_p9 * (((p >> 3) * (p >> 3)) >> 13)) >> 12
        var2 = ((p >> 2) * self.par_p8) >> 13
        var3 = ((p >> 8) * (p >> 8) * (p >> 8) * self.par_p10) >> 17
        return p + ((var1 + var2 + var3 + (self.par_p7 << 7)) >> 4)

    def humidity(self, adc):
        """0.001 %RH (0..100000), from the t_fine of the same measurement."""
        t = (self.t_fine * 5 + 128) >> 8
        var1 = adc - self.par_h1 * 16 - (_cdiv(t * self.par_h3, 100) >> 1)
        var2 = (self.par_h2 * (_cdiv(t * self.par_h4, 100)
                               + _cdiv((t * _cdiv(t * self.par_h5, 100)) >> 6, 100)
                               + (1 << 14))) >> 10
        var3 = var1 * var2
        var4 = ((self.par_h6 << 7) + _cdiv(t * self.par_h7, 100)) >> 4
        var5 = ((var3 >> 14) * (var3 >> 14)) >> 10
        var6 = (var4 * var5) >> 1
        hum = (((var3 + var6) >> 10) * 1000) >> 12
        return min(max(hum, 0), 100000)

    def gas_resistance(self, adc, gas_range):
        """Ohms, from the 10-bit gas ADC value and its range."""
        var1 = ((1340 + 5 * self.range_sw_err) * _GAS_K1[gas_range]) >> 16
        var2 = (adc << 15) - 16777216 + var1
        var3 = (_GAS_K2[gas_range] * var1) >> 9
        return _cdiv(var3 + (var2 >> 1), var2)
