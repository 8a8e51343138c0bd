# binascii as a board's firmware has it (in C, nothing on the heap) for what device code uses.
# The build's own is micropython-lib's pure-Python one, whose tables take 7 KB of heap.
def hexlify(data):
    return bytes(data).hex().encode()


def unhexlify(data):
    return bytes.fromhex(data if isinstance(data, str) else data.decode())
