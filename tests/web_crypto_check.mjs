// Runs the admin page's browser crypto (gateway/web/static/ekcrypto.js) under Node's WebCrypto.
//
//   node tests/web_crypto_check.mjs INPUTS.json
//
// INPUTS.json: {ccm: [{key, nonce, aad, sealed, tag_len}], message: {raw, keys},
//   encrypt0: {key, ciphertext}, scrypt: {password, salt, n, r, p}, keyring: {text, passphrase}}
// (hex strings). Prints one JSON line with what the JS made of each; the caller judges it.
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
console.log(JSON.stringify(out));
