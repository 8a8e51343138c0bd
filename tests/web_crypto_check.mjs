// Runs the admin page's browser crypto (gateway/web/static/ekcrypto.js) under Node's WebCrypto.
//
//   node tests/web_crypto_check.mjs INPUTS.json
//
// INPUTS.json: {ccm: [{key, nonce, aad, sealed, tag_len}], message: {raw, keys},
//   encrypt0: {key, ciphertext}, scrypt: {password, salt, n, r, p}, keyring: {text, passphrase},
//   object: {manifest, public_key, key, chunks: [..]}} (hex strings). Prints one JSON line with what the JS made of each; the caller judges it.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const STATIC = join(ROOT, "gateway/web/static");
globalThis.scrypt = createRequire(import.meta.url)(join(STATIC, "vendor/scrypt-js-3.0.1/scrypt.js"));
const ek = await import(join(STATIC, "ekcrypto.js"));
const inp = JSON.parse(readFileSync(process.argv[2], "utf8"));
const h = ek.hex;

async function attempt(fn) {
  try { return { ok: await fn() }; } catch (e) { return { error: e.message }; }
}

function flipLast(b) { const c = b.slice(); c[c.length - 1] ^= 1; return c; }

const out = { ccm: [], ccm_tampered: [] };
for (const v of inp.ccm) {
  const args = [h.decode(v.key), h.decode(v.nonce), h.decode(v.sealed), h.decode(v.aad), v.tag_len];
  out.ccm.push(await attempt(async () => h.encode(await ek.aesCcmDecrypt(...args))));
  args[2] = flipLast(args[2]);
  out.ccm_tampered.push(await attempt(async () => h.encode(await ek.aesCcmDecrypt(...args))));
}
out.encrypt0 = await attempt(async () =>
  h.encode(await ek.decryptEncrypt0(h.decode(inp.encrypt0.key), h.decode(inp.encrypt0.ciphertext))));
out.message = await attempt(() => ek.decryptTelemetry(h.decode(inp.message.raw), inp.message.keys));
out.message_wrong_key = await attempt(() => ek.decryptTelemetry(h.decode(inp.message.raw),
  Object.fromEntries(Object.keys(inp.message.keys).map((k) => [k, "00".repeat(16)]))));
const s = inp.scrypt;
out.scrypt = h.encode(await globalThis.scrypt.scrypt(new TextEncoder().encode(s.password),
  h.decode(s.salt), s.n, s.r, s.p, 32));
out.keyring = await attempt(() => ek.openKeyring(inp.keyring.text, inp.keyring.passphrase));
out.keyring_wrong = await attempt(() => ek.openKeyring(inp.keyring.text, inp.keyring.passphrase + "x"));

// A camera object: signed manifest + chunks -> plaintext, split into JPEG frames.
async function openObject(manifestRaw, publicKey, key, chunks) {
  const m = await ek.openManifest(manifestRaw, publicKey);
  const plain = await ek.decryptObject(key, m, chunks);
  const digest = async (b) => h.encode(await ek.sha256(b));
  return { id: m.id, type: m.type, event: m.event, chunks: m.hashes.length, sha256: await digest(plain),
    frames: await Promise.all(ek.jpegFrames(plain).map(digest)) };
}
const o = inp.object;
const [oRaw, oPub, oKey, oChunks] = [h.decode(o.manifest), h.decode(o.public_key), h.decode(o.key), o.chunks.map(h.decode)];
const other = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign"]);
out.object = await attempt(() => openObject(oRaw, oPub, oKey, oChunks));
out.object_forged_manifest = await attempt(() => openObject(flipLast(oRaw), oPub, oKey, oChunks));
out.object_other_device = await attempt(async () => openObject(oRaw,
  new Uint8Array(await crypto.subtle.exportKey("raw", other.publicKey)), oKey, oChunks));
out.object_swapped_chunks = await attempt(() => openObject(oRaw, oPub, oKey, [oChunks[1], oChunks[0], ...oChunks.slice(2)]));
out.object_wrong_key = await attempt(() => openObject(oRaw, oPub, new Uint8Array(16), oChunks));
console.log(JSON.stringify(out));
