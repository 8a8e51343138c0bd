# The device's keys: its ES256 signing key (made on the device) and the owner's data key.
import binascii
import json

from agent import p256
from agent.proto import DATA_KEY_LEN, device_hex, device_id


class Identity:
    def __init__(self, secret, data_key, public=None):
        self.secret = secret
        self.data_key = data_key
        self.public = public or p256.public_key(secret)
        self.device_id = device_id(self.public)
        self.hex = device_hex(self.device_id)

    @classmethod
    def create(cls, urandom):
        return cls(p256.new_secret(urandom), urandom(DATA_KEY_LEN))

    @classmethod
    def load(cls, path):
        with open(path) as f:
            d = json.load(f)
        return cls(_unhex(d["sk"]), _unhex(d["dk"]), _unhex(d["pk"]))

    def save(self, path):
        with open(path, "w") as f:
            json.dump({"sk": _hex(self.secret), "dk": _hex(self.data_key),
                       "pk": _hex(self.public)}, f)


def _hex(b):
    return binascii.hexlify(b).decode()


def _unhex(s):
    return binascii.unhexlify(s)
