"""Fake Bosch BME680 at register level (BST-BME680-DS001 memory map, I2C mode).

Holds calibration parameters in the datasheet's register layout, runs a forced-mode measurement
when ctrl_meas is written with mode 01 (reporting "measuring" for a few status reads first), and
publishes the configured raw ADC values in the field-data registers, with gas_valid/heat_stab set
only when the gas conversion and heater were configured.
"""

from .i2c import FakeDevice

# A real sensor's calibration dump, as published in pimoroni/bme680-python's tests
# (tests/conftest.py, from pimoroni/bme680-python issue #11), with its expected outputs.
PIMORONI_CALIBRATION = {
    "par_t1": 26041, "par_t2": 26469, "par_t3": 3,
    "par_p1": 36673, "par_p2": -10515, "par_p3": 88, "par_p4": 7310, "par_p5": -129,
    "par_p6": 30, "par_p7": 46, "par_p8": -3177, "par_p9": -2379, "par_p10": 30,
    "par_h1": 676, "par_h2": 1029, "par_h3": 0, "par_h4": 45, "par_h5": 20, "par_h6": 120,
    "par_h7": -100,
    "par_g1": -30, "par_g2": -24754, "par_g3": 18,
    "res_heat_range": 1, "res_heat_val": 48, "range_sw_err": 0,
}

_STATUS = 0x1D
_CTRL_GAS_1 = 0x71
_CTRL_HUM = 0x72
_CTRL_MEAS = 0x74
_RESET = 0xE0
_CONTROL_REGS = list(range(0x50, 0x6E)) + list(range(0x70, 0x76))


def _le16(regs, reg, value):
    regs[reg] = value & 0xFF
    regs[reg + 1] = (value >> 8) & 0xFF


def gas_wait_ms(code):
    return (code & 0x3F) * (4 ** (code >> 6))


class FakeBME680(FakeDevice):
    def __init__(self, addr=0x76, calibration=PIMORONI_CALIBRATION, chip_id=0x61):
        super().__init__(addr)
        self.regs[0xD0] = chip_id
        self.write_calibration(calibration)
        # Raw ADC outputs of the next measurement (the "scene").
        self.adc_temp = 501240
        self.adc_pres = 353485
        self.adc_hum = 19019
        self.adc_gas = 512
        self.gas_range = 5
        self.busy_reads = 2  # status reads that still see "measuring" after a trigger
        self.measurements = 0
        self.resets = 0
        self.heater_codes = []  # res_heat_0 in effect at each measurement
        self._busy = 0

    def write_calibration(self, c):
        r = self.regs
        _le16(r, 0x8A, c["par_t2"])
        r[0x8C] = c["par_t3"] & 0xFF
        _le16(r, 0x8E, c["par_p1"])
        _le16(r, 0x90, c["par_p2"])
        r[0x92] = c["par_p3"] & 0xFF
        _le16(r, 0x94, c["par_p4"])
        _le16(r, 0x96, c["par_p5"])
        r[0x98] = c["par_p7"] & 0xFF
        r[0x99] = c["par_p6"] & 0xFF
        _le16(r, 0x9C, c["par_p8"])
        _le16(r, 0x9E, c["par_p9"])
        r[0xA0] = c["par_p10"]
        r[0xE1] = c["par_h2"] >> 4
        r[0xE2] = ((c["par_h2"] & 0x0F) << 4) | (c["par_h1"] & 0x0F)
        r[0xE3] = c["par_h1"] >> 4
        r[0xE4] = c["par_h3"] & 0xFF
        r[0xE5] = c["par_h4"] & 0xFF
        r[0xE6] = c["par_h5"] & 0xFF
        r[0xE7] = c["par_h6"]
        r[0xE8] = c["par_h7"] & 0xFF
        _le16(r, 0xE9, c["par_t1"])
        _le16(r, 0xEB, c["par_g2"])
        r[0xED] = c["par_g1"] & 0xFF
        r[0xEE] = c["par_g3"] & 0xFF
        r[0x00] = c["res_heat_val"] & 0xFF
        r[0x02] = 0x09 | (c["res_heat_range"] << 4)  # other bits are reserved, not zero
        r[0x04] = ((c["range_sw_err"] << 4) & 0xF0) | 0x03

    def write(self, reg, data):
        # I2C multi-byte writes are register/data pairs: reg, d0, reg1, d1, ...
        super().write(reg, data[:1])
        for i in range(1, len(data) - 1, 2):
            super().write(data[i], data[i + 1:i + 2])

    def write_reg(self, reg, value):
        if reg == _RESET:
            if value == 0xB6:
                self.resets += 1
                for r in _CONTROL_REGS:
                    self.regs[r] = 0
            return
        self.regs[reg] = value
        if reg == _CTRL_MEAS and value & 0x03 == 0x01:
            self._measure()

    def read_reg(self, reg):
        if reg == _STATUS and self._busy:
            self._busy -= 1
            if not self._busy:
                self._publish()
            return 0x60  # gas_measuring | measuring
        return self.regs[reg]

    def _measure(self):
        self.measurements += 1
        self.heater_codes.append(self.regs[0x5A])
        self.regs[_STATUS] &= 0x7F  # new_data_0 clears when a conversion starts
        self._busy = self.busy_reads
        if not self._busy:
            self._publish()

    def _publish(self):
        r = self.regs
        ctrl = r[_CTRL_MEAS]
        temp = self.adc_temp if ctrl >> 5 else 0x80000  # skipped measurement reads 0x80000
        pres = self.adc_pres if (ctrl >> 2) & 0x07 else 0x80000
        hum = self.adc_hum if r[_CTRL_HUM] & 0x07 else 0x8000
        r[0x1F], r[0x20], r[0x21] = pres >> 12, (pres >> 4) & 0xFF, (pres & 0x0F) << 4
        r[0x22], r[0x23], r[0x24] = temp >> 12, (temp >> 4) & 0xFF, (temp & 0x0F) << 4
        r[0x25], r[0x26] = hum >> 8, hum & 0xFF
        run_gas = r[_CTRL_GAS_1] & 0x10
        profile = r[_CTRL_GAS_1] & 0x0F
        heated = r[0x5A + profile] != 0 and gas_wait_ms(r[0x64 + profile]) >= 30
        lsb = (self.adc_gas & 0x03) << 6 | self.gas_range
        if run_gas:
            lsb |= 0x20 | (0x10 if heated else 0)
        r[0x2A], r[0x2B] = self.adc_gas >> 2, lsb
        r[_CTRL_MEAS] = ctrl & 0xFC  # back to sleep mode
        r[_STATUS] = 0x80 | profile
