# Pin and bus configuration of a Pebble-class tracker, and construction of its sensor drivers.
# Pins are GPIO numbers (P0.nn on the nRF9160); "battery"/"adc" is what the port's machine.ADC
# takes (an AIN channel on nRF, a GPIO on ESP32). The caller builds the machine.I2C/UART/ADC
# objects from these and passes them to open_sensors().

from hw.pebble.battery import Battery
from hw.pebble.bme680 import BME680
from hw.pebble.icm42605 import ICM42605
from hw.pebble.nmea import GPS
from hw.pebble.sensors import PebbleSensors
from hw.pebble.tsl2572 import TSL2572

# IoTeX Pebble (hardware 3.0, nRF9160), as in iotexproject/pebble-firmware's board files.
PEBBLE = {
    "name": "iotex-pebble-hw30",
    # TWIM2 on P0.23 (SDA) / P0.22 (SCL); all three sensors share it.
    "i2c": {"id": 2, "sda": 23, "scl": 22, "freq": 400000},
    "bme680": 0x76,  # 0x77 with SDO high
    "icm42605": 0x69,  # 0x68 with AP_AD0 low
    "tsl2572": 0x39,
    # External GPS receiver on UARTE3, enabled by P0.03.
    "gps_uart": {"id": 3, "tx": 8, "rx": 9, "baud": 115200},
    "gps_enable": 3,
    # AT interface of a Serial LTE Modem image, where the agent runs on a separate MCU.
    "modem_uart": {"id": 1, "tx": 2, "rx": 1, "rts": 3, "cts": 4, "baud": 115200},
    # Battery on AIN0: SAADC gain 1/6 with the 0.6 V reference (3.6 V full scale), 1:2 divider.
    "battery": {"adc": 0, "full_scale_mv": 3600, "divider": 2},
}

# ESP32 dev board with the same sensors on breakouts, a UART GPS and an AT modem (for example
# an nRF9160 running Serial LTE Modem, or a SIMCom module).
ESP32_DEVKIT = {
    "name": "esp32-devkit",
    "i2c": {"id": 0, "sda": 21, "scl": 22, "freq": 400000},
    "bme680": 0x77,  # most breakouts pull SDO high
    "icm42605": 0x68,
    "tsl2572": 0x39,
    "gps_uart": {"id": 2, "tx": 17, "rx": 16, "baud": 9600},
    "gps_enable": None,
    "modem_uart": {"id": 1, "tx": 27, "rx": 26, "rts": None, "cts": None, "baud": 115200},
    # GPIO35 (ADC1) with ADC.ATTN_11DB, about 3.6 V at read_u16() == 65535; 1:2 divider.
    "battery": {"adc": 35, "full_scale_mv": 3600, "divider": 2},
}


def _open(sensors, name, make):
    try:
        return make()
    except OSError:
        sensors.errors[name] += 1
        return None


def open_sensors(i2c, uart=None, adc=None, board=PEBBLE):
    """PebbleSensors for whatever answers on the buses. A sensor that NACKs or has the wrong
    chip id is left out (its fields read None) and counted in .errors."""
    s = PebbleSensors(gps=GPS(uart) if uart is not None else None)
    s.env = _open(s, "env", lambda: BME680(i2c, board["bme680"]))
    s.imu = _open(s, "imu", lambda: ICM42605(i2c, board["icm42605"]))
    s.light = _open(s, "light", lambda: TSL2572(i2c, board["tsl2572"]))
    if adc is not None:
        b = board["battery"]
        s.batt = Battery(adc, b["full_scale_mv"], b["divider"])
    return s
