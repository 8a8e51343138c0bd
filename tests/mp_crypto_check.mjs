// Runs the device crypto (agent/aes.py, ccm.py, p256.py, sha256hmac.py) on real MicroPython:
// the official WebAssembly build, with a 64 KB heap like a small ESP32 or nRF9160.
//
//   node tests/mp_crypto_check.mjs INPUTS.json
//
// INPUTS.json holds hex strings: secret, digest, key, nonce, aad, plaintext.
// Prints one JSON line: the results as hex, whether the results check out on the device,
// the AES backend, and wall times in ms.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const MODULES = ["aes.py", "ccm.py", "heap.py", "p256.py", "sha256hmac.py"];

const SCRIPT = `
import json, time
from binascii import hexlify, unhexlify
from agent import aes, ccm, p256

with open("/inputs.json") as f:
    inp = json.load(f)
secret, digest, key, nonce, aad, plaintext = [unhexlify(inp[k]) for k in
    ("secret", "digest", "key", "nonce", "aad", "plaintext")]

def timed(fn, *args):
    t = time.ticks_us()
    out = fn(*args)
    return out, time.ticks_diff(time.ticks_us(), t) / 1000

pub, pub_ms = timed(p256.public_key, secret)  # also builds the comb table for G
sig, sign_ms = timed(p256.sign, secret, digest)
ok, verify_ms = timed(p256.verify, pub, digest, sig)
sealed, seal_ms = timed(ccm.seal, key, nonce, plaintext, aad, 16)
opened, open_ms = timed(ccm.open_, key, nonce, sealed, aad, 16)
print(json.dumps({
    "backend": aes.BACKEND,
    "public_key": hexlify(pub).decode(),
    "signature": hexlify(sig).decode(),
    "sealed": hexlify(sealed).decode(),
    "verified": ok,
    "opened": opened == plaintext,
    "ms": {"public_key": pub_ms, "sign": sign_ms, "verify": verify_ms,
           "seal": seal_ms, "open": open_ms},
}))
`;

const inputs = readFileSync(process.argv[2]);
const out = [];
const mp = await loadMicroPython({ heapsize: 65536, stdout: (line) => out.push(line) });
mp.FS.mkdir("/agent");
mp.FS.writeFile("/agent/__init__.py", "");  // only these modules, not the whole agent
for (const name of MODULES) {
  mp.FS.writeFile("/agent/" + name, readFileSync(join(ROOT, "agent", name)));
}
mp.FS.writeFile("/inputs.json", inputs);
try {
  mp.runPython(SCRIPT);
} catch (err) {
  process.stderr.write(out.join("\n") + "\n" + String(err) + "\n");
  process.exit(1);
}
process.stdout.write(out.join("\n") + "\n");
