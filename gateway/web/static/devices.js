// The Devices page: search, filter and sort over the rows the page has (no request), kept in
// the address (?q=&kind=&status=&online=&sort=) so a reload or a link keeps them; rename and
// revoke through <dialog>s, the revoke one saying plainly that it is final. The rows stay
// server-rendered (and work without JS); app.js keeps their last seen and status live and
// handles the Register form.
const table = document.getElementById("devices");
const filter = document.getElementById("device-filter");
const csrf = document.querySelector('meta[name="csrf"]').content;

async function api(method, path, body) {
  const r = await fetch(path, {
    method, headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || r.status + " " + r.statusText);
  return data;
}

function rows() {
  return [...table.tBodies[0].querySelectorAll("tr[data-device]")];
}

// -- search, filter, sort ----------------------------------------------------------------------

// online, offline or revoked, as the row shows it now (app.js turns it "online" live).
function connection(row) {
  return row.querySelector(".status").textContent.trim();
}

function lastSeen(row) {
  return Number(row.querySelector(".last-seen").dataset.time) || 0;
}

const byName = (a, b) => {
  const x = a.dataset.name, y = b.dataset.name;
  if (!x !== !y) return x ? -1 : 1;           // unnamed devices last
  return x.localeCompare(y, undefined, { numeric: true, sensitivity: "base" })
    || a.dataset.device.localeCompare(b.dataset.device);
};
const SORTS = {
  name: byName,
  seen: (a, b) => lastSeen(b) - lastSeen(a) || byName(a, b),   // newest first, never last
  kind: (a, b) => a.dataset.kind.localeCompare(b.dataset.kind) || byName(a, b),
};

function matches(row, f) {
  const q = f.q.trim().toLowerCase();
  if (q && !(row.dataset.name.toLowerCase().includes(q) || row.dataset.device.includes(q))) return false;
  if (f.kind && row.dataset.kind !== f.kind) return false;
  const status = row.classList.contains("revoked") ? "revoked" : "active";
  if (f.status && status !== f.status) return false;
  // online/offline are for active devices: a revoked one is neither.
  if (f.online && connection(row) !== f.online) return false;
  return true;
}

function values() {
  return Object.fromEntries(new FormData(filter));
}

function apply() {
  const f = values(), all = rows();
  let shown = 0;
  for (const row of all) {
    row.hidden = !matches(row, f);
    if (!row.hidden) shown++;
  }
  const body = table.tBodies[0];
  for (const row of all.sort(SORTS[f.sort] || byName)) body.append(row);
  filter.querySelector(".count").textContent =
    shown === all.length ? all.length + " device(s)" : shown + " of " + all.length + " device(s) shown";
  document.getElementById("no-match").hidden = !all.length || shown > 0;
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(f)) if (v && !(k === "sort" && v === "name")) query.set(k, v);
  const search = query.toString();
  history.replaceState(null, "", location.pathname + (search ? "?" + search : ""));
}

function filters() {
  const given = new URLSearchParams(location.search);
  for (const el of filter.elements) {
    const v = given.get(el.name);
    if (v === null) continue;
    // a select only takes a value it offers (e.g. a kind no device has any more)
    if (el.tagName !== "SELECT" || [...el.options].some((o) => o.value === v)) el.value = v;
  }
  filter.addEventListener("input", apply);
  filter.addEventListener("submit", (e) => e.preventDefault());
  document.querySelector('#no-match [data-action="clear"]').addEventListener("click", () => {
    const sort = filter.elements.sort.value;     // show every device, in the same order
    filter.reset();
    filter.elements.sort.value = sort;
    apply();
  });
  filter.hidden = false;
  apply();
}

// -- rename and revoke ----------------------------------------------------------------------

// A dialog whose form has Cancel (which, like Esc, closes it and changes nothing) and one
// submit button that runs `action(row, form)`: the dialog closes once that worked, or says why not
// and stays open. Returns open(row).
function dialog(id, action) {
  const d = document.getElementById(id);
  const form = d.querySelector("form"), error = d.querySelector(".error"), busy = d.querySelector(".busy");
  const buttons = form.querySelectorAll("button");
  let row = null, working = false;
  d.addEventListener("cancel", (e) => { if (working) e.preventDefault(); });  // no Esc mid-request
  // Cancel is type=button, so that Enter in the name field saves rather than cancels.
  form.querySelector('button[value="cancel"]').addEventListener("click", () => d.close("cancel"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    working = true;
    error.hidden = true;
    if (busy) busy.hidden = false;
    for (const b of buttons) b.disabled = true;
    try {
      await action(row, form);
      d.close("done");
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      working = false;
      if (busy) busy.hidden = true;
      for (const b of buttons) b.disabled = false;
    }
  });
  return (r) => {
    row = r;
    error.hidden = true;
    for (const el of d.querySelectorAll(".device-id")) el.textContent = r.dataset.device;
    for (const el of d.querySelectorAll(".device-name")) el.textContent = r.dataset.name || r.dataset.device;
    const input = form.elements.name;
    if (input) input.value = r.dataset.name;
    d.showModal();
  };
}

function actions() {
  const rename = dialog("rename-dialog", async (row, form) => {
    const answer = await api("PATCH", "/api/devices/" + row.dataset.device, { name: form.elements.name.value });
    row.dataset.name = answer.name;
    row.querySelector(".name").textContent = answer.name;
    apply();
  });
  const revoke = dialog("revoke-dialog", async (row) => {
    await api("POST", "/api/devices/" + row.dataset.device + "/revoke");
    row.className = "revoked";
    row.querySelector(".status").textContent = "revoked";
    row.querySelector(".actions").replaceChildren();
    apply();
  });
  // On the table body, so that app.js's older prompt()/confirm() handler on the table never
  // sees these clicks.
  table.tBodies[0].addEventListener("click", (e) => {
    const button = e.target.closest("button[data-action]");
    const row = button && button.closest("tr[data-device]");
    if (!row) return;
    e.stopPropagation();
    if (button.dataset.action === "rename") rename(row);
    else if (button.dataset.action === "revoke") revoke(row);
  });
}

// -- enrollment tokens ---------------------------------------------------------------------------

// POST /api/enroll/tokens; the token is shown once with its expiry and the provision command.
function enrollment() {
  const box = document.getElementById("enroll");
  if (!box) return;
  const button = box.querySelector('[data-action="issue-token"]'), error = box.querySelector(".error");
  button.addEventListener("click", async () => {
    button.disabled = true;
    error.hidden = true;
    try {
      const t = await api("POST", "/api/enroll/tokens", { ttl: Number(box.querySelector("select[name=ttl]").value) });
      box.querySelector(".token-value").textContent = t.token;
      box.querySelector(".expires").textContent = new Date(t.expires * 1000).toLocaleString();
      box.querySelector(".provision").textContent = t.provision;
      box.querySelector(".token").hidden = false;
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}

if (table && filter) {
  filters();
  actions();
}
enrollment();
