// Runs the browser's object crypto (gateway/web/static/ekcrypto.js) under Node on the object
// vectors (tests/vectors/objects.json) and a legacy object.
//
//   node tests/object_keys_check.mjs INPUTS.json
//
// INPUTS.json: {cases: [the vector cases], legacy: {manifest, public_key, data_key, chunks}}
// (hex strings). Prints one JSON line with what the JS made of each; the caller judges it.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const ek = await import(join(ROOT, "gateway/web/static/ekcrypto.js"));
const inp = JSON.parse(readFileSync(process.argv[2], "utf8"));
const h = ek.hex;

async function attempt(fn) {
  try { return { ok: await fn() }; } catch (e) { return { error: e.message }; }
}

async function open(c) {
  const m = await ek.openManifest(h.decode(c.manifest), h.decode(c.public_key));
  return [m, h.decode(c.data_key), c.chunks.map(h.decode)];
}

const out = { cases: [] };
for (const c of inp.cases) {
  const [m, key, chunks] = await open(c);
  out.cases.push({
    manifest: { id: m.id, type: m.type, size: m.size, of: m.of, wrapped_key: m.wrappedKey && h.encode(m.wrappedKey),
      commit: m.commit && h.encode(m.commit) },
    content_key: await attempt(async () => h.encode(await ek.unwrapContentKey(key, m))),
    plaintext: await attempt(async () => h.encode(await ek.decryptObject(key, m, chunks))),
    // the commitment is checked: the same chunks against a commitment one bit off
    other_commit: await attempt(async () => h.encode(await ek.decryptObject(key,
      { ...m, commit: m.commit.map((b, i) => i ? b : b ^ 1) }, chunks))),
    wrong_data_key: await attempt(async () => h.encode(await ek.decryptObject(new Uint8Array(16), m, chunks))),
  });
}
// The first object's content key on the second object's chunks: each fails to authenticate.
const contentKey = h.decode(out.cases[0].content_key.ok);
out.shared_key_on_other = await Promise.all(inp.cases[1].chunks.map((c) =>
  attempt(async () => h.encode(await ek.decryptEncrypt0(contentKey, h.decode(c))))));
const [lm, lkey, lchunks] = await open(inp.legacy);
out.legacy = { wrapped_key: lm.wrappedKey, commit: lm.commit,
  plaintext: await attempt(async () => h.encode(await ek.decryptObject(lkey, lm, lchunks))),
  content_key: await attempt(() => ek.unwrapContentKey(lkey, lm)) };
console.log(JSON.stringify(out));
