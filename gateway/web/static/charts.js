// The device page's charts (uPlot 1.6.32, vendored): one per measured quantity, each with a
// time axis, a value axis labelled with its unit, and a tooltip that follows the cursor with
// the time and the value(s) of the nearest reading. Readings come decrypted from
// telemetry.js in protocol units (docs/protocol.md, "Telemetry plaintext"); each series
// says how to scale them to the unit shown.
import uPlot from "./vendor/uplot-1.6.32/uPlot.esm.js";

// [title, unit, digits, [[field, series label, scale], ...]]
export const CHARTS = [
  ["Temperature", "°C", 2, [["temp", "temperature", 0.01]]],
  ["Humidity", "%RH", 2, [["hum", "humidity", 0.01]]],
  ["Pressure", "hPa", 2, [["pres", "pressure", 0.01]]],
  ["Gas resistance", "kΩ", 3, [["gas", "gas", 0.001]]],
  ["Light", "lux", 2, [["light", "light", 0.01]]],
  ["Acceleration", "g", 3, [["ax", "x", 0.001], ["ay", "y", 0.001], ["az", "z", 0.001]]],
  ["Battery", "mV", 0, [["batt", "battery", 1]]],
];
const HEIGHT = 180;
const SERIES_COLOURS = ["--accent", "--ok", "--warn"];

function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

function when(t) {
  return new Date(t * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
}

// The uPlot data of one chart: [times, values of each series] with null where absent.
function columns(readings, series) {
  const xs = new Array(readings.length);
  const ys = series.map(() => new Array(readings.length));
  readings.forEach((r, i) => {
    xs[i] = r.time;
    series.forEach(([field, , scale], j) => { ys[j][i] = r[field] === null ? null : r[field] * scale; });
  });
  return [xs, ...ys];
}

// The tooltip: a box in the plot area, next to the cursor, with the nearest reading.
function tooltipPlugin(unit, digits) {
  let box;
  return {
    hooks: {
      init: (u) => {
        box = Object.assign(document.createElement("div"), { className: "chart-tip", hidden: true });
        box.setAttribute("aria-hidden", "true");   // the caption says it in words
        u.over.append(box);
      },
      setCursor: (u) => {
        const i = u.cursor.idx;
        if (i === null || i === undefined || u.cursor.left < 0) { box.hidden = true; return; }
        const values = u.series.slice(1).map((s, j) => {
          const v = u.data[j + 1][i];
          return (u.series.length > 2 ? s.label + " " : "") + (v === null ? "–" : v.toFixed(digits) + " " + unit);
        });
        box.textContent = when(u.data[0][i]) + " · " + values.join(", ");
        box.hidden = false;
        const left = u.cursor.left, top = u.cursor.top;
        box.style.left = Math.min(left + 10, Math.max(0, u.over.clientWidth - box.offsetWidth)) + "px";
        box.style.top = Math.max(0, top - box.offsetHeight - 8) + "px";
      },
    },
  };
}

function options(title, unit, digits, series, width) {
  const axis = { stroke: css("--muted"), grid: { stroke: css("--line"), width: 1 }, ticks: { stroke: css("--line") } };
  return {
    width, height: HEIGHT, legend: { show: false },
    cursor: { points: { size: 7 }, drag: { x: false, y: false } },
    scales: { x: { time: true } },
    axes: [axis, { ...axis, label: unit, size: 60,
      values: (u, ticks) => ticks.map((v) => v.toFixed(Math.max(0, digits - 1))) }],
    series: [{ label: "time" }, ...series.map(([, label], j) => ({
      label, stroke: css(SERIES_COLOURS[j]), width: 1.5, spanGaps: false,
      points: { show: (u) => u.data[0].length < 60 },
    }))],
    plugins: [tooltipPlugin(unit, digits)],
  };
}

// The figure's caption: what the chart shows, in words (also read by screen readers).
function summary(title, unit, digits, data) {
  const values = data.slice(1).flat().filter((v) => v !== null);
  if (!values.length) return title + " (" + unit + "): no readings in this range";
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  return title + " (" + unit + "): " + values.length + " values, " + lo.toFixed(digits) + " – "
    + hi.toFixed(digits) + " " + unit;
}

// Every chart in `container`; set(readings) (sorted by time) draws them all again.
export class Charts {
  constructor(container) {
    this.container = container;
    this.charts = CHARTS.map(([title, unit, digits, series]) => {
      const fig = Object.assign(document.createElement("figure"), { className: "chart" });
      fig.dataset.title = title;
      fig.dataset.unit = unit;
      const caption = document.createElement("figcaption");
      const plot = document.createElement("div");
      fig.append(caption, plot);
      return { title, unit, digits, series, fig, caption, plot, u: null };
    });
    container.replaceChildren(...this.charts.map((c) => c.fig));
    new ResizeObserver(() => this.resize()).observe(container);
  }

  set(readings) {
    for (const c of this.charts) {
      const data = columns(readings, c.series);
      c.caption.textContent = summary(c.title, c.unit, c.digits, data);
      if (!c.u) {
        c.u = new uPlot(options(c.title, c.unit, c.digits, c.series, this.width(c)), data, c.plot);
        c.fig.ekChart = c.u;      // for the browser tests: the axes' tick labels, the data
      } else {
        c.u.setData(data);
      }
    }
  }

  width(c) {
    return Math.max(200, Math.floor(c.fig.clientWidth - 2));
  }

  resize() {
    for (const c of this.charts) {
      if (c.u && Math.abs(c.u.width - this.width(c)) > 1) c.u.setSize({ width: this.width(c), height: HEIGHT });
    }
  }
}
