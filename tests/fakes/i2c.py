"""A fake machine.I2C bus with attachable register-map devices.

Like MicroPython's machine.I2C: an address that does not ACK raises OSError(ENODEV), and a
read either fills the whole buffer or raises. Faults can be injected per device.
"""

import errno


class FakeDevice:
    """A device holding 256 8-bit registers. Multi-byte transfers auto-increment the register
    address. Subclasses override read_reg/write_reg for registers with side effects."""

    def __init__(self, addr):
        self.addr = addr
        self.regs = bytearray(256)
        self.nack = False  # the device stops answering its address
        self.short_read = None  # the next longer read stops after this many bytes
        self.writes = []  # (register, value) of every byte written, in order

    def read_reg(self, reg):
        return self.regs[reg]

    def write_reg(self, reg, value):
        self.regs[reg] = value

    def read(self, reg, n):
        return bytes(self.read_reg((reg + i) & 0xFF) for i in range(n))

    def write(self, reg, data):
        for i, value in enumerate(data):
            self.writes.append(((reg + i) & 0xFF, value))
            self.write_reg((reg + i) & 0xFF, value)


class FakeI2C:
    def __init__(self, *devices):
        self.devices = {}
        for d in devices:
            self.attach(d)

    def attach(self, device):
        self.devices[device.addr] = device
        return device

    def scan(self):
        return sorted(a for a, d in self.devices.items() if not d.nack)

    def _device(self, addr):
        d = self.devices.get(addr)
        if d is None or d.nack:
            raise OSError(errno.ENODEV, "ENODEV")
        return d

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        d = self._device(addr)
        data = d.read(memaddr, nbytes)
        if d.short_read is not None and nbytes > d.short_read:
            data, d.short_read = data[:d.short_read], None
        return data

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        data = self.readfrom_mem(addr, memaddr, len(buf))
        buf[:len(data)] = data
        if len(data) < len(buf):
            raise OSError(errno.EIO, "EIO")

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self._device(addr).write(memaddr, bytes(buf))
