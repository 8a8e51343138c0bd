// The decrypted readings as CSV, made in the browser (the gateway never sees them): the
// columns and values of `edgekeep export --format csv` (gateway/owner/export.py), in
// protocol units (docs/protocol.md, "Telemetry plaintext"), a row per reading in sequence
// order, an absent value empty, so that a file from either can be read the same way.
export const COLUMNS = ["device", "seq", "time", "temp", "hum", "pres", "gas", "light", "ax", "ay", "az",
  "lat", "lon", "batt"];

// Python writes a float's shortest round-trip digits, as JS does, but keeps ".0" on a whole one.
function seconds(t) {
  return Number.isInteger(t) ? t + ".0" : String(t);
}

function cell(r, column) {
  if (column === "time") return seconds(r.time);
  const v = r[column];
  return v === null || v === undefined ? "" : String(v);
}

// readings: decrypted (each with its seq), messages in any order, each message's readings
// in their order (the sort is stable)
export function readingsCsv(device, readings) {
  const rows = readings.slice().sort((a, b) => a.seq - b.seq)
    .map((r) => COLUMNS.map((c) => (c === "device" ? device : cell(r, c))).join(","));
  return [COLUMNS.join(","), ...rows].join("\r\n") + "\r\n";
}

// Offer `text` as a file download, from a blob: URL that is freed once it was clicked.
export function download(name, text) {
  const a = Object.assign(document.createElement("a"), {
    href: URL.createObjectURL(new Blob([text], { type: "text/csv" })), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}
