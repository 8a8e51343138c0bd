# Battery voltage through a resistor divider on an ADC pin, and a rough Li-ion state of charge.

# Resting voltage of one Li-ion cell (mV) -> state of charge (%), highest first. Under load the
# voltage sags, so this is an estimate for display, not a fuel gauge.
_LIION_CURVE = ((4200, 100), (4100, 90), (4000, 78), (3900, 63), (3800, 45), (3750, 32),
                (3700, 18), (3600, 6), (3300, 0))


def percent(mv):
    """Li-ion state of charge (0..100) by linear interpolation of _LIION_CURVE."""
    if mv >= _LIION_CURVE[0][0]:
        return 100
    for i in range(1, len(_LIION_CURVE)):
        v, p = _LIION_CURVE[i]
        if mv >= v:
            v0, p0 = _LIION_CURVE[i - 1]
            return p + (mv - v) * (p0 - p) // (v0 - v)
    return 0


class Battery:
    def __init__(self, adc, full_scale_mv, divider):
        """adc: machine.ADC-like (read_u16); full_scale_mv: ADC input at read_u16() == 65535;
        divider: battery voltage / ADC input voltage."""
        self.adc = adc
        self.full_scale_mv = full_scale_mv
        self.divider = divider

    def millivolts(self):
        return (self.adc.read_u16() * self.full_scale_mv * self.divider + 32767) // 65535

    def percent(self):
        return percent(self.millivolts())
