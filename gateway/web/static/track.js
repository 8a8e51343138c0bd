// The device page's GPS track: the readings' positions in time order, drawn as an SVG line
// in Web Mercator (as web maps are) with latitude and longitude axes, start and end marked.
// That bare track needs nothing from outside. The owner may turn on map tiles from
// OpenStreetMap under it (remembered in this browser): that asks tile.openstreetmap.org for
// the area's images, so it learns roughly where the device was, which is why it is off until
// asked for. The CSP allows that host for images only; a tile that does not load (no
// internet) takes the tiles away again and the bare track stays.
const NS = "http://www.w3.org/2000/svg";
const LEFT = 62, BOTTOM = 24, PAD = 14;   // axis margins; the size is the figure's, in CSS px
const TILE = 256, MAX_ZOOM = 17;
export const TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png";
const TILES_WANTED = "ek-map-tiles";

// Web Mercator, in world units (0 ... 1 both ways).
function world(lat, lon) {
  const s = Math.sin(lat * Math.PI / 180);
  return [(lon + 180) / 360, 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)];
}

function latitudeOf(wy) {
  return Math.atan(Math.sinh(Math.PI * (1 - 2 * wy))) * 180 / Math.PI;
}

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// A round step giving about `n` ticks over `span` degrees, and its decimals.
function step(span, n) {
  const raw = Math.max(span, 1e-6) / n, p = Math.pow(10, Math.floor(Math.log10(raw)));
  const s = [1, 2, 5, 10].map((m) => m * p).find((x) => x >= raw);
  return [s, Math.max(0, -Math.floor(Math.log10(s) + 1e-9))];
}

function ticks(lo, hi, n) {
  const [s, digits] = step(hi - lo, n);
  const out = [];
  for (let v = Math.ceil(lo / s) * s; v <= hi; v += s) out.push([v, v.toFixed(digits)]);
  return out;
}

// The view: the SVG's size (W, H: as wide as the figure, so text stays its size), the zoom
// and the world position of the plot area's top left, fitting every point.
function view(points, width) {
  const W = Math.round(Math.min(760, Math.max(280, width))), H = Math.round(Math.min(420, Math.max(220, W * 0.6)));
  const ws = points.map(([lat, lon]) => world(lat, lon));
  const xs = ws.map((w) => w[0]), ys = ws.map((w) => w[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const pw = W - LEFT - 2 * PAD, ph = H - BOTTOM - 2 * PAD;
  let z = MAX_ZOOM;
  while (z > 1 && ((x1 - x0) * TILE * 2 ** z > pw || (y1 - y0) * TILE * 2 ** z > ph)) z--;
  const scale = TILE * 2 ** z;
  return { W, H, ws, z, scale, left: (x0 + x1) / 2 - (W - LEFT) / 2 / scale, top: (y0 + y1) / 2 - (H - BOTTOM) / 2 / scale };
}

export class Track {
  // figure: the <figure id="track"> of device.html, with its .tiles checkbox and caption
  constructor(figure) {
    this.figure = figure;
    this.caption = figure.querySelector("figcaption");
    this.toggle = figure.querySelector("input.map-tiles");
    this.toggle.checked = localStorage.getItem(TILES_WANTED) === "yes";
    this.toggle.addEventListener("change", () => {
      localStorage.setItem(TILES_WANTED, this.toggle.checked ? "yes" : "no");
      this.draw();
    });
    this.points = [];
    this.width = 0;
    new ResizeObserver(() => {
      if (Math.abs(this.figure.clientWidth - this.width) > 20 && this.points.length) this.draw();
    }).observe(figure);
  }

  // readings sorted by time; those with a position make the track
  set(readings) {
    this.points = readings.filter((r) => r.lat !== null && r.lon !== null).map((r) => [r.lat * 1e-7, r.lon * 1e-7, r.time]);
    this.draw();
  }

  draw() {
    const old = this.figure.querySelector("svg");
    if (!this.points.length) {
      if (old) old.remove();
      this.figure.dataset.mode = "none";
      this.caption.textContent = "GPS track: no position in this range";
      return;
    }
    this.width = this.figure.clientWidth;
    const v = view(this.points, this.width - 14), { W, H } = v;
    const at = (w) => [LEFT + (w[0] - v.left) * v.scale, (w[1] - v.top) * v.scale];
    const svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "GPS track" });
    const clip = "track-clip";
    const area = { x: LEFT, y: 0, width: W - LEFT, height: H - BOTTOM };
    const defs = el("defs", {}), clipPath = el("clipPath", { id: clip });
    clipPath.append(el("rect", area));
    defs.append(clipPath);
    svg.append(defs, el("rect", { class: "plot", ...area }));
    const inside = el("g", { "clip-path": "url(#" + clip + ")" });
    svg.append(inside);
    if (this.toggle.checked) inside.append(this.tiles(v));
    inside.append(this.graticule(v), this.line(v.ws.map(at)));
    svg.append(...this.axes(v));
    if (old) old.replaceWith(svg); else this.figure.insertBefore(svg, this.caption);
    this.figure.dataset.mode = this.toggle.checked ? "tiles" : "bare";
    this.say(this.toggle.checked ? "loading map tiles…" : "");
  }

  say(note) {
    const [first, last] = [this.points[0], this.points[this.points.length - 1]];
    const fmt = (p) => p[0].toFixed(5) + ", " + p[1].toFixed(5);
    this.caption.textContent = "GPS track: " + this.points.length + " positions from " + fmt(first)
      + " (start, ○) to " + fmt(last) + " (end, ●)" + (note ? " · " + note : "");
  }

  line(xy) {
    const g = el("g", { class: "track" });
    g.append(el("polyline", { points: xy.map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" ") }),
      el("circle", { class: "start", cx: xy[0][0], cy: xy[0][1], r: 5 }),
      el("circle", { class: "end", cx: xy[xy.length - 1][0], cy: xy[xy.length - 1][1], r: 5 }));
    return g;
  }

  graticule(v) {
    const { W, H } = v, g = el("g", { class: "grid" });
    for (const [lon] of this.lonTicks(v)) {
      const x = LEFT + ((lon + 180) / 360 - v.left) * v.scale;
      g.append(el("line", { x1: x, x2: x, y1: 0, y2: H - BOTTOM }));
    }
    for (const [lat] of this.latTicks(v)) {
      const y = (world(lat, 0)[1] - v.top) * v.scale;
      g.append(el("line", { x1: LEFT, x2: W, y1: y, y2: y }));
    }
    return g;
  }

  lonTicks(v) {
    const { W } = v, lo = v.left * 360 - 180, hi = (v.left + (W - LEFT) / v.scale) * 360 - 180;
    return ticks(lo, hi, Math.max(2, Math.round((W - LEFT) / 110)));   // room for "8.550°"
  }

  latTicks(v) {
    const { H } = v;
    return ticks(latitudeOf(v.top + (H - BOTTOM) / v.scale), latitudeOf(v.top), 4);
  }

  axes(v) {
    const { H } = v, g = el("g", { class: "axes" });
    for (const [lon, label] of this.lonTicks(v)) {
      const x = LEFT + ((lon + 180) / 360 - v.left) * v.scale;
      g.append(el("text", { class: "lon", x, y: H - 6, "text-anchor": "middle" }, label + "°"));
    }
    for (const [lat, label] of this.latTicks(v)) {
      const y = (world(lat, 0)[1] - v.top) * v.scale;
      g.append(el("text", { class: "lat", x: LEFT - 4, y: y + 4, "text-anchor": "end" }, label + "°"));
    }
    g.append(el("text", { class: "unit", x: LEFT + 4, y: 14 }, "latitude / longitude, degrees"));
    return [g];
  }

  // The tiles under the plot area; any one failing takes them all away (offline).
  tiles(v) {
    const { W, H } = v, g = el("g", { class: "map-tiles" }), n = 2 ** v.z;
    const x0 = Math.floor(v.left * n), x1 = Math.floor((v.left + (W - LEFT) / v.scale) * n);
    const y0 = Math.max(0, Math.floor(v.top * n)), y1 = Math.min(n - 1, Math.floor((v.top + (H - BOTTOM) / v.scale) * n));
    let waiting = 0;
    for (let x = x0; x <= x1; x++) {
      for (let y = y0; y <= y1; y++) {
        const href = TILE_URL.replace("{z}", v.z).replace("{x}", ((x % n) + n) % n).replace("{y}", y);
        const img = el("image", { href, x: LEFT + (x / n - v.left) * v.scale, y: (y / n - v.top) * v.scale, width: TILE, height: TILE });
        waiting++;
        img.addEventListener("load", () => { if (--waiting === 0 && g.isConnected) this.say("map © OpenStreetMap contributors"); });
        img.addEventListener("error", () => {
          if (!g.isConnected) return;
          g.remove();
          this.figure.dataset.mode = "bare";
          this.say("map tiles could not be loaded (no internet?): the bare track");
        }, { once: true });
        g.append(img);
      }
    }
    return g;
  }
}
