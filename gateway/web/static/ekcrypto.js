// The owner's side of the EdgeKeep protocol, in the browser (and in Node for tests):
// open the keyring, parse messages (CBOR, COSE_Sign1, COSE_Encrypt0), decrypt AES-CCM,
// unpack readings, and check, decrypt and split camera objects. WebCrypto has no AES-CCM, so it is composed from AES-CTR (encryption)
// and AES-CBC (the CBC-MAC), as NIST SP 800-38C defines it. Scrypt comes from the vendored
// scrypt-js (globalThis.scrypt). Nothing here talks to the network.

const subtle = globalThis.crypto.subtle;
const TAG_SIGN1 = 18, TAG_ENCRYPT0 = 16, ALG_AES_CCM_16_128_128 = 30;
const ENV_DEVICE = 1, ENV_SEQ = 2, ENV_TIME = 3, ENV_KIND = 4, ENV_CIPHERTEXT = 7, ENV_OBJECT = 9;
const KIND_MANIFEST = "m", HASH_LEN = 32;
// The manifest's object map (docs/protocol.md, "Objects").
const OBJ_ID = 0, OBJ_EVENT = 1, OBJ_TYPE = 2, OBJ_SIZE = 3, OBJ_COUNT = 5, OBJ_ROOT = 6, OBJ_HASHES = 7;
// Each object's own content key, wrapped under the data key; the plaintext commitment; the
// object it belongs to. A manifest stored before content keys has neither key 8 nor 9.
const OBJ_KEY = 8, OBJ_COMMIT = 9, OBJ_OF = 10, CONTENT_KEY_LEN = 16, OID_LEN = 8;
const OPENING_LABEL = new TextEncoder().encode("edgekeep opening");
const READINGS_SCHEMA = "pebble/1", READING_SIZE = 34;
// [field, DataView getter, byte size, the value that means "absent"], after the u16 dt.
const READING_FIELDS = [
  ["temp", "getInt16", 2, -0x8000], ["hum", "getUint16", 2, 0xffff],
  ["pres", "getUint32", 4, 0xffffffff], ["gas", "getUint32", 4, 0xffffffff],
  ["light", "getUint32", 4, 0xffffffff], ["ax", "getInt16", 2, -0x8000],
  ["ay", "getInt16", 2, -0x8000], ["az", "getInt16", 2, -0x8000],
  ["lat", "getInt32", 4, -0x80000000], ["lon", "getInt32", 4, -0x80000000],
  ["batt", "getUint16", 2, 0xffff],
];

export const hex = {
  decode(s) {
    if (s.length % 2 || /[^0-9a-fA-F]/.test(s)) throw new Error("not hex: " + s.slice(0, 20));
    return Uint8Array.from(s.match(/../g) || [], (b) => parseInt(b, 16));
  },
  encode(b) { return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(""); },
};

export function base64Decode(s) {
  return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
}

// -- CBOR (RFC 8949), the definite-length subset the protocol uses ----------------------

export function cborDecode(bytes) {
  const r = { b: bytes, v: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), i: 0 };
  const value = cborItem(r);
  if (r.i !== bytes.length) throw new Error("CBOR: trailing bytes");
  return value;
}

function cborItem(r) {
  if (r.i >= r.b.length) throw new Error("CBOR: truncated");
  const ib = r.b[r.i++], major = ib >> 5, info = ib & 31;
  if (major === 7) return cborSimple(r, info);
  const n = cborArgument(r, info);
  switch (major) {
    case 0: return n;
    case 1: return -1 - n;
    case 2: return cborTake(r, n);
    case 3: return new TextDecoder("utf-8", { fatal: true }).decode(cborTake(r, n));
    case 4: return Array.from({ length: n }, () => cborItem(r));
    case 5: {
      const m = new Map();
      for (let k = 0; k < n; k++) m.set(cborItem(r), cborItem(r));
      return m;
    }
    default: return { tag: n, value: cborItem(r) };
  }
}

function cborArgument(r, info) {
  if (info < 24) return info;
  const size = { 24: 1, 25: 2, 26: 4, 27: 8 }[info];
  if (!size) throw new Error("CBOR: indefinite lengths are not used by the protocol");
  if (r.i + size > r.b.length) throw new Error("CBOR: truncated");
  const at = r.i;
  r.i += size;
  if (size === 1) return r.v.getUint8(at);
  if (size === 2) return r.v.getUint16(at);
  if (size === 4) return r.v.getUint32(at);
  const big = r.v.getBigUint64(at);
  if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error("CBOR: integer too large");
  return Number(big);
}

function cborSimple(r, info) {
  const simple = { 20: false, 21: true, 22: null, 23: undefined };
  if (info in simple) return simple[info];
  const size = { 25: 2, 26: 4, 27: 8 }[info];
  if (!size) throw new Error("CBOR: unsupported simple value " + info);
  const at = r.i;
  r.i += size;
  if (size === 4) return r.v.getFloat32(at);
  if (size === 8) return r.v.getFloat64(at);
  return halfFloat(r.v.getUint16(at));
}

function halfFloat(h) {
  const e = (h >> 10) & 31, f = h & 1023, s = h >> 15 ? -1 : 1;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

function cborTake(r, n) {
  if (r.i + n > r.b.length) throw new Error("CBOR: truncated");
  r.i += n;
  return r.b.slice(r.i - n, r.i);
}

function cborBytesHeader(n) {
  if (n < 24) return [0x40 | n];
  if (n < 256) return [0x58, n];
  if (n < 65536) return [0x59, n >> 8, n & 255];
  return [0x5a, n >>> 24, (n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
}

function equal(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export async function sha256(bytes) {
  return new Uint8Array(await subtle.digest("SHA-256", bytes));
}

async function hmacSha256(key, message) {
  const k = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, message));
}

// -- COSE (RFC 9052) ----------------------------------------------------------------

// COSE_Sign1 bytes -> [protected, unprotected, payload, signature].
function sign1Parts(raw) {
  const sign1 = cborDecode(raw);
  if (sign1 === null || sign1.tag !== TAG_SIGN1 || !Array.isArray(sign1.value) || sign1.value.length !== 4)
    throw new Error("not a COSE_Sign1 message");
  return sign1.value;
}

// A stored message (COSE_Sign1 bytes) -> {device, seq, time, kind, ciphertext, envelope}.
// The signature was checked by the gateway and can be rechecked with `gateway verify`.
export function openMessage(raw) {
  const env = cborDecode(sign1Parts(raw)[2]);
  if (!(env instanceof Map)) throw new Error("the envelope is not a CBOR map");
  return {
    device: hex.encode(env.get(ENV_DEVICE)), seq: env.get(ENV_SEQ), time: env.get(ENV_TIME),
    kind: env.get(ENV_KIND), ciphertext: env.get(ENV_CIPHERTEXT) || null, envelope: env,
  };
}

// Check a stored message's ES256 signature (RFC 9052 Sig_structure) with the device's 65-byte
// public key; throws if it does not verify.
export async function verifyMessage(raw, publicKey) {
  const [protectedBytes, , payload, signature] = sign1Parts(raw);
  const label = new TextEncoder().encode("Signature1");
  const signed = concat([[0x84, 0x60 | label.length], label, cborBytesHeader(protectedBytes.length),
    protectedBytes, [0x40], cborBytesHeader(payload.length), payload]);
  const key = await subtle.importKey("raw", publicKey, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
  if (!await subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, signature, signed))
    throw new Error("message " + openMessage(raw).seq + ": its signature does not verify with the device's key");
}

// A tagged COSE_Encrypt0 with AES-CCM-16-128-128 and empty external AAD -> plaintext.
export async function decryptEncrypt0(key, encrypt0) {
  const msg = cborDecode(encrypt0);
  if (msg === null || msg.tag !== TAG_ENCRYPT0 || !Array.isArray(msg.value) || msg.value.length !== 3)
    throw new Error("not a COSE_Encrypt0");
  const [protectedBytes, unprotected, ciphertext] = msg.value;
  if (cborDecode(protectedBytes).get(1) !== ALG_AES_CCM_16_128_128)
    throw new Error("unsupported content encryption algorithm");
  // Enc_structure = ["Encrypt0", protected, h'']
  const label = new TextEncoder().encode("Encrypt0");
  const aad = Uint8Array.from([0x83, 0x60 | label.length, ...label,
    ...cborBytesHeader(protectedBytes.length), ...protectedBytes, 0x40]);
  return aesCcmDecrypt(key, unprotected.get(5), ciphertext, aad, 16);
}

// -- AES-CCM (NIST SP 800-38C, RFC 3610) from WebCrypto's AES-CTR and AES-CBC --------------

export async function aesCcmDecrypt(keyBytes, nonce, data, aad, tagLength) {
  if (nonce.length < 7 || nonce.length > 13) throw new Error("AES-CCM: bad nonce length");
  if (data.length < tagLength) throw new Error("AES-CCM: ciphertext shorter than its tag");
  const L = 15 - nonce.length;
  const ct = data.subarray(0, data.length - tagLength);
  const tag = data.subarray(data.length - tagLength);
  const { ctrKey, cbcKey } = await ccmKeys(keyBytes);
  // One CTR pass from counter 0: the first block is S0 (masks the tag), the rest the payload.
  const input = new Uint8Array(16 + ct.length);
  input.set(ct, 16);
  const out = new Uint8Array(await subtle.encrypt(
    { name: "AES-CTR", counter: counterBlock(nonce, L), length: L * 8 }, ctrKey, input));
  const plain = out.slice(16);
  const mac = await cbcMac(cbcKey, ccmBlocks(nonce, L, aad, plain, tagLength));
  let diff = 0;
  for (let i = 0; i < tagLength; i++) diff |= mac[i] ^ out[i] ^ tag[i];
  if (diff) throw new Error("AES-CCM: authentication failed (wrong key or altered data)");
  return plain;
}

// The WebCrypto keys of a key's bytes, imported once per Uint8Array: a 7-day chart opens
// thousands of messages under one data key, and importing costs as much as decrypting.
const imported = new WeakMap();
function ccmKeys(keyBytes) {
  let keys = imported.get(keyBytes);
  if (!keys) {
    keys = Promise.all([subtle.importKey("raw", keyBytes, "AES-CTR", false, ["encrypt"]),
      subtle.importKey("raw", keyBytes, "AES-CBC", false, ["encrypt"])])
      .then(([ctrKey, cbcKey]) => ({ ctrKey, cbcKey }));
    imported.set(keyBytes, keys);
  }
  return keys;
}

function counterBlock(nonce, L) {
  const a = new Uint8Array(16);
  a[0] = L - 1;
  a.set(nonce, 1);
  return a;
}

// B0 || encoded AAD (zero-padded) || payload (zero-padded), per SP 800-38C A.2.
function ccmBlocks(nonce, L, aad, payload, tagLength) {
  const aadHead = aad.length === 0 ? [] : aad.length < 0xff00 ? [aad.length >> 8, aad.length & 255]
    : [0xff, 0xfe, aad.length >>> 24, (aad.length >> 16) & 255, (aad.length >> 8) & 255, aad.length & 255];
  const aadLen = pad16(aadHead.length + aad.length);
  const buf = new Uint8Array(16 + aadLen + pad16(payload.length));
  buf[0] = (aad.length ? 0x40 : 0) | (((tagLength - 2) / 2) << 3) | (L - 1);
  buf.set(nonce, 1);
  for (let i = 0, n = payload.length; i < L; i++, n = Math.floor(n / 256)) buf[15 - i] = n & 255;
  buf.set(aadHead, 16);
  buf.set(aad, 16 + aadHead.length);
  buf.set(payload, 16 + aadLen);
  return buf;
}

function pad16(n) { return Math.ceil(n / 16) * 16; }

async function cbcMac(cbcKey, blocks) {
  // AES-CBC with a zero IV; WebCrypto appends a PKCS#7 block, so the MAC is the one before it.
  const out = new Uint8Array(await subtle.encrypt({ name: "AES-CBC", iv: new Uint8Array(16) }, cbcKey, blocks));
  return out.subarray(blocks.length - 16, blocks.length);
}

// -- the owner's keyring (gateway/keyring.py) and readings (docs/protocol.md) -----------------

// The keyring file's text + passphrase -> {device hex: data key hex}.
export async function openKeyring(text, passphrase) {
  let d;
  try { d = JSON.parse(text); } catch (e) { throw new Error("this file is not a keyring (not JSON)"); }
  if (d.v !== 1 || d.kdf !== "scrypt") throw new Error("this file is not an EdgeKeep keyring");
  const pass = new TextEncoder().encode(passphrase);
  const key = await globalThis.scrypt.scrypt(pass, hex.decode(d.salt), d.n, d.r, d.p, 32);
  const aesKey = await subtle.importKey("raw", key, "AES-GCM", false, ["decrypt"]);
  let plain;
  try {
    plain = await subtle.decrypt({ name: "AES-GCM", iv: hex.decode(d.nonce),
      additionalData: new TextEncoder().encode("ek-keyring-v1") }, aesKey, hex.decode(d.ct));
  } catch (e) {
    throw new Error("wrong passphrase (or the keyring file is damaged)");
  }
  return JSON.parse(new TextDecoder().decode(plain));
}

export function unpackReadings(plaintext, t0) {
  const batch = cborDecode(plaintext);
  if (!Array.isArray(batch) || batch[0] !== READINGS_SCHEMA || !(batch[1] instanceof Uint8Array)
      || batch[1].length % READING_SIZE) throw new Error("readings: unknown schema or bad length");
  const packed = batch[1];
  const v = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
  const out = [];
  for (let off = 0; off < packed.length; off += READING_SIZE) {
    const r = { time: t0 + v.getUint16(off) / 10 };
    let at = off + 2;
    for (const [name, get, size, absent] of READING_FIELDS) {
      const x = v[get](at);
      r[name] = x === absent ? null : x;
      at += size;
    }
    out.push(r);
  }
  return out;
}

// A stored telemetry message + the unlocked keyring -> its readings.
export async function decryptTelemetry(raw, keys) {
  const m = openMessage(raw);
  const key = keys[m.device];
  if (!key) throw new Error("the keyring has no key for device " + m.device);
  if (!m.ciphertext) throw new Error("message " + m.seq + " carries no ciphertext");
  const readings = unpackReadings(await decryptEncrypt0(hex.decode(key), m.ciphertext), m.time);
  return readings.map((r) => Object.assign(r, { seq: m.seq }));
}

// -- camera objects (docs/protocol.md, "Objects") --------------------------------------------

// RFC 9162 Merkle root over 32-byte leaves, as gateway/merkle.py and agent/objects.py build it.
export async function merkleRoot(leaves) {
  let level = await Promise.all(leaves.map((h) => sha256(concat([[0], h]))));
  while (level.length > 1) {
    const next = [];
    for (let i = 0; i + 1 < level.length; i += 2) next.push(sha256(concat([[1], level[i], level[i + 1]])));
    if (level.length % 2) next.push(level[level.length - 1]);
    level = await Promise.all(next);
  }
  return level[0];
}

// A stored manifest message + the device's public key -> {device, seq, time, id, event, type,
// size, hashes, wrappedKey, commit, of}, its signature checked and its chunk hashes checked
// against its Merkle root. wrappedKey and commit are null for a legacy object (stored before
// content keys: its chunks are under the data key); of is the parent object's hex id or null.
export async function openManifest(raw, publicKey) {
  await verifyMessage(raw, publicKey);
  const m = openMessage(raw);
  const obj = m.envelope.get(ENV_OBJECT);
  if (m.kind !== KIND_MANIFEST || !(obj instanceof Map)) throw new Error("not a camera manifest");
  const count = obj.get(OBJ_COUNT), all = obj.get(OBJ_HASHES);
  if (!(all instanceof Uint8Array) || !(count >= 1) || all.length !== count * HASH_LEN)
    throw new Error("manifest: the chunk count and hash list disagree");
  const hashes = Array.from({ length: count }, (_, i) => all.subarray(i * HASH_LEN, (i + 1) * HASH_LEN));
  if (!equal(await merkleRoot(hashes), obj.get(OBJ_ROOT)))
    throw new Error("manifest: the Merkle root does not match its chunk hashes");
  const [wrappedKey, commit, of] = [OBJ_KEY, OBJ_COMMIT, OBJ_OF].map((k) => obj.has(k) ? obj.get(k) : null);
  if ((wrappedKey === null) !== (commit === null) || !(commit === null || (commit instanceof Uint8Array && commit.length === HASH_LEN)))
    throw new Error("manifest: a wrapped key needs a 32-byte commitment, and the other way round");
  if (!(of === null || (of instanceof Uint8Array && of.length === OID_LEN)))
    throw new Error("manifest: the parent object id is not 8 bytes");
  return { device: m.device, seq: m.seq, time: m.time, id: hex.encode(obj.get(OBJ_ID)),
    event: obj.get(OBJ_EVENT), type: obj.get(OBJ_TYPE), size: obj.get(OBJ_SIZE), hashes,
    wrappedKey, commit, of: of && hex.encode(of) };
}

// An opened manifest + the device's data key -> the object's 16-byte content key: it opens
// this object's chunks and nothing else of the device (what sharing one object reveals).
export async function unwrapContentKey(key, manifest) {
  if (!manifest.wrappedKey) throw new Error("object " + manifest.id + " has no content key: it predates them");
  const contentKey = await decryptEncrypt0(key, manifest.wrappedKey);
  if (contentKey.length !== CONTENT_KEY_LEN)
    throw new Error("object " + manifest.id + ": its wrapped content key is " + contentKey.length + " bytes, not 16");
  return contentKey;
}

// An opened manifest + its chunks (COSE_Encrypt0 bytes, in order) + the device's data key ->
// the object's plaintext. Each chunk must be the one the manifest lists at its index, and the
// plaintext the one the device committed to.
export async function decryptObject(key, manifest, chunks) {
  if (chunks.length !== manifest.hashes.length)
    throw new Error("object " + manifest.id + ": " + chunks.length + " chunks, the manifest lists " + manifest.hashes.length);
  const chunkKey = manifest.wrappedKey ? await unwrapContentKey(key, manifest) : key;
  const plain = concat(await Promise.all(chunks.map(async (c, i) => {
    if (!equal(await sha256(c), manifest.hashes[i]))
      throw new Error("chunk " + i + " of object " + manifest.id + " is not the one its signed manifest lists");
    return decryptEncrypt0(chunkKey, c);
  })));
  if (plain.length !== manifest.size)
    throw new Error("object " + manifest.id + " decrypted to " + plain.length + " bytes, its manifest says " + manifest.size);
  if (manifest.commit && !equal(await hmacSha256(await hmacSha256(chunkKey, OPENING_LABEL), plain), manifest.commit))
    throw new Error("object " + manifest.id + ": the plaintext is not the one its device committed to");
  return plain;
}

// JPEGs back to back (a video/x-motion-jpeg clip, or one snapshot) -> each JPEG's bytes.
// Walks the markers, so an EOI inside an embedded thumbnail does not cut a frame short.
export function jpegFrames(bytes) {
  const frames = [];
  let start = 0;
  while (start < bytes.length) {
    if (bytes[start] !== 0xff || bytes[start + 1] !== 0xd8) throw new Error("not a JPEG at byte " + start);
    let i = start + 2;
    for (;;) {
      while (bytes[i] === 0xff && bytes[i + 1] === 0xff) i++;  // fill bytes
      if (i + 2 > bytes.length || bytes[i] !== 0xff) throw new Error("JPEG ends without EOI");
      const marker = bytes[i + 1];
      if (marker === 0xd9) break;
      if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) { i += 2; continue; }
      i += 2 + ((bytes[i + 2] << 8) | bytes[i + 3]);
      if (marker === 0xda) {  // entropy-coded data runs to the next marker (FF 00 is a stuffed FF)
        while (i + 1 < bytes.length && !(bytes[i] === 0xff && bytes[i + 1] !== 0 && (bytes[i + 1] < 0xd0 || bytes[i + 1] > 0xd7))) i++;
      }
    }
    frames.push(bytes.subarray(start, i + 2));
    start = i + 2;
  }
  return frames;
}
