"""Atheris fuzz targets. `python -m fuzz.targets NAME [libFuzzer options] [corpus dirs]`;
fuzz/run.py (`make fuzz`) runs them all. Each target's one_input(data) is also what
tests/test_fuzz.py replays the regression inputs (tests/fuzz_regressions/NAME/) through.

cbor           agent.cbor.loads: anything but a value or ValueError is a crash.
downlinks      the device's downlink handlers (ack, chunk ack, OTA receiver; the first byte
               picks one) on a fake transport and a temporary flash: any exception is a crash.
uplink         the gateway's uplink path, Ingest.check (protocol.parse, the signature,
               open_envelope; objects.parse_chunk for chunks) and, for what passes,
               Ingest.process (parse_manifest, the store, acks) on a temporary store with one
               registered device. The first byte picks the topic's kind. Reject is the only
               allowed exception.
uplink_signed  the same past the signature: the input is the envelope (the COSE payload),
               put in a Signed as if its signature had verified, so open_envelope and the
               store path see fuzzed envelopes."""
import abc
import os
import sys
import tempfile

KINDS = ("t", "s", "m", "o", "c")


class Target(abc.ABC):
    name = None

    def setup(self):
        """Import (under atheris' instrumentation when fuzzing) and build the state; a
        target with nothing to build keeps this."""
        return None

    @abc.abstractmethod
    def one_input(self, data):
        """Run one fuzzed input; raise only for a crash."""

    def seeds(self):
        return []


class Cbor(Target):
    name = "cbor"

    def setup(self):
        from agent import cbor
        self.cbor = cbor

    def one_input(self, data):
        try:
            self.cbor.loads(data)
        except ValueError:
            pass

    def seeds(self):
        from fuzz.corpus import SEEDS
        return SEEDS


class Downlinks(Target):
    name = "downlinks"

    def setup(self, flash=None):
        from fuzz.downlinks import Harness
        self.h = Harness(flash)

    def one_input(self, data):
        if not data:
            return
        handler = getattr(self.h, self.h.HANDLERS[data[0] % len(self.h.HANDLERS)])
        handler(data[1:])  # returns why a malformed one is malformed; never raises

    def seeds(self):
        from fuzz.corpus import SEEDS
        return [bytes((i,)) + s for s in SEEDS for i in range(3)]


class Uplink(Target):
    name = "uplink"

    def setup(self, data_dir=None):
        from agent import cbor, cose, message, objects
        from agent.identity import Identity
        from gateway.ingest.pipeline import Ingest
        from gateway.store.database import Store
        from gateway.wire import protocol
        self.protocol = protocol
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="ek-fuzz-gw-")
        secret = bytes(range(1, 33))
        self.ident = Identity(secret, bytes(16))
        store = Store.open(self.data_dir)
        store.add_device(self.ident.hex, self.ident.public, "fuzz", "camera")
        store.close()
        self.ingest = Ingest(self.data_dir, "mqtt://127.0.0.1:1", epoch_seconds=3600)
        self.seq = 0
        # seeds: one signed message of each kind, and the chunks of one object
        nonces = message.Nonces(lambda n: bytes(n))
        self._seeds = []
        for seq, kind, plain, count, health in (
                (1, "t", cbor.dumps(["pebble/1", bytes(34)]), 1, None),
                (2, "s", None, None, {"fw": "0.1.0", "up": 1, "q": 0, "bad": 3}),
                (4, "o", None, None, {"ota": "0.2.0", "st": "need", "need": [[0, 3]]})):
            self._add_seed(kind, message.seal(self.ident, nonces, seq, 1790000000, kind, 1,
                                              plain, count, health))
        oid = bytes(range(8))
        content_key = bytes(16)
        encs = [cose.encrypt0(content_key, nonces.next(), bytes(100)) for _ in range(2)]
        import hashlib
        hashes = b"".join(hashlib.sha256(e).digest() for e in encs)
        wrapped = objects.wrap_key(self.ident.data_key, nonces.next(), content_key)
        self._add_seed("m", objects.manifest(self.ident, 3, 1, 1790000000, oid, "motion",
                                             "image/jpeg", 200, 100, hashes, wrapped,
                                             bytes(32), bytes(range(8, 16))))
        for i, e in enumerate(encs):
            self._add_seed("c", cbor.dumps([oid, i, e]))
        self._add_seed("c", cbor.dumps([oid]))

    def _add_seed(self, kind, raw):
        self._seeds.append(bytes((KINDS.index(kind),)) + raw)

    def topic(self, b):
        from agent.proto import up_topic
        return up_topic(self.ident.hex, KINDS[b % len(KINDS)])

    def one_input(self, data):
        if not data:
            return
        topic, raw = self.topic(data[0]), data[1:]
        try:
            self.ingest.check(topic, raw)
        except self.protocol.Reject:
            return
        self.ingest.process([(topic, raw, 0, 0)])

    def seeds(self):
        return self._seeds


class UplinkSigned(Uplink):
    """Past the signature: the input's envelope, as if signed."""
    name = "uplink_signed"

    def setup(self, data_dir=None):
        Uplink.setup(self, data_dir)
        import cbor2

        from gateway.wire import protocol
        self.cbor2 = cbor2
        ingest, ident = self.ingest, self.ident
        check = ingest.check

        def unsigned_check(topic, raw):
            if topic.endswith("/c"):
                return check(topic, raw)
            payload = raw
            protocol.check_canonical(payload, "envelope")
            kind = topic.rsplit("/", 1)[1]
            cose = cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01&", {4: ident.device_id},
                                                  payload, bytes(64)]))
            signed = protocol.Signed(ident.hex, kind, b"\xa1\x01&", payload, bytes(64), cose)
            return signed, protocol.open_envelope(signed)

        ingest.check = unsigned_check
        # seeds: the envelopes of Uplink's seeds
        seeds = []
        for s in self._seeds:
            item = cbor2.loads(s[1:])
            seeds.append(s[:1] + (item.value[2] if hasattr(item, "value") else s[1:]))
        self._seeds = seeds


TARGETS = {t.name: t for t in (Cbor, Downlinks, Uplink, UplinkSigned)}


def main():
    import logging

    import atheris
    logging.disable(logging.WARNING)  # the ingest's reject log: thousands of lines a second
    name = sys.argv[1]
    target = TARGETS[name]()
    with atheris.instrument_imports(include=["agent", "gateway", "fuzz"]):
        target.setup()
    corpus = [a for a in sys.argv[2:] if not a.startswith("-")]
    if corpus and not os.listdir(corpus[0]):
        for i, seed in enumerate(target.seeds()):
            with open(os.path.join(corpus[0], "seed-%03d" % i), "wb") as f:
                f.write(seed)
    atheris.Setup([sys.argv[0]] + sys.argv[2:], target.one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
