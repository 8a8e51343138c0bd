# NMEA 0183 GGA and RMC parsing with integer results, and a GPS reader that keeps the last fix.
# Positions are signed degrees x 1e7 (as the Pebble's protobuf), altitude is in cm, HDOP x 100,
# time is seconds since UTC midnight. Without a valid fix there is no position: None.

_MAX_LINE = 96  # NMEA allows 82 characters per sentence; a little slack for odd receivers


def checksum(body):
    """XOR of the bytes between '$' and '*'."""
    c = 0
    for ch in body:
        c ^= ord(ch)
    return c


def _split_decimal(s):
    parts = s.split(".", 1)
    return parts[0], parts[1] if len(parts) > 1 else ""


def _fixed(s, places):
    """Decimal string -> int scaled by 10**places, without floats (nRF floats are 32-bit)."""
    neg = s.startswith("-")
    if neg:
        s = s[1:]
    whole, frac = _split_decimal(s)
    frac = (frac + "0" * places)[:places]
    if not (whole + frac).isdigit():
        raise ValueError("NMEA: bad number %r" % s)
    v = int(whole + frac)
    return -v if neg else v


def _coord(value, hemi, deg_digits):
    """ddmm.mmmm / dddmm.mmmm + N/S/E/W -> degrees x 1e7, rounded."""
    whole, frac = _split_decimal(value)
    if len(whole) != deg_digits + 2 or hemi not in ("N", "S", "E", "W"):
        raise ValueError("NMEA: bad coordinate %r %r" % (value, hemi))
    scale = 10 ** len(frac)
    minutes = _fixed(value[deg_digits:], len(frac))  # minutes x scale
    v = int(whole[:deg_digits]) * 10000000 + (minutes * 10000000 + 30 * scale) // (60 * scale)
    return -v if hemi in "SW" else v


def _time(s):
    if len(s) < 6 or not s[:6].isdigit():
        raise ValueError("NMEA: bad time %r" % s)
    return int(s[0:2]) * 3600 + int(s[2:4]) * 60 + int(s[4:6])


def _date(s):
    # ddmmyy; two-digit years from 80 are taken as 19yy
    if len(s) != 6 or not s.isdigit():
        raise ValueError("NMEA: bad date %r" % s)
    yy = int(s[4:6])
    return (1900 + yy if yy >= 80 else 2000 + yy, int(s[2:4]), int(s[0:2]))


def parse(line):
    """Parse one sentence (bytes, with or without CR/LF). Returns a dict for GGA and RMC, None
    for other sentence types; raises ValueError for a missing or wrong checksum or a malformed
    sentence. Keys: type, time, fix (bool), lat, lon (None without fix); GGA adds alt, sats,
    hdop; RMC adds date (yyyy, mm, dd)."""
    try:
        line = line.decode().strip()
    except UnicodeError:
        raise ValueError("NMEA: not ASCII")
    star = line.rfind("*")
    if not line.startswith("$") or star < 0 or len(line) != star + 3:
        raise ValueError("NMEA: no checksum")
    if checksum(line[1:star]) != int(line[star + 1:], 16):
        raise ValueError("NMEA: checksum mismatch")
    f = line[1:star].split(",")
    kind = f[0][-3:]
    if kind == "GGA" and len(f) >= 10:
        return _gga(f)
    if kind == "RMC" and len(f) >= 10:
        return _rmc(f)
    if kind in ("GGA", "RMC"):
        raise ValueError("NMEA: short %s sentence" % kind)
    return None


def _gga(f):
    # $--GGA,time,lat,N,lon,E,quality,sats,hdop,alt,M,sep,M,age,station
    fix = f[6] not in ("", "0")
    r = {"type": "GGA", "time": _time(f[1]) if f[1] else None, "fix": fix,
         "lat": None, "lon": None, "alt": None,
         "sats": int(f[7]) if f[7].isdigit() else None,
         "hdop": _fixed(f[8], 2) if f[8] else None}
    if fix:
        r["lat"] = _coord(f[2], f[3], 2)
        r["lon"] = _coord(f[4], f[5], 3)
        r["alt"] = _fixed(f[9], 2) if f[9] else None
    return r


def _rmc(f):
    # $--RMC,time,status,lat,N,lon,E,speed,course,date,magvar,E[,mode[,navstatus]]
    fix = f[2] == "A" and (len(f) < 13 or f[12] != "N")  # mode N: data not valid (NMEA 2.3)
    d = f[9]
    r = {"type": "RMC", "time": _time(f[1]) if f[1] else None, "fix": fix,
         "lat": None, "lon": None,
         "date": _date(d) if d else None}
    if fix:
        r["lat"] = _coord(f[3], f[4], 2)
        r["lon"] = _coord(f[5], f[6], 3)
    return r


class GPS:
    """Reads NMEA from a machine.UART-like object and keeps the latest fix. Call update() often
    enough that the UART's receive buffer does not overflow."""

    def __init__(self, uart):
        self.uart = uart
        self.fix = None  # dict: lat, lon, time, and alt/sats/hdop (GGA), date (RMC)
        self.bad = 0  # sentences dropped for a bad checksum or format
        self._buf = bytearray(_MAX_LINE)
        self._n = 0
        self._skip = False  # inside an over-long line: drop bytes until its end

    def update(self):
        """Consume what the UART has buffered. Returns the current fix (or None)."""
        n = self.uart.any()
        while n:
            data = self.uart.read(min(n, 256))
            if not data:
                break
            self.feed(data)
            n = self.uart.any()
        return self.fix

    def position(self):
        return (self.fix["lat"], self.fix["lon"]) if self.fix else None

    def feed(self, data):
        """Split bytes into lines; a '$' starts a new sentence and drops any unfinished one."""
        buf = self._buf
        for b in data:
            if b == 0x24:  # '$'
                self._n = 0
                self._skip = False
            elif b == 0x0A:  # '\n'
                if self._n and not self._skip:
                    self._sentence(bytes(buf[:self._n]))
                self._n = 0
                self._skip = False
                continue
            if self._skip:
                continue
            if self._n == len(buf):
                self._skip = True
                continue
            buf[self._n] = b
            self._n += 1

    def _sentence(self, line):
        try:
            s = parse(line)
        except ValueError:
            self.bad += 1
            return
        if s is None:
            return
        if not s["fix"]:
            self.fix = None
            return
        fix = self.fix or {}
        for k in s:
            if k not in ("type", "fix") and s[k] is not None:
                fix[k] = s[k]
        self.fix = fix
