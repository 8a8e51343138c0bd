# Simulated Pebble-class sensors: plausible, slowly drifting readings as scaled integers
# (same units as hw/pebble's drivers), for the simulator and the demo.
import random


class SimTracker:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        r = self.rng
        self.temp = r.randint(1800, 2600)       # 0.01 C
        self.hum = r.randint(3000, 6000)        # 0.01 %RH
        self.pres = r.randint(99000, 102500)    # Pa
        self.gas = r.randint(40000, 200000)     # ohm
        self.lat = r.randint(-60, 60) * 10000000 + r.randint(0, 9999999)
        self.lon = r.randint(-170, 170) * 10000000 + r.randint(0, 9999999)
        self.batt = r.randint(3900, 4150)       # mV
        self.count = 0

    def read(self):
        r = self.rng
        self.count += 1
        self.temp = _walk(r, self.temp, 15, -4000, 8500)
        self.hum = _walk(r, self.hum, 40, 0, 10000)
        self.pres = _walk(r, self.pres, 20, 30000, 110000)
        self.gas = _walk(r, self.gas, 900, 1000, 2000000)
        self.lat = _walk(r, self.lat, 300, -900000000, 900000000)
        self.lon = _walk(r, self.lon, 300, -1800000000, 1800000000)
        if self.count % 7 == 0 and self.batt > 3300:
            self.batt -= 1
        fix = r.random() > 0.1
        return {
            "temp": self.temp, "hum": self.hum, "pres": self.pres, "gas": self.gas,
            "light": r.randint(0, 5000000),
            "ax": r.randint(-60, 60), "ay": r.randint(-60, 60), "az": 1000 + r.randint(-40, 40),
            "lat": self.lat if fix else None, "lon": self.lon if fix else None,
            "batt": self.batt,
        }


def _walk(rng, value, step, lo, hi):
    return min(hi, max(lo, value + rng.randint(-step, step)))
