# EdgeKeep wire protocol v1: names and numbers shared by the agent and the gateway.
# docs/protocol.md is the prose version of this file.
import binascii
import hashlib

VERSION = 1

# Envelope map keys (CBOR unsigned ints, written in ascending order).
ENV_VERSION = 0
ENV_DEVICE = 1
ENV_SEQ = 2
ENV_TIME = 3
ENV_KIND = 4
ENV_BASE = 5
ENV_COUNT = 6
ENV_CIPHERTEXT = 7
ENV_HEALTH = 8

# Message kinds (the last topic level).
KIND_TELEMETRY = "t"
KIND_STATUS = "s"

# Ack payload map keys.
ACK_VERSION = 0
ACK_SEQ = 2
ACK_REJECTED = 3   # sequences <= acked the gateway refused although signed (unstorable)

# COSE (RFC 9052/9053) labels and algorithms.
COSE_ALG = 1
COSE_KID = 4
COSE_IV = 5
ALG_ES256 = -7
ALG_AES_CCM_16_128_128 = 30
TAG_SIGN1 = 18
TAG_ENCRYPT0 = 16

DEVICE_ID_LEN = 8
DATA_KEY_LEN = 16
NONCE_LEN = 13
BOOT_ID_LEN = 8

# One telemetry reading, big-endian, 34 bytes:
#   dt u16 (s after the batch time), temp i16 (0.01 C), hum u16 (0.01 %RH),
#   pres u32 (Pa), gas u32 (ohm), light u32 (0.01 lux), ax ay az i16 (mg),
#   lat lon i32 (1e-7 deg), batt u16 (mV)
# A value that is absent (no GPS fix, a failed sensor) is sent as the type's MISSING.
READING_FORMAT = ">HhHIIIhhhiiH"
READING_FIELDS = ("dt", "temp", "hum", "pres", "gas", "light", "ax", "ay", "az", "lat", "lon", "batt")
READING_SIZE = 34
MISSING = {"h": -0x8000, "H": 0xFFFF, "i": -0x80000000, "I": 0xFFFFFFFF}
# Plaintext of a telemetry batch: CBOR [READINGS_SCHEMA, bstr of packed readings].
READINGS_SCHEMA = "pebble/1"


def device_id(public_key):
    """Device id: the first 8 bytes of SHA-256 over the 65-byte uncompressed P-256 key."""
    return hashlib.sha256(public_key).digest()[:DEVICE_ID_LEN]


def device_hex(dev_id):
    return binascii.hexlify(dev_id).decode()


def up_topic(dev_hex, kind):
    return "ek/" + dev_hex + "/up/" + kind


def down_topic(dev_hex, kind):
    return "ek/" + dev_hex + "/down/" + kind
