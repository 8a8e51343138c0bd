// The Camera page's clip player. app.js fetches, checks and decrypts an object (showObject);
// when its type is a clip this module makes what shows it:
//   video/mp4        (H.264, the Pi camera)   a <video> from a blob: URL (CSP media-src blob:),
//                                             its own controls to play and scrub;
//   video/x-msvideo  (MJPEG in AVI, ESP32)    browsers do not play AVI: its movi chunks are
//                                             cut out here and drawn on a canvas one JPEG at a
//                                             time at the AVI's frame rate, with a play/pause
//                                             button and a scrub slider.
// Either way a "save" link writes the decrypted file as it is, with its extension.
// app.js finds this module as window.ekClips (camera.html loads it after app.js).
//
// It also makes the page's events grid (eventGrid, started by app.js): the cameras' events
// newest first, each tile its thumbnail decrypted here (else its poster, else a snapshot's
// first frame), new ones added live from the `object` SSE event, narrowed by camera and by
// day (in this browser's time zone); a tile opens its clip or snapshot in the player above.
import { hex, jpegFrames, sha256 } from "./ekcrypto.js";

export const CLIPS = { "video/mp4": ".mp4", "video/x-msvideo": ".avi" };

function fourcc(b, i) {
  return String.fromCharCode(b[i], b[i + 1], b[i + 2], b[i + 3]);
}

// {fps, width, height, frames: [Uint8Array JPEG]} from an AVI (RIFF 'AVI '): the frame rate
// from the video stream header (rate / scale; else avih's µs per frame), the frames from the
// 'movi' list's '##dc' / '##db' chunks in file order.
export function aviFrames(bytes) {
  if (bytes.length < 12 || fourcc(bytes, 0) !== "RIFF" || fourcc(bytes, 8) !== "AVI ") {
    throw new Error("not an AVI file");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = { fps: 0, width: 0, height: 0, frames: [] };
  let usec = 0;
  function walk(start, end, inMovi) {
    let i = start;
    while (i + 8 <= end) {
      const id = fourcc(bytes, i), size = view.getUint32(i + 4, true), body = i + 8;
      if (body + size > bytes.length) throw new Error("AVI chunk " + id + " runs past the end");
      if (id === "LIST" || id === "RIFF") {
        walk(body + 4, body + size, inMovi || fourcc(bytes, body) === "movi");
      } else if (id === "avih" && size >= 40) {
        usec = view.getUint32(body, true);
        out.width = view.getUint32(body + 32, true);
        out.height = view.getUint32(body + 36, true);
      } else if (id === "strh" && size >= 28 && fourcc(bytes, body) === "vids") {
        const scale = view.getUint32(body + 20, true), rate = view.getUint32(body + 24, true);
        if (scale && rate) out.fps = rate / scale;
      } else if (inMovi && /^..d[cb]$/.test(id) && size > 0) {
        out.frames.push(bytes.subarray(body, body + size));
      }
      i = body + size + (size & 1);  // chunks are word aligned
    }
  }
  walk(12, bytes.length, false);
  if (!out.fps && usec) out.fps = 1e6 / usec;
  if (!(out.fps > 0 && out.fps <= 120)) out.fps = 5;
  if (!out.frames.length) throw new Error("the AVI holds no frames");
  return out;
}

function seconds(t) {
  return (Math.floor(t / 60) + ":" + String(Math.floor(t % 60)).padStart(2, "0"));
}

function el(tag, props) {
  return Object.assign(document.createElement(tag), props || {});
}

// A <video> for an MP4: native controls (play, scrub, full screen), muted, plays inline.
function videoPlayer(plain, type, alt) {
  const video = el("video", { controls: true, muted: true, playsInline: true, preload: "auto",
    className: "clip", src: URL.createObjectURL(new Blob([plain], { type })) });
  video.setAttribute("aria-label", alt);
  return { node: video, describe: () => "" };
}

// Frame playback of an MJPEG AVI on a canvas. The JPEG of the frame shown is decoded when
// it is needed (createImageBitmap), so a long clip is not held decoded.
function aviPlayer(plain, alt) {
  const avi = aviFrames(plain);
  const n = avi.frames.length, step = 1000 / avi.fps;
  const wrap = el("div", { className: "clip frames" });
  const canvas = el("canvas", { width: avi.width || 320, height: avi.height || 240 });
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", alt);
  const play = el("button", { type: "button", textContent: "Play" });
  const slider = el("input", { type: "range", min: 0, max: n - 1, step: 1, value: 0 });
  slider.setAttribute("aria-label", "frame");
  const time = el("span", { className: "muted time" });
  const bar = el("div", { className: "clip-controls" });
  bar.append(play, slider, time);
  wrap.append(canvas, bar);
  wrap.dataset.frames = n;
  wrap.dataset.fps = avi.fps;
  let index = -1, timer = null, drawing = Promise.resolve();

  function show(i) {
    index = Math.max(0, Math.min(n - 1, i));
    slider.value = index;
    wrap.dataset.frame = index;
    time.textContent = seconds(index / avi.fps) + " / " + seconds(n / avi.fps) + " · frame " + (index + 1) + "/" + n;
    const want = index;
    drawing = drawing.then(async () => {
      if (want !== index) return;   // scrubbed on since: draw only the latest
      const bitmap = await createImageBitmap(new Blob([avi.frames[want]], { type: "image/jpeg" }));
      if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
        canvas.width = bitmap.width;
        canvas.height = bitmap.height;
      }
      canvas.getContext("2d").drawImage(bitmap, 0, 0);
      bitmap.close();
      wrap.dataset.drawn = want;
    }).catch((err) => { wrap.dataset.error = err.message; });
  }
  function stop() {
    clearInterval(timer);
    timer = null;
    play.textContent = "Play";
    wrap.dataset.playing = "";
  }
  function start() {
    if (index >= n - 1) show(0);
    play.textContent = "Pause";
    wrap.dataset.playing = "1";
    timer = setInterval(() => {
      if (!wrap.isConnected) return stop();      // another object was shown instead
      if (index >= n - 1) return stop();
      show(index + 1);
    }, step);
  }
  play.addEventListener("click", () => (timer ? stop() : start()));
  slider.addEventListener("input", () => { stop(); show(+slider.value); });
  show(0);
  return { node: wrap, describe: () => n + " frames at " + (+avi.fps.toFixed(2)) + " fps · " };
}

// The figure for a decrypted clip: player, then a caption with what it is, its SHA-256
// (that of `gateway export --object`) and a save link.
export async function clipFigure(manifest, plain, oid, size) {
  const alt = manifest.event + " " + oid;
  const player = manifest.type === "video/mp4" ? videoPlayer(plain, manifest.type, alt) : aviPlayer(plain, alt);
  const fig = el("figure", { className: "object clip" });
  fig.dataset.oid = oid;
  fig.dataset.type = manifest.type;
  fig.dataset.sha256 = hex.encode(await sha256(plain));
  const save = el("a", { textContent: "save", className: "save",
    href: URL.createObjectURL(new Blob([plain], { type: manifest.type })), download: oid + CLIPS[manifest.type] });
  const caption = el("figcaption");
  caption.append(manifest.event + " · " + new Date(manifest.time * 1000).toLocaleString() + " · clip · "
    + player.describe() + size(plain.length) + " · decrypted in this browser · SHA-256 ",
  el("code", { className: "sha", textContent: fig.dataset.sha256 }), " · ", save);
  fig.append(player.node, caption);
  return fig;
}

window.ekClips = { plays: (type) => Object.hasOwn(CLIPS, type), figure: clipFigure };

// -- the events grid -------------------------------------------------------------------------

const LIMIT = 200;
const SHOWN = { "video/mp4": "clip", "video/x-msvideo": "clip", "video/x-motion-jpeg": "burst", "image/jpeg": "snapshot" };

function hhmmss(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

// [since, until) of a YYYY-MM-DD day in this browser's time zone, in Unix seconds.
export function dayBounds(day) {
  const [y, m, d] = day.split("-").map(Number);
  return [new Date(y, m - 1, d).getTime() / 1000, new Date(y, m - 1, d + 1).getTime() / 1000];
}

// ctx: app.js's api, unlockedKeys, openObject(device, publicKey, oid), showObject(host, oid), size.
export function eventGrid(ctx) {
  const root = document.getElementById("events");
  if (!root) return;
  const grid = root.querySelector(".event-grid"), state = root.querySelector(".events-state");
  const form = root.querySelector("form.filters"), player = root.querySelector(".player");
  const events = new Map();      // "device/oid" -> event (as GET /api/camera/events has it)
  const images = new Map();      // object id -> blob: URL of its decrypted tile image
  let decrypting = Promise.resolve(), loaded = 0;

  const publicKey = (device) => {
    const s = document.querySelector('section.camera[data-device="' + device + '"]');
    return s && s.dataset.publicKey;
  };
  function filters() {
    const camera = form.elements.camera.value, day = form.elements.day.value;
    return { camera, day, bounds: day ? dayBounds(day) : null };
  }
  function passes(e) {
    const f = filters();
    return (!f.camera || e.device === f.camera) && (!f.bounds || (e.time >= f.bounds[0] && e.time < f.bounds[1]));
  }

  async function load() {
    const f = filters(), q = new URLSearchParams({ limit: LIMIT });
    if (f.camera) q.set("device", f.camera);
    if (f.bounds) { q.set("since", f.bounds[0]); q.set("until", f.bounds[1]); }
    const mine = ++loaded;
    let list;
    try {
      list = await ctx.api("GET", "/api/camera/events?" + q);
    } catch (err) {
      state.textContent = "events: " + err.message;
      return;
    }
    if (mine !== loaded) return;   // the filters changed since: a newer load is on its way
    events.clear();
    for (const e of list) events.set(e.device + "/" + e.oid, e);
    render();
  }

  // An object's upload moved (SSE): its event, or the event it is the poster or thumbnail of.
  function onObject(o) {
    const key = o.device + "/" + (o.parent || o.oid);
    let e = events.get(key);
    if (!e) {
      e = { device: o.device, oid: o.parent || o.oid, time: o.time, event: null, type: null,
        complete: false, has_clip: false, has_snapshot: false, pending: true, poster: null, thumbnail: null };
    }
    if (!o.parent) {
      e = Object.assign(e, o, { pending: false, poster: e.poster, thumbnail: e.thumbnail });
    } else if (o.event === "poster" || o.event === "thumbnail") {
      e[o.event] = o;
    }
    if (!passes(e)) return;
    events.set(key, e);
    render();
  }

  function render() {
    const list = [...events.values()].filter(passes).sort((a, b) => b.time - a.time).slice(0, LIMIT);
    const keys = ctx.unlockedKeys();
    state.textContent = list.length ? list.length + " event(s), newest first" + (keys ? "" : " · unlock your keyring to see the thumbnails")
      : "no events" + (filters().camera || filters().day ? " for these filters" : " yet");
    const old = new Map([...grid.children].map((li) => [li.dataset.key, li]));
    grid.replaceChildren(...list.map((e) => tile(e, old.get(e.device + "/" + e.oid))));
  }

  function tile(e, li) {
    li = li || Object.assign(document.createElement("li"), { className: "event" });
    li.dataset.key = e.device + "/" + e.oid;
    li.dataset.device = e.device;
    li.dataset.oid = e.oid;
    li.dataset.captured = e.time;
    li.toggleAttribute("data-complete", !!e.complete);
    li.toggleAttribute("data-pending", !!e.pending);
    const camera = document.querySelector('section.camera[data-device="' + e.device + '"] h2');
    const what = e.pending ? "recording…" : (SHOWN[e.type] || e.type) + (e.complete ? "" : " · uploading");
    let button = li.querySelector("button");
    if (!button) {
      button = Object.assign(document.createElement("button"), { type: "button", className: "tile" });
      button.append(Object.assign(document.createElement("span"), { className: "thumb" }),
        Object.assign(document.createElement("span"), { className: "meta" }));
      li.append(button);
    }
    button.querySelector(".meta").textContent = hhmmss(e.time) + " · "
      + (camera ? camera.firstChild.textContent.trim() : e.device) + " · " + what;
    button.setAttribute("aria-label", (e.event || "event") + " " + e.oid + ", " + what);
    const source = imageSource(e);
    if (source && li.dataset.source !== source.oid) {
      li.dataset.source = source.oid;
      li.dataset.thumb = "";
      showImage(li, e, source);
    }
    return li;
  }

  // The object whose image the tile shows: the thumbnail, the poster, or a whole snapshot.
  function imageSource(e) {
    for (const part of [e.thumbnail, e.poster]) if (part && part.complete) return part;
    if (e.complete && (e.type === "image/jpeg" || e.type === "video/x-motion-jpeg")) return e;
    return null;
  }

  function showImage(li, e, source) {
    const keys = ctx.unlockedKeys();
    if (!keys || !keys[e.device]) return;
    decrypting = decrypting.then(async () => {
      if (li.dataset.source !== source.oid) return;   // a better image came since
      try {
        let url = images.get(source.oid);
        if (!url) {
          const { manifest, plain } = await ctx.openObject(e.device, publicKey(e.device), source.oid);
          if (source !== e && manifest.of !== e.oid) throw new Error("its signed manifest names another event");
          url = URL.createObjectURL(new Blob([jpegFrames(plain)[0]], { type: "image/jpeg" }));
          images.set(source.oid, url);
        }
        const img = Object.assign(document.createElement("img"), { src: url, alt: "" });
        await img.decode();
        if (li.dataset.source !== source.oid) return;   // a better image came meanwhile
        li.querySelector(".thumb").replaceChildren(img);
        li.dataset.thumb = "decrypted";
      } catch (err) {
        if (li.dataset.source !== source.oid) return;
        li.dataset.thumb = "error";
        li.querySelector(".thumb").replaceChildren(Object.assign(document.createElement("span"), {
          className: "error", textContent: err.message }));
      }
    });
  }

  grid.addEventListener("click", (ev) => {
    const li = ev.target.closest("li.event");
    if (!li) return;
    const e = events.get(li.dataset.key);
    for (const other of grid.querySelectorAll("li.selected")) other.classList.remove("selected");
    li.classList.add("selected");
    player.hidden = false;
    player.dataset.device = e.device;
    player.dataset.publicKey = publicKey(e.device);
    offerShare(player, e);
    const viewer = player.querySelector(".viewer");
    if (!ctx.unlockedKeys()) {
      viewer.dataset.showing = "";
      viewer.replaceChildren(Object.assign(document.createElement("p"), { className: "state muted",
        textContent: "Unlock your keyring first: the clip is decrypted here, in your browser." }));
    } else if (!e.complete) {
      viewer.dataset.showing = "";
      viewer.replaceChildren(Object.assign(document.createElement("p"), { className: "state muted",
        textContent: (e.pending ? "still recording or on its way" : "still uploading") + ": its tile updates when it is here." }));
    } else {
      ctx.showObject(player, e.oid);
    }
    player.scrollIntoView({ block: "nearest" });
  });
  form.addEventListener("change", load);
  form.addEventListener("submit", (ev) => ev.preventDefault());
  document.addEventListener("ek:object", (ev) => onObject(ev.detail));
  document.addEventListener("ek:unlocked", () => {
    for (const li of grid.children) li.dataset.source = "";
    render();
  });
  load();
}

// -- sharing as evidence (docs/evidence.md) --------------------------------------------------
// An evidence file is signed with the owner's CA key, which lives in the owner's keyring and
// never reaches the gateway, and no C2PA signer runs here. So "Share as evidence" opens a
// dialog (camera.html) that says what the file proves and gives the `edgekeep share` command
// to run on the owner's computer, with the device and object filled in.
export const EVIDENCE = { "image/jpeg": ".jpg", "video/mp4": ".mp4" };
const HEX = /^[0-9a-f]+$/;

function shellWord(s) {
  return /^[\w./~-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'";
}

// The command that writes this object's evidence file, run against a copy of the gateway's
// data directory at the gateway's path (the data directory names its storage roots by it).
export function shareCommand(dataDir, device, oid, type, keyring) {
  if (!HEX.test(device) || !HEX.test(oid)) throw new Error("not a device and object id");
  const id = device + "-" + oid;
  return "edgekeep share --data-dir " + shellWord(dataDir) + " --object " + id + " --key "
    + shellWord(keyring || "owner-keyring.json") + " --out " + id + EVIDENCE[type];
}

function openShare(button) {
  const dialog = document.getElementById("share-dialog");
  const { device, oid, type } = button.dataset;
  const file = document.querySelector("#keyring input[type=file]");
  const keyring = file && file.files.length ? file.files[0].name : "";
  const what = type === "video/mp4" ? "clip" : "snapshot";
  for (const span of dialog.querySelectorAll(".share-what")) span.textContent = what;
  dialog.querySelector(".share-device").textContent = device;
  dialog.querySelector("#share-command").textContent = shareCommand(dialog.dataset.dataDir, device, oid, type, keyring);
  dialog.dataset.oid = oid;
  dialog.querySelector("[data-copy]").textContent = "Copy";
  dialog.showModal();
}

// The events player's share button, for the event a tile opened (shareable once whole).
function offerShare(player, e) {
  const p = player.querySelector("p.share");
  p.hidden = !(e.complete && Object.hasOwn(EVIDENCE, e.type || ""));
  Object.assign(p.querySelector("button").dataset, { device: e.device, oid: e.oid, type: e.type || "" });
}

document.addEventListener("click", (ev) => {
  const button = ev.target.closest && ev.target.closest("button[data-action=share]");
  if (button) openShare(button);
});
