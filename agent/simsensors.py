# Simulated Pebble-class sensors: plausible, slowly drifting readings as scaled integers
# (same units as hw/pebble's drivers), for the simulator and the demo. Portable: MicroPython
# has no random.Random, so the readings come from a seeded xorshift32.
import hashlib


class XorShift32:
    """Marsaglia's xorshift32: tiny, portable, deterministic for a seed (str or int)."""

    def __init__(self, seed):
        if isinstance(seed, int):
            seed = str(seed)
        self.state = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") or 1

    def next(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def randint(self, lo, hi):
        """An int in [lo, hi] (modulo bias below 1e-3 for the spans used here)."""
        return lo + self.next() % (hi - lo + 1)


class SimTracker:
    def __init__(self, seed):
        self.rng = r = XorShift32(seed)
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
        fix = r.randint(0, 9) > 0  # no GPS fix one time in ten
        return {
            "temp": self.temp, "hum": self.hum, "pres": self.pres, "gas": self.gas,
            "light": r.randint(0, 5000000),
            "ax": r.randint(-60, 60), "ay": r.randint(-60, 60), "az": 1000 + r.randint(-40, 40),
            "lat": self.lat if fix else None, "lon": self.lon if fix else None,
            "batt": self.batt,
        }


def _walk(rng, value, step, lo, hi):
    return min(hi, max(lo, value + rng.randint(-step, step)))
