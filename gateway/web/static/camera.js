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
import { hex, sha256 } from "./ekcrypto.js";

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
