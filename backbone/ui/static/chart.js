// Charts of the dashboard, drawn as SVG by hand: no library, nothing fetched.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

// A sparkline of VALUES (nulls drawn as 0), scaled to its own maximum.
function sparkline(values) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 90 20");
  svg.setAttribute("preserveAspectRatio", "none");
  const numbers = values.filter((v) => v !== null && v !== undefined);
  if (numbers.length < 2) return svg;
  const max = Math.max(1, ...numbers);
  const step = 90 / (values.length - 1);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", values.map((v, i) =>
    `${(i * step).toFixed(1)},${(19 - ((v || 0) / max) * 18).toFixed(1)}`).join(" "));
  svg.append(line);
  return svg;
}

// LINES over the last WINDOWMS milliseconds before NOW on SVG, their latest
// values in LEGEND; a gap longer than GAPMS between two points (Redis away)
// breaks a line instead of bridging it.
function drawChart(svg, legend, { now, windowMs, gapMs, format }, lines) {
  const width = 600, height = 170, left = 44, right = 8, top = 8, bottom = 20;
  svg.replaceChildren();
  const start = now - windowMs;
  let max = 1;
  for (const line of lines) for (const [, v] of line.values) if (v !== null && v > max) max = v;
  const x = (t) => left + ((t - start) / windowMs) * (width - left - right);
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  for (const fraction of [0, 0.5, 1]) {
    const value = max * fraction;
    add("line", { class: "grid", x1: left, x2: width - right, y1: y(value), y2: y(value) });
    add("text", { x: left - 4, y: y(value) + 4, "text-anchor": "end" }, value >= 10 ? Math.round(value) : value.toFixed(1));
  }
  for (const minutes of [10, 5, 0]) {
    add("text", { x: x(now - minutes * 60000), y: height - 4, "text-anchor": minutes === 10 ? "start" : minutes === 0 ? "end" : "middle" },
      minutes ? `-${minutes} min` : "now");
  }
  for (const line of lines) {
    let segment = [];
    let last = null;
    const flush = () => {
      if (segment.length > 1) add("polyline", { points: segment.join(" "), stroke: line.color });
      segment = [];
    };
    for (const [t, v] of line.values) {
      if (v === null || (last !== null && t - last > gapMs)) flush();
      if (v !== null) segment.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
      last = t;
    }
    flush();
  }
  legend.replaceChildren(...lines.map((line) => {
    const latest = line.values.length ? line.values[line.values.length - 1][1] : null;
    const swatch = document.createElement("i");
    swatch.style.background = line.color;
    const entry = document.createElement("span");
    entry.append(swatch, `${line.name}: ${latest === null ? "-" : format(latest)}`);
    return entry;
  }));
}

function smooth(values) {
  // Rates of one-second steps jump with the consumers' batches: three steps
  // averaged show the trend without hiding a change for long.
  return values.map(([t, v], i) => {
    const near = values.slice(Math.max(0, i - 2), i + 1).map(([, x]) => x).filter((x) => x !== null);
    return [t, v === null || !near.length ? null : near.reduce((a, b) => a + b, 0) / near.length];
  });
}
