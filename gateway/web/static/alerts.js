// Alerts on every page: the nav's badge and the dashboard's card follow the live status
// (its `alerts`); on /alerts, each device's opt-in to values in its alerts.

function item(a, resolved) {
  const li = document.createElement("li");
  li.dataset.alert = a.id;
  const when = document.createElement("span");
  when.dataset.time = resolved ? a.resolved_at : a.started_at;   // app.js keeps it counting
  if (resolved) {
    li.append("resolved: " + a.title + " · ", when);
  } else {
    li.className = "alert p" + a.priority;
    li.dataset.rule = a.rule;
    li.dataset.subject = a.subject;
    li.append(a.title + " · ", when);
  }
  return li;
}

export function showAlerts(al) {
  if (!al) return;
  const badge = document.getElementById("alert-badge");
  if (badge) badge.hidden = !al.count;
  const active = document.getElementById("alerts-active");
  if (active) {
    const none = Object.assign(document.createElement("li"), { className: "muted", textContent: "none active" });
    active.replaceChildren(...(al.active.length ? al.active.map((a) => item(a, false)) : [none]));
  }
  const recent = document.getElementById("alerts-recent");
  if (recent) recent.replaceChildren(...al.recent.map((a) => item(a, true)));
}

export function alertOptIn(api) {
  const note = document.getElementById("optin-note");
  for (const box of document.querySelectorAll("input[data-optin]")) {
    box.addEventListener("change", async () => {
      box.disabled = true;
      try {
        await api("PUT", "/api/alerts/optin/" + box.dataset.optin, { values: box.checked });
        note.textContent = box.checked ? "Its alerts now carry its values." : "Its alerts no longer carry its values.";
      } catch (e) {
        box.checked = !box.checked;
        note.textContent = "Not changed: " + e.message;
      }
      box.disabled = false;
    });
  }
}
