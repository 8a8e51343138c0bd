# One reading of every Pebble sensor as a dict of scaled integers. A sensor that is absent or
# fails on the bus gives None for its fields (and counts an error) instead of stopping the loop.

KEYS = ("temp", "hum", "pres", "gas", "light", "ax", "ay", "az", "lat", "lon", "batt")
SENSORS = ("env", "imu", "light", "gps", "batt")


class PebbleSensors:
    def __init__(self, env=None, imu=None, light=None, gps=None, batt=None):
        """env: BME680, imu: ICM42605, light: TSL2572, gps: nmea.GPS, batt: battery.Battery;
        any may be None when not fitted."""
        self.env = env
        self.imu = imu
        self.light = light
        self.gps = gps
        self.batt = batt
        self.errors = {}  # sensor name -> number of failed reads
        for name in SENSORS:
            self.errors[name] = 0

    def read(self):
        """{temp: 0.01 degC, hum: 0.01 %RH, pres: Pa, gas: ohm, light: 0.01 lux,
        ax/ay/az: milli-g, lat/lon: degrees x 1e7, batt: mV}; None where unknown."""
        r = {}
        for k in KEYS:
            r[k] = None
        for name in SENSORS:
            if getattr(self, name) is None:
                continue
            try:
                getattr(self, "_read_" + name)(r)
            except OSError:
                self.errors[name] += 1
        return r

    def _read_env(self, r):
        temp, pres, hum, gas = self.env.measure()
        r["temp"] = temp
        r["hum"] = hum // 10
        r["pres"] = pres
        r["gas"] = gas

    def _read_imu(self, r):
        v = self.imu.read()
        if v is not None:
            r["ax"], r["ay"], r["az"] = v[0], v[1], v[2]

    def _read_light(self, r):
        r["light"] = self.light.read()

    def _read_gps(self, r):
        self.gps.update()
        pos = self.gps.position()
        if pos:
            r["lat"], r["lon"] = pos

    def _read_batt(self, r):
        r["batt"] = self.batt.millivolts()
