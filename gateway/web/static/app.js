// The admin pages' behaviour: live updates (SSE) and the health banner when they stop,
// device actions, the collapsing nav, copy buttons, and the owner's keyring,
// which is opened and used here only. Unlocked data keys are kept in this tab's
// sessionStorage (gone when the tab closes, never sent anywhere) so that pages share them;
// they are forgotten when the session ends: logout, expiry, or logout in another tab.
import {
  base64Decode, decryptObject, hex, jpegFrames, openKeyring, openManifest, sha256,
} from "./ekcrypto.js";
import { alertOptIn, showAlerts } from "./alerts.js";

const csrf = document.querySelector('meta[name="csrf"]').content;
const page = document.body.dataset.page;
const KEYS = "ek-keys";

async function api(method, path, body) {
  const r = await fetch(path, {
    method, headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || r.status + " " + r.statusText);
  return data;
}

// -- live updates ----------------------------------------------------------------------

const FORMATS = {
  rate: (x) => x.toFixed(1),
  clock: (t) => clock(t),
  size: (n) => {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    for (; n >= 1024 && i < units.length - 1; i++) n /= 1024;
    return i ? n.toFixed(1) + " " + units[i] : n + " B";
  },
};

// HH:MM:SS in this browser's time zone, from Unix seconds.
function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

// A long hash shortened, with a button that copies it whole (as macros.html renders it).
function hashNode(full) {
  if (!full) return document.createTextNode("-");
  const head = full.startsWith("0x") ? 10 : 8;
  const code = Object.assign(document.createElement("code"), {
    title: full, textContent: full.length > head + 5 ? full.slice(0, head) + "…" + full.slice(-4) : full });
  const button = Object.assign(document.createElement("button"), {
    type: "button", className: "copy", title: "Copy", textContent: "Copy" });
  button.dataset.copyText = full;
  button.setAttribute("aria-label", "Copy " + full);
  const span = Object.assign(document.createElement("span"), { className: "hash" });
  span.append(code, button);
  return span;
}

function ago(t) {
  if (!t) return "never";
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s >= 86400) return Math.floor(s / 86400) + " d ago";
  if (s >= 3600) return Math.floor(s / 3600) + " h ago";
  if (s >= 60) return Math.floor(s / 60) + " min ago";
  return Math.floor(s) + " s ago";
}

function showStatus(s) {
  showAlerts(s.alerts);
  for (const el of document.querySelectorAll("[data-stat]")) {
    const value = el.dataset.stat.split(".").reduce((o, k) => (o == null ? o : o[k]), s);
    if (value === undefined || value === null) continue;
    el.textContent = (FORMATS[el.dataset.format] || String)(value);
  }
  const rejects = document.getElementById("rejects");
  if (rejects) {
    const entries = Object.entries(s.rejects).sort();
    rejects.replaceChildren(...(entries.length ? entries : [["none", null]]).map(([k, n]) =>
      Object.assign(document.createElement("li"), { textContent: n === null ? k : k + ": " + n })));
  }
  const components = document.getElementById("components");
  if (components && s.components) {
    components.replaceChildren(...Object.entries(s.components).sort().map(([name, c]) =>
      Object.assign(document.createElement("li"), {
        className: c.state,
        textContent: name + ": " + c.state + (c.detail ? " · " + c.detail : "") +
          (c.restarts ? " · " + c.restarts + " restart(s)" : "") })));
  }
  const workers = document.getElementById("workers");
  if (workers && s.workers && s.workers.length) {
    workers.replaceChildren(...s.workers.map((w) =>
      Object.assign(document.createElement("li"), {
        className: w.alive ? "ok" : "dead",
        textContent: w.name + ": " + (w.alive ? w.rate.toFixed(1) + " msg/s · " + w.inflight +
          " in flight · lag " + w.lag.toFixed(1) + " s" : "not reporting") +
          (w.lease ? " · lease" : "") })));
  }
  const survival = document.getElementById("offbox-statement");
  if (survival && s.network && s.network.level) survival.className = "survival " + s.network.level;
  const anchor = document.getElementById("anchor");
  if (anchor && s.anchor) {
    const when = Object.assign(document.createElement("span"), { textContent: ago(s.anchor.mined_at) });
    when.dataset.time = s.anchor.mined_at;
    const head = document.createElement("p");
    head.append("epoch " + s.anchor.epoch + " in block " + s.anchor.block + " · ", when);
    const tx = document.createElement("p");
    tx.append("tx ", hashNode(s.anchor.tx_hash));
    anchor.replaceChildren(head, tx);
  }
}

// Relative times ("12 s ago") keep counting between updates.
function tickTimes() {
  for (const el of document.querySelectorAll("[data-time]")) {
    if (el.dataset.time) el.textContent = ago(+el.dataset.time);
  }
}

function onMessage(m) {
  const row = document.querySelector('tr[data-device="' + m.device + '"]');
  if (row) {
    row.querySelector(".last-seen").dataset.time = m.received_at;
    row.querySelector(".last-seen").textContent = ago(m.received_at);
    if (!row.classList.contains("revoked")) row.querySelector(".status").textContent = "online";
  }
  document.dispatchEvent(new CustomEvent("ek:message", { detail: m }));
}

// -- health: is what the page shows current? ----------------------------------------------
//
// A status event arrives every second while the gateway is heard. When the stream breaks
// (the gateway stopped, the network went, or nothing came for STALE_AFTER) the page says so
// in a banner with the time it was lost, greys what is no longer current (body.stale) and
// asks GET /api/status every few seconds: no answer means the gateway is unreachable; 401
// means the session is gone (it expired, or the gateway restarted, which ends every
// session) and the page goes to the login page saying why; an answer means a new stream.

const STALE_AFTER = 8000;    // ms without a status event before the values count as stale
const PROBE_EVERY = 2000;
const PROBE_TIMEOUT = 5000;  // a gateway that takes connections but does not answer
const health = { es: null, lastEvent: 0, asOf: null, lostAt: null, unreachable: false, timer: null,
  probes: 0, leaving: false };
addEventListener("pagehide", () => { health.leaving = true; });
addEventListener("pageshow", (e) => { if (e.persisted) location.reload(); });  // from the back/forward cache: old

function showHealth(text) {
  const banner = document.getElementById("health-banner");
  const live = document.getElementById("live");
  const ok = text === null;
  document.body.classList.toggle("stale", !ok);
  live.classList.toggle("on", ok && health.es !== null);
  live.classList.toggle("lost", !ok);
  live.title = ok ? "live updates: on" : "live updates: lost";
  if (!banner) return;
  banner.hidden = ok;
  if (ok) return;
  banner.textContent = text + (health.asOf ? " What this page shows is as of " + clock(health.asOf) + "." : "");
  banner.dataset.since = health.lostAt;
}

function lost(why, at) {
  if (health.es) { health.es.close(); health.es = null; }
  if (health.leaving) return;
  if (health.lostAt === null) health.lostAt = at || Date.now() / 1000;
  const since = " since " + clock(health.lostAt) + ".";
  showHealth(health.unreachable ? "The gateway is unreachable" + since + " Retrying…"
    : why + since + " Reconnecting…");
  if (health.timer === null) health.timer = setTimeout(probe, health.probes++ ? PROBE_EVERY : 0);
}

async function probe() {
  health.timer = null;
  if (health.leaving) return;
  let r;
  try {
    r = await fetch("/api/status", { headers: { Accept: "application/json" }, cache: "no-store",
      signal: AbortSignal.timeout(PROBE_TIMEOUT) });
  } catch {
    health.unreachable = true;
    return lost("The gateway is unreachable");
  }
  if (r.status === 401) return sessionOver(health.unreachable ? "restarted" : "gone");
  health.unreachable = false;
  if (!r.ok) {
    health.timer = setTimeout(probe, PROBE_EVERY);
    return showHealth("The gateway answers " + r.status + " " + r.statusText + " since " + clock(health.lostAt) + ".");
  }
  const s = await r.json().catch(() => null);
  if (s) showStatus(s);
  listen();      // the first status event on the new stream clears the banner
}

function sessionOver(reason) {
  health.leaving = true;
  if (health.es) { health.es.close(); health.es = null; }
  forgetKeys();
  location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search) +
    "&ended=" + encodeURIComponent(reason) + "&at=" + Math.floor(Date.now() / 1000));
}

function listen() {
  const es = health.es = new EventSource("/api/events");
  health.lastEvent = Date.now();
  es.addEventListener("status", (e) => {
    const s = JSON.parse(e.data);
    health.lastEvent = Date.now();
    health.asOf = s.time;
    health.lostAt = null;
    health.unreachable = false;
    health.probes = 0;
    showStatus(s);
    showHealth(null);
  });
  es.addEventListener("message", (e) => onMessage(JSON.parse(e.data)));
  // a camera object's upload moved (the Camera page's events grid, camera.js)
  es.addEventListener("object", (e) => document.dispatchEvent(new CustomEvent("ek:object", { detail: JSON.parse(e.data) })));
  es.addEventListener("error", () => { if (health.es === es) lost("The live connection to the gateway was lost"); });
  // The server ends the stream with this when the session ends (here, in another tab, or expired).
  es.addEventListener("session-ended", (e) => {
    const reason = (JSON.parse(e.data || "{}") || {}).reason;
    sessionOver(reason === "expired" || reason === "logged out" ? reason : "gone");
  });
}

function watch() {
  listen();
  setInterval(() => {
    tickTimes();
    if (health.es && Date.now() - health.lastEvent > STALE_AFTER) lost("No news from the gateway", health.lastEvent / 1000);
  }, 1000);
}

// -- devices -------------------------------------------------------------------------------

// Rename and revoke are devices.js's dialogs; registering stays here.
function deviceActions() {
  const form = document.getElementById("register");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form), error = form.querySelector(".error");
    try {
      await api("POST", "/api/devices", Object.fromEntries(f));
      location.reload();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  });
}

// -- keyring -------------------------------------------------------------------------------

function unlockedKeys() {
  return JSON.parse(sessionStorage.getItem(KEYS) || "null");
}

function forgetKeys() {
  sessionStorage.removeItem(KEYS);
}

// A keyring also keeps gateway identities ("gateway:<name>"), which the page never uses.
function deviceKeyCount(keys) {
  return Object.keys(keys).filter((k) => !k.startsWith("gateway:")).length;
}

function keyringForm() {
  const form = document.getElementById("keyring");
  const state = form.querySelector(".state");
  const say = (text, isError) => { state.textContent = text; state.classList.toggle("error", !!isError); };
  if (unlockedKeys()) say("unlocked: " + deviceKeyCount(unlockedKeys()) + " device key(s)");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const file = form.elements.file.files[0];
    if (!file) return say("choose your keyring file first", true);
    say("unlocking… (scrypt takes a moment)");
    try {
      const keys = await openKeyring(await file.text(), form.elements.passphrase.value);
      sessionStorage.setItem(KEYS, JSON.stringify(keys));
      form.elements.passphrase.value = "";
      say("unlocked: " + deviceKeyCount(keys) + " device key(s)");
      document.dispatchEvent(new CustomEvent("ek:unlocked"));
    } catch (err) {
      say(err.message, true);
    }
  });
  form.querySelector('[data-action="lock"]').addEventListener("click", () => {
    forgetKeys();
    say("locked");
    location.reload();
  });
}

// -- camera: snapshots and clips, checked and decrypted here ---------------------------------

const MEDIA = { "image/jpeg": ".jpg", "video/x-motion-jpeg": ".mjpeg" };

async function fetchBytes(path) {
  const r = await fetch(path);
  if (!r.ok) throw new Error((await r.json().catch(() => ({}))).error || r.status + " " + r.statusText);
  return new Uint8Array(await r.arrayBuffer());
}

function cameras() {
  const sections = document.querySelectorAll("section.camera");
  function ready() {
    const keys = unlockedKeys();
    for (const section of keys ? sections : []) {
      if (!keys[section.dataset.device]) {
        showIn(section, null, note("Your keyring has no key for this camera."));
        continue;
      }
      section.querySelectorAll("[data-action=show]").forEach((b) => { b.disabled = false; });
      const newest = section.querySelector("tr[data-complete]");
      if (newest) showObject(section, newest.dataset.oid);
    }
  }
  for (const section of sections) {
    section.addEventListener("click", (e) => {
      const row = e.target.dataset.action === "show" && e.target.closest("tr[data-oid]");
      if (row) showObject(section, row.dataset.oid);
    });
  }
  document.addEventListener("ek:unlocked", ready);
  ready();
  // the events grid: live, thumbnails, filters (camera.js)
  import("./camera.js").then((m) => m.eventGrid({ api, unlockedKeys, openObject, showObject, size: FORMATS.size }));
}

// Fetch an object's signed manifest (checked against the camera's public key) and chunks
// (checked against it), and decrypt them: {manifest, plain}.
async function openObject(device, publicKey, oid) {
  const base = "/api/devices/" + device + "/objects/" + oid;
  const info = await api("GET", base);
  const manifest = await openManifest(base64Decode(info.manifest), hex.decode(publicKey));
  if (manifest.id !== oid || manifest.device !== device) throw new Error("the gateway sent another object's manifest");
  const chunks = await Promise.all(manifest.hashes.map((_, i) => fetchBytes(base + "/chunks/" + i)));
  return { manifest, plain: await decryptObject(hex.decode(unlockedKeys()[device]), manifest, chunks) };
}

// Check and decrypt an object, show its frames in the section's viewer (or play its clip).
async function showObject(section, oid) {
  const device = section.dataset.device, viewer = section.querySelector(".viewer");
  if (viewer.dataset.showing === oid && !viewer.querySelector(".error")) return;  // shown or on its way
  viewer.dataset.showing = oid;
  showIn(section, oid, note("decrypting " + oid + "…"));
  try {
    const { manifest, plain } = await openObject(device, section.dataset.publicKey, oid);
    const clips = window.ekClips && window.ekClips.plays(manifest.type) ? window.ekClips : null;  // camera.js
    if (!MEDIA[manifest.type] && !clips) throw new Error("this page cannot show " + manifest.type);
    if (clips) return showIn(section, oid, await clips.figure(manifest, plain, oid, FORMATS.size));
    const frames = jpegFrames(plain);
    const fig = Object.assign(document.createElement("figure"), { className: "object" });
    fig.dataset.oid = oid;
    fig.dataset.sha256 = hex.encode(await sha256(plain));
    fig.append(...frames.map((f) => Object.assign(document.createElement("img"), {
      src: URL.createObjectURL(new Blob([f], { type: "image/jpeg" })), alt: manifest.event + " " + oid })));
    const save = Object.assign(document.createElement("a"), { textContent: "save",
      href: URL.createObjectURL(new Blob([plain], { type: manifest.type })), download: oid + MEDIA[manifest.type] });
    const caption = document.createElement("figcaption");
    caption.append(manifest.event + " · " + new Date(manifest.time * 1000).toLocaleString() + " · "
      + (frames.length > 1 ? frames.length + " frames · " : "") + FORMATS.size(plain.length)
      + " · decrypted in this browser · SHA-256 " + fig.dataset.sha256 + " · ", save);
    fig.append(caption);
    showIn(section, oid, fig);
  } catch (err) {
    showIn(section, oid, note(oid + ": " + err.message, true));
  }
}

function note(text, isError) {
  return Object.assign(document.createElement("p"), { className: "state " + (isError ? "error" : "muted"), textContent: text });
}

// Replace the viewer's content unless another object was asked for since; frees old blob URLs.
function showIn(section, oid, node) {
  const viewer = section.querySelector(".viewer");
  if (oid !== null && viewer.dataset.showing !== oid) return;
  for (const el of viewer.querySelectorAll("img, a, video")) URL.revokeObjectURL(el.src || el.href);
  viewer.replaceChildren(node);
}

// -- copy buttons: a hash (data-copy-text) or an element's text (data-copy, Peers) ----------

async function copy(button) {
  const target = button.dataset.copy ? document.getElementById(button.dataset.copy) : null;
  const text = target ? target.textContent.trim() : button.dataset.copyText;
  try {
    await navigator.clipboard.writeText(text);  // https or localhost only
    button.textContent = "Copied";
  } catch {
    // plain http: show it whole and selected, to copy by hand
    const shown = target || button.previousElementSibling;
    if (!target) { shown.textContent = text; shown.classList.add("whole"); }
    getSelection().selectAllChildren(shown);
    button.textContent = "Selected";
  }
}

document.addEventListener("click", (e) => {
  const button = e.target.closest && e.target.closest("button[data-copy], button[data-copy-text]");
  if (button) copy(button);
});

// -- the nav collapses behind a Menu button on a narrow screen (app.css) --------------------

function navMenu() {
  const nav = document.getElementById("nav");
  const button = nav.querySelector(".menu");
  nav.classList.add("js");
  button.addEventListener("click", () => {
    const open = nav.classList.toggle("open");
    button.setAttribute("aria-expanded", String(open));
  });
}

// -- login: a form left open (its anonymous session gone, e.g. the gateway restarted) ------
// fetches a fresh CSRF token just before it is sent, so that it still logs in.

function loginForm() {
  const form = document.getElementById("login");
  let fresh = false;
  form.addEventListener("submit", async (e) => {
    if (fresh) return;
    e.preventDefault();
    try {
      const r = await fetch("/login", { cache: "no-store" });
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const token = doc.querySelector('meta[name="csrf"]');
      if (token && token.content) form.elements.csrf.value = token.content;
    } catch { /* unreachable: the submit below says so */ }
    fresh = true;
    form.submit();
  });
}

// -- start -----------------------------------------------------------------------------------

// Logging out forgets the keys before the request leaves; a login page means no session,
// so it forgets them too (whatever way the last one ended).
const logout = document.querySelector('form[action="/logout"]');
if (logout) logout.addEventListener("submit", forgetKeys);
if (page === "login") forgetKeys();
if (document.getElementById("login")) loginForm();
if (document.getElementById("nav")) navMenu();
if (logout) watch();        // signed in: live updates, and the banner when they stop
if (document.getElementById("keyring")) keyringForm();
if (page === "devices") deviceActions();
if (page === "alerts") alertOptIn(api);
if (page === "device") import("./telemetry.js").then((m) => m.telemetry(unlockedKeys));  // charts, map, CSV
if (page === "camera") cameras();
