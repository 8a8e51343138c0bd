// The Updates page: set the release key once, upload signed bundles, start a rollout (devices,
// a canary group, stages), and follow every device of the recent rollouts live (polled every
// 2 s): chunks sent, verifying, rebooting, confirmed or rolled back. Resume and Abort act on a
// rollout; the gateway's engine does the rest.
const csrf = document.querySelector('meta[name="csrf"]').content;
const FAILED = ["refused", "rolled back", "timed out"];

async function call(method, path, body, type = "application/json") {
  const r = await fetch(path, {
    method, headers: { "Content-Type": type, "X-CSRF-Token": csrf },
    body: body === undefined ? undefined : type === "application/json" ? JSON.stringify(body) : body,
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((data.error || r.status + " " + r.statusText) + (data.fix ? " — fix: " + data.fix : ""));
  return data;
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(e.dataset, v);
    else if (k in e) e[k] = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

function showError(form, err) {
  const p = form.querySelector(".error");
  p.textContent = err ? err.message : "";
  p.hidden = !err;
}

function submitting(form, action) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await action(form);
      showError(form, null);
      await refresh();
    } catch (err) {
      showError(form, err);
    } finally {
      button.disabled = false;
    }
  });
}

// -- the release key, bundles, the new-rollout form --------------------------------------------

let known = { bundles: "", devices: "" };

function renderKey(key) {
  const section = document.getElementById("release-key");
  section.querySelector(".key-state").textContent = key
    ? "Bundles are checked against release key " + key.slice(0, 18) + "…" + key.slice(-8) + "."
    : "No release key yet: set it before uploading bundles.";
  document.getElementById("release-key-form").hidden = !!key;
}

function renderBundles(bundles) {
  const sig = JSON.stringify(bundles);
  if (sig === known.bundles) return;
  known.bundles = sig;
  const body = document.querySelector("#bundles tbody");
  body.replaceChildren(...bundles.map((b) => el("tr", { dataset: { digest: b.digest } },
    el("td", { className: "title", textContent: b.version }), el("td", { textContent: b.board }),
    el("td", { textContent: b.files }), el("td", { textContent: b.size + " B" }),
    el("td", { className: "mono", textContent: b.digest.slice(0, 16) + "…" }))));
  const select = document.querySelector("#rollout-form select[name=bundle]");
  const was = select.value;
  select.replaceChildren(...bundles.map((b) => el("option", { value: b.digest,
    textContent: b.version + " (" + b.board + ", " + b.digest.slice(0, 8) + ")" })));
  if (was) select.value = was;
}

const names = {};

function renderDevices(devices) {
  const sig = JSON.stringify(devices.map((d) => d.id));
  const box = document.getElementById("rollout-devices");
  for (const d of devices) {
    names[d.id] = d.name;
    const fw = box.querySelector('[data-pick="' + d.id + '"] .fw');
    if (fw) fw.textContent = d.firmware || "-";
  }
  if (sig === known.devices) return;
  known.devices = sig;
  const label = (d) => d.name || d.id;
  const rows = devices.map((d) => el("tr", { dataset: { pick: d.id } },
    el("td", { className: "title", "data-label": "Update" },
      el("input", { type: "checkbox", name: "device", value: d.id, checked: true, ariaLabel: "update " + label(d) }),
      " " + label(d)),
    el("td", { className: "fw", "data-label": "Runs", textContent: d.firmware || "-" }),
    el("td", { "data-label": "Canary" },
      el("input", { type: "checkbox", name: "canary", value: d.id, ariaLabel: label(d) + " in the canary group" }))));
  box.replaceChildren(el("legend", { textContent: "Devices to update, and the canary group offered first" }),
    rows.length ? el("table", { className: "cards compact" },
      el("thead", {}, el("tr", {}, ...["Update", "Runs", "Canary"].map((h) => el("th", { textContent: h })))),
      el("tbody", {}, ...rows))
      : el("p", { className: "muted", textContent: "No active device." }));
}

function plan(form) {
  const f = new FormData(form);
  return {
    bundle: f.get("bundle"),
    devices: f.getAll("device"),
    canary: f.getAll("canary").filter((d) => f.getAll("device").includes(d)),
    stages: String(f.get("stages")).split(",").map((s) => Number(s.trim())).filter((n) => n),
    max_failed: Number(f.get("max_failed")) / 100,
    confirm_seconds: Number(f.get("confirm_seconds")),
    force: f.get("force") === "on",
  };
}

// -- rollouts ------------------------------------------------------------------------------------

function progress(d) {
  if (d.state === "chunks") return "chunks " + d.sent + "/" + d.chunks;
  if (d.state === "verifying") return "verifying (" + d.chunks + " chunks sent)";
  return d.state;
}

function rolloutCard(r) {
  const stage = r.stages > 1 ? "stage " + (r.stage + 1) + " of " + r.stages : "one stage";
  const buttons = el("div", { className: "buttons" });
  if (r.status === "halted") buttons.append(el("button", { type: "button", className: "primary", textContent: "Resume", dataset: { action: "resume" } }));
  if (r.status === "running" || r.status === "halted") buttons.append(el("button", { type: "button", className: "danger", textContent: "Abort", dataset: { action: "abort" } }));
  // data-dev, not data-device: app.js keeps every tr[data-device] of a page live as a device row.
  const rows = (r.devices || []).map((d) => el("tr", { dataset: { dev: d.device, state: d.state },
    className: FAILED.includes(d.state) ? "failed" : "" },
    el("td", { className: "title", "data-label": "Device", title: d.device, textContent: names[d.device] || d.device }),
    el("td", { "data-label": "Stage", textContent: d.stage === 0 && r.stages > 1 ? "1 (canary)" : String(d.stage + 1) }),
    el("td", { className: "state", "data-label": "Progress", textContent: progress(d) }),
    el("td", { className: "why", "data-label": "Why", textContent: d.why || "" })));
  return el("article", { className: "card rollout " + r.status, dataset: { id: r.id, status: r.status } },
    el("h3", {}, "Rollout of " + (r.version || "?") + " · ", el("span", { className: "status", textContent: r.status }), " · " + stage),
    el("p", { className: "reason" + (r.status === "halted" ? " error" : " muted"), textContent: r.reason || "" }),
    buttons, el("p", { className: "error action-error", role: "alert", hidden: true }),
    el("table", { className: "cards" },
      el("thead", {}, el("tr", {}, ...["Device", "Stage", "Progress", "Why"].map((h) => el("th", { textContent: h })))),
      el("tbody", {}, ...rows)));
}

async function renderRollouts(list) {
  const recent = list.slice(0, 5);
  const full = await Promise.all(recent.map((r) => call("GET", "/api/updates/rollouts/" + r.id)));
  const section = document.getElementById("rollouts");
  section.querySelector(".none").hidden = full.length > 0;
  section.querySelectorAll(".rollout").forEach((c) => c.remove());
  section.append(...full.map(rolloutCard));
}

document.getElementById("rollouts").addEventListener("click", async (ev) => {
  const button = ev.target.closest("button[data-action]");
  if (!button) return;
  const card = button.closest(".rollout");
  button.disabled = true;
  try {
    await call("POST", "/api/updates/rollouts/" + card.dataset.id + "/" + button.dataset.action);
    await refresh();
  } catch (err) {
    const p = card.querySelector(".action-error");
    p.textContent = err.message;
    p.hidden = false;
    button.disabled = false;
  }
});

// -- wiring -------------------------------------------------------------------------------------

async function refresh() {
  const u = await call("GET", "/api/updates");
  renderKey(u.release_key);
  renderBundles(u.bundles);
  renderDevices(u.devices);
  await renderRollouts(u.rollouts);
}

submitting(document.getElementById("release-key-form"), (form) =>
  call("PUT", "/api/updates/release-key", { key: form.elements.key.value.trim() }));
submitting(document.getElementById("bundle-form"), async (form) => {
  const file = form.elements.bundle.files[0];
  await call("POST", "/api/updates/bundles", await file.arrayBuffer(), "application/octet-stream");
  form.reset();
});
submitting(document.getElementById("rollout-form"), (form) => call("POST", "/api/updates/rollouts", plan(form)));

refresh();
setInterval(() => refresh().catch(() => {}), 2000);
