// The device page's telemetry, decrypted in this browser: pick a time range (1 h, 24 h,
// 7 d, all, or custom), and every stored telemetry message in it is fetched a page at a
// time (GET /api/devices/{id}/messages, newest first, following the Link header), each page
// decrypted and drawn as it arrives: charts (charts.js), the GPS track (track.js), the
// readings table (paged here, newest first) and, once all is in, a CSV download (csv.js).
// No downsampling on the gateway: it cannot read what it would thin out, and a 7-day range
// of a tracker at one message a minute (~10,000 messages) is ten requests.
import { base64Decode, decryptTelemetry } from "./ekcrypto.js";
import { Charts } from "./charts.js";
import { download, readingsCsv } from "./csv.js";
import { Track } from "./track.js";

const SPANS = { "1h": 3600, "24h": 86400, "7d": 7 * 86400 };
const PAGE = 1000;          // messages a request (the API's most)
const ROWS = 100;           // readings a table page

function unix(local) {
  const t = new Date(local).getTime();
  return Number.isFinite(t) ? Math.floor(t / 1000) : null;
}

function localInput(t) {   // Unix seconds -> a datetime-local value, this browser's time zone
  const d = new Date(t * 1000);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

function span(readings) {
  let lo = Infinity, hi = -Infinity;
  for (const r of readings) { if (r.time < lo) lo = r.time; if (r.time > hi) hi = r.time; }
  return [lo, hi];
}

function stamp(t) {
  return new Date(t * 1000).toISOString().replace(/[-:]|\.\d+/g, "");
}

function nextPage(link) {
  const m = /<([^>]+)>\s*;\s*rel="next"/.exec(link || "");
  return m ? m[1] : null;
}

async function getPage(url) {
  const r = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
  return { messages: body, next: nextPage(r.headers.get("link")) };
}

function fixed(x, scale, digits) { return x === null ? "–" : (x * scale).toFixed(digits); }

function readingRow(r, labels) {
  const tr = document.createElement("tr");
  const cells = [new Date(r.time * 1000).toLocaleString(), fixed(r.temp, 0.01, 2), fixed(r.hum, 0.01, 2),
    fixed(r.pres, 0.01, 2), fixed(r.light, 0.01, 2), fixed(r.lat, 1e-7, 5), fixed(r.lon, 1e-7, 5),
    r.batt === null ? "–" : String(r.batt), String(r.seq)];
  tr.replaceChildren(...cells.map((c, i) => {
    const td = Object.assign(document.createElement("td"), { textContent: c });
    td.dataset.label = labels[i] || "";
    if (i === 0) td.className = "title";
    return td;
  }));
  return tr;
}

// The readings table, ROWS a page, newest first, with Newest / Newer / Older / Oldest.
class ReadingsTable {
  constructor(table, pager) {
    this.table = table;
    this.pager = pager;
    this.labels = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
    this.rows = [];
    this.page = 0;
    pager.addEventListener("click", (e) => {
      const to = e.target.dataset && e.target.dataset.page;
      if (!to) return;
      const last = this.lastPage();
      this.page = { newest: 0, newer: this.page - 1, older: this.page + 1, oldest: last }[to];
      this.show();
    });
  }

  lastPage() { return Math.max(0, Math.ceil(this.rows.length / ROWS) - 1); }

  set(newestFirst) {
    this.rows = newestFirst;
    this.page = Math.min(this.page, this.lastPage());
    this.show();
  }

  show() {
    const start = this.page * ROWS, rows = this.rows.slice(start, start + ROWS);
    this.table.hidden = false;
    this.table.tBodies[0].replaceChildren(...rows.map((r) => readingRow(r, this.labels)));
    this.pager.hidden = this.rows.length <= ROWS;
    this.pager.querySelector(".where").textContent = rows.length
      ? "readings " + (start + 1) + "–" + (start + rows.length) + " of " + this.rows.length + ", newest first"
      : "no readings in this range";
    const b = (name) => this.pager.querySelector('[data-page="' + name + '"]');
    b("newest").disabled = b("newer").disabled = this.page === 0;
    b("oldest").disabled = b("older").disabled = this.page >= this.lastPage();
  }
}

export function telemetry(unlockedKeys) {
  const section = document.getElementById("telemetry");
  const device = section.dataset.device;
  const form = document.getElementById("range");
  const stateEl = document.getElementById("telemetry-state");
  const csvButton = form.querySelector('[data-action="csv"]');
  let views = null;        // made once the keyring is unlocked
  let run = 0;             // the current load; a newer one (another range) stops an older
  let data = null;         // {range, seqs, readings, newest, failed, error, done}

  const say = (text, isError) => {
    stateEl.textContent = text;
    stateEl.classList.toggle("error", !!isError);
  };

  function chosenRange() {
    const choice = form.elements.range.value, now = Math.floor(Date.now() / 1000);
    if (SPANS[choice]) return { from: now - SPANS[choice], to: null };
    if (choice !== "custom") return { from: null, to: null };
    const from = unix(form.elements.from.value), to = unix(form.elements.to.value);
    if (from === null || to === null || from >= to) throw new Error("choose a start before the end");
    return { from, to };
  }

  function url(range, from) {
    const q = new URLSearchParams({ kind: "t", limit: String(PAGE) });
    if (from !== null) q.set("from", String(from));
    if (range.to !== null) q.set("to", String(range.to));
    return "/api/devices/" + device + "/messages?" + q;
  }

  // Decrypt one page into `data`, skipping messages already in; returns how many were new.
  async function take(messages, keys) {
    const fresh = messages.filter((m) => !data.seqs.has(m.seq));
    fresh.forEach((m) => data.seqs.add(m.seq));
    const opened = await Promise.all(fresh.map((m) =>
      decryptTelemetry(base64Decode(m.raw), keys).catch((err) => new Error("message " + m.seq + ": " + err.message))));
    for (const [i, x] of opened.entries()) {
      if (x instanceof Error) { data.failed++; data.error = data.error || x.message; continue; }
      data.readings.push(...x);
      data.newest = Math.max(data.newest, fresh[i].time);
    }
    return fresh.length;
  }

  function draw() {
    const byTime = data.readings.slice().sort((a, b) => a.time - b.time);
    views.charts.set(byTime);
    views.track.set(byTime);
    views.table.set(byTime.slice().reverse());
    const n = data.seqs.size - data.failed;
    say(byTime.length + " readings from " + n + " messages, decrypted in this browser"
      + (data.done ? "" : "; loading older…")
      + (data.failed ? " · " + data.failed + " message(s) could not be decrypted: " + data.error : ""), data.failed > 0);
    csvButton.disabled = !data.done || !byTime.length;
  }

  async function load() {
    const keys = unlockedKeys();
    if (!keys) return;
    if (!keys[device]) return say("Your keyring has no key for this device.");
    let range;
    try { range = chosenRange(); } catch (err) { return say(err.message, true); }
    if (!views) {
      form.hidden = false;
      views = { charts: new Charts(section.querySelector(".charts")), track: new Track(document.getElementById("track")),
        table: new ReadingsTable(document.getElementById("readings"), document.getElementById("readings-pager")) };
      document.getElementById("track").hidden = false;
    }
    const mine = ++run;
    data = { range, seqs: new Set(), readings: [], newest: 0, failed: 0, error: null, done: false };
    say("loading…");
    try {
      // The next page is fetched while this one is decrypted (a newer range may abandon it:
      // its failure is then nobody's, hence the catch).
      const prefetch = (u) => { const p = getPage(u); p.catch(() => {}); return p; };
      for (let pending = prefetch(url(range, range.from)); pending && mine === run;) {
        const page = await pending;
        if (mine !== run) return;
        pending = page.next ? prefetch(page.next) : null;
        await take(page.messages, keys);
        if (mine !== run) return;
        data.done = !pending;
        draw();
      }
      if (mine === run && !data.seqs.size) { data.done = true; draw(); }
    } catch (err) {
      if (mine === run) say("could not load the readings: " + err.message, true);
    }
  }

  // A new message while the range reaches now: fetch what is newer than the newest in,
  // one catch-up at a time (a device sending every second must not pile requests up).
  let catching = false, again = false;
  async function catchUp() {
    if (!data || !data.done || data.range.to !== null || !unlockedKeys()) return;
    if (catching) { again = true; return; }
    catching = true;
    const mine = run;
    try {
      let added = 0;
      for (let next = url(data.range, Math.max(data.newest, data.range.from || 0)); next && mine === run;) {
        const page = await getPage(next);
        if (mine !== run) return;
        added += await take(page.messages, unlockedKeys());
        next = page.next;
      }
      if (added && mine === run) draw();
    } catch { /* the next message tries again */ } finally {
      catching = false;
      if (again) { again = false; catchUp(); }
    }
  }

  form.addEventListener("change", (e) => {
    if (e.target.name !== "range") return;
    const custom = form.elements.range.value === "custom";
    form.querySelector(".custom").hidden = !custom;
    if (!custom) return load();
    if (data && !form.elements.from.value) {
      const now = Math.floor(Date.now() / 1000), [first] = span(data.readings);
      form.elements.from.value = localInput(data.range.from || (data.readings.length ? first : now - 86400));
      form.elements.to.value = localInput(data.range.to || now + 60);
    }
  });
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  csvButton.addEventListener("click", () => {
    const [first, last] = span(data.readings);
    download(device + "-" + stamp(first) + "-" + stamp(last) + ".csv",
      readingsCsv(device, data.readings));
  });
  document.addEventListener("ek:unlocked", load);
  document.addEventListener("ek:message", (e) => {
    if (e.detail.device === device && e.detail.kind === "t") catchUp();
  });
  load();
}
