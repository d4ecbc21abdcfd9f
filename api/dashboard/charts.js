// Small SVG charts for the dashboard: line charts (linear or log axes, error bars, a reference diagonal) and
// horizontal bar charts. Written here rather than vendored so the package ships no third-party code and
// needs no build step; only presentation attributes are set (no style attributes), which the page's
// Content-Security-Policy (style-src 'self') allows.
(function (global) {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) el.setAttribute(k, String(v));
    }
    if (parent) parent.appendChild(el);
    return el;
  }

  function text(parent, x, y, content, attrs) {
    const t = svg("text", { x, y, ...(attrs || {}) }, parent);
    t.textContent = content;
    return t;
  }

  // "Nice" linear ticks (1, 2, 5 x 10^k steps), about `n` of them.
  function linearTicks(lo, hi, n) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / Math.max(1, n);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  // Log ticks: powers of ten, with 2 and 5 multiples when the range is under three decades.
  function logTicks(lo, hi) {
    const out = [];
    const decades = Math.log10(hi / lo);
    const mults = decades < 1 ? [1, 1.5, 2, 3, 4, 5, 6, 8] : decades < 3 ? [1, 2, 5] : [1];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of mults) {
        const v = m * Math.pow(10, e);
        if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) out.push(Number(v.toPrecision(12)));
      }
    }
    return out.length ? out : [lo, hi];
  }

  function fmt(v) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e4 || a < 1e-3) return v.toExponential(0).replace("e+", "e");
    return String(Number(v.toPrecision(3)));
  }

  function extent(values, log) {
    const xs = values.filter((v) => Number.isFinite(v) && (!log || v > 0));
    if (!xs.length) return log ? [1, 10] : [0, 1];
    let lo = Math.min(...xs);
    let hi = Math.max(...xs);
    if (lo === hi) {
      if (log) {
        lo /= 2;
        hi *= 2;
      } else {
        const pad = Math.abs(lo) * 0.05 || 1;
        lo -= pad;
        hi += pad;
      }
    } else if (!log) {
      const pad = (hi - lo) * 0.04;
      lo -= pad;
      hi += pad;
    } else {
      lo /= 1.15;
      hi *= 1.15;
    }
    return [lo, hi];
  }

  // opts: {series: [{name, color, points: [[x, y] | [x, y, yLow, yHigh]], width, opacity, dash, markers,
  //         title, className}], xLabel, yLabel, xLog, yLog, width, height, diagonal, yRange, legend}
  function lineChart(opts) {
    const W = opts.width || 560;
    const H = opts.height || 300;
    const m = { l: 58, r: 14, t: 12, b: 40 };
    const root = svg("svg", {
      viewBox: `0 0 ${W} ${H}`,
      width: W,
      height: H,
      class: "chart",
      role: "img",
      "aria-label": opts.title || opts.yLabel || "chart",
    });
    const series = (opts.series || []).filter((s) => s.points && s.points.length);
    const xs = [];
    const ys = [];
    for (const s of series) {
      for (const p of s.points) {
        xs.push(p[0]);
        ys.push(p[1]);
        if (p.length > 3) ys.push(p[2], p[3]);
      }
    }
    if (!xs.length) {
      text(root, W / 2, H / 2, opts.empty || "no data yet", { "text-anchor": "middle", class: "muted" });
      return root;
    }
    const [x0, x1] = extent(xs, opts.xLog);
    let [y0, y1] = opts.yRange || extent(ys, opts.yLog);
    if (opts.diagonal) {
      y0 = Math.min(y0, x0);
      y1 = Math.max(y1, x1);
    }
    const tx = (v) => {
      const f = opts.xLog ? Math.log(v / x0) / Math.log(x1 / x0) : (v - x0) / (x1 - x0);
      return m.l + f * (W - m.l - m.r);
    };
    const ty = (v) => {
      const f = opts.yLog ? Math.log(v / y0) / Math.log(y1 / y0) : (v - y0) / (y1 - y0);
      return H - m.b - f * (H - m.t - m.b);
    };
    const clipId = `clip${Math.random().toString(36).slice(2)}`;
    const clip = svg("clipPath", { id: clipId }, svg("defs", {}, root));
    svg("rect", { x: m.l, y: m.t, width: W - m.l - m.r, height: H - m.t - m.b }, clip);
    const axes = svg("g", { class: "axes" }, root);
    for (const v of opts.xLog ? logTicks(x0, x1) : linearTicks(x0, x1, 6)) {
      const x = tx(v);
      svg("line", { x1: x, x2: x, y1: m.t, y2: H - m.b, class: "grid" }, axes);
      text(axes, x, H - m.b + 14, fmt(v), { "text-anchor": "middle" });
    }
    for (const v of opts.yLog ? logTicks(y0, y1) : linearTicks(y0, y1, 5)) {
      const y = ty(v);
      svg("line", { x1: m.l, x2: W - m.r, y1: y, y2: y, class: "grid" }, axes);
      text(axes, m.l - 5, y + 4, fmt(v), { "text-anchor": "end" });
    }
    svg("rect", { x: m.l, y: m.t, width: W - m.l - m.r, height: H - m.t - m.b, class: "frame" }, axes);
    if (opts.xLabel) text(axes, (m.l + W - m.r) / 2, H - 6, opts.xLabel, { "text-anchor": "middle", class: "label" });
    if (opts.yLabel) {
      text(axes, 12, (m.t + H - m.b) / 2, opts.yLabel, {
        "text-anchor": "middle",
        class: "label",
        transform: `rotate(-90 12 ${(m.t + H - m.b) / 2})`,
      });
    }
    const plot = svg("g", { "clip-path": `url(#${clipId})` }, root);
    if (opts.diagonal) {
      const lo = Math.max(x0, y0);
      const hi = Math.min(x1, y1);
      const d = svg("line", { x1: tx(lo), y1: ty(lo), x2: tx(hi), y2: ty(hi), class: "diagonal" }, plot);
      svg("title", {}, d).textContent = opts.diagonal === true ? "y = x" : opts.diagonal;
    }
    // Thin lines first, highlighted ones last (on top).
    const ordered = series.slice().sort((a, b) => (a.width || 1.5) - (b.width || 1.5));
    for (const s of ordered) {
      const g = svg("g", { class: `series ${s.className || ""}`, "data-name": s.name }, plot);
      const pts = s.points.filter(
        (p) => Number.isFinite(p[0]) && Number.isFinite(p[1]) && (!opts.xLog || p[0] > 0) && (!opts.yLog || p[1] > 0)
      );
      if (!pts.length) continue;
      if (pts.length > 1 && s.line !== false) {
        svg(
          "path",
          {
            d: pts.map((p, i) => `${i ? "L" : "M"}${tx(p[0]).toFixed(1)},${ty(p[1]).toFixed(1)}`).join(""),
            fill: "none",
            stroke: s.color,
            "stroke-width": s.width || 1.5,
            "stroke-opacity": s.opacity ?? 1,
            "stroke-dasharray": s.dash || null,
            "stroke-linejoin": "round",
          },
          g
        );
      }
      for (const p of pts) {
        if (p.length > 3 && Number.isFinite(p[2]) && Number.isFinite(p[3])) {
          svg("line", { x1: tx(p[0]), x2: tx(p[0]), y1: ty(p[2]), y2: ty(p[3]), stroke: s.color, "stroke-width": 1 }, g);
        }
        if (s.markers || pts.length === 1) {
          svg("circle", { cx: tx(p[0]), cy: ty(p[1]), r: s.markers === "big" ? 4 : 3, fill: s.color }, g);
        }
      }
      svg("title", {}, g).textContent = s.title || s.name;
    }
    return root;
  }

  // A legend: [{name, color, className}] as a row of swatches (HTML, so it wraps).
  function legend(items) {
    const box = document.createElement("div");
    box.className = "legend";
    for (const it of items) {
      const span = document.createElement("span");
      span.className = `key ${it.className || ""}`;
      const sw = document.createElement("i");
      sw.className = "swatch";
      sw.style.background = it.color; // CSSOM, allowed by the CSP (an attribute would not be)
      span.append(sw, document.createTextNode(it.name));
      box.appendChild(span);
    }
    return box;
  }

  // opts: {rows: [{label, value, color, note, title}], width, valueLabel, format}: horizontal bars from 0.
  function barChart(opts) {
    const rows = opts.rows || [];
    const W = opts.width || 360;
    const rowH = 18;
    const m = { l: 90, r: 70, t: 4, b: 22 };
    const H = m.t + m.b + rowH * Math.max(1, rows.length);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "chart bars", role: "img" });
    const vals = rows.map((r) => r.value).filter((v) => Number.isFinite(v));
    const hi = Math.max(opts.min || 0, ...vals.map(Math.abs), 1e-12);
    const scale = (v) => (Math.abs(v) / hi) * (W - m.l - m.r);
    const fmtv = opts.format || ((v) => (v >= 0 ? "+" : "") + v.toFixed(3));
    rows.forEach((r, i) => {
      const y = m.t + i * rowH;
      const g = svg("g", { class: `bar ${r.className || ""}` }, root);
      text(g, m.l - 6, y + 13, r.label, { "text-anchor": "end" });
      if (Number.isFinite(r.value)) {
        svg("rect", { x: m.l, y: y + 3, width: Math.max(1, scale(r.value)), height: rowH - 6, fill: r.color }, g);
        text(g, m.l + scale(r.value) + 4, y + 13, r.note || fmtv(r.value));
      } else {
        svg("rect", { x: m.l, y: y + 3, width: W - m.l - m.r, height: rowH - 6, class: "hatched" }, g);
        text(g, m.l + 4, y + 13, r.note || "n/a", { class: "on-hatch" });
      }
      svg("title", {}, g).textContent = r.title || `${r.label}: ${r.note || fmtv(r.value)}`;
    });
    svg("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: "zero" }, root);
    if (opts.valueLabel) text(root, (m.l + W - m.r) / 2, H - 6, opts.valueLabel, { "text-anchor": "middle", class: "label" });
    return root;
  }

  global.Charts = { lineChart, barChart, legend, linearTicks, logTicks };
})(typeof window !== "undefined" ? window : globalThis);
