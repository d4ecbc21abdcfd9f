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
    if (out.length > 7) {
      const step = Math.ceil(out.length / 6); // wide ranges (eps: 1e-25..1e-15): labels would overlap
      return out.filter((_, i) => i % step === 0);
    }
    return out.length ? out : [lo, hi];
  }

  // Powers of two: the paper's data multiples sit at 1, 2, 4, 8, 16 (PAPER.md section 2), so its axes are
  // labelled there rather than at 1, 2, 5, 10. At most ~7 labels (every other power on wide ranges).
  function pow2Ticks(lo, hi) {
    const out = [];
    for (let e = Math.floor(Math.log2(lo)); e <= Math.ceil(Math.log2(hi)); e++) {
      const v = Math.pow(2, e);
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) out.push(v);
    }
    if (out.length < 2) return logTicks(lo, hi);
    const step = Math.max(1, Math.ceil(out.length / 7));
    return out.filter((_, i) => i % step === 0);
  }

  // Whether the positive values all sit on powers of two (then the axis is labelled at powers of two).
  function onPowersOfTwo(values) {
    const xs = values.filter((v) => Number.isFinite(v) && v > 0);
    return xs.length > 0 && xs.every((v) => Math.abs(Math.log2(v) - Math.round(Math.log2(v))) < 1e-6);
  }

  // The chart width that fits the screen: the SVG is drawn at the size it is shown (so its 12 px labels stay
  // 12 px on a phone instead of being scaled down with the drawing).
  function fit(width) {
    const avail = (typeof window !== "undefined" ? document.documentElement.clientWidth : 1024) - 44;
    return Math.max(260, Math.min(width, avail));
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
  //         bands: [1, 1.1, ...] (constant-ratio bands y = k x between neighbours), xRange, pow2: "x"|"xy"
  // A point may carry p.meta = {hollow: true, tip: "text"}: hollow = not a measurement (extrapolated).
  function lineChart(opts) {
    const W = fit(opts.width || 560);
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
    const xsOf = []; // the x of each ys entry
    for (const s of series) {
      for (const p of s.points) {
        xs.push(p[0]);
        ys.push(p[1]);
        xsOf.push(p[0]);
        if (p.length > 3) {
          ys.push(p[2], p[3]);
          xsOf.push(p[0], p[0]);
        }
      }
    }
    if (!xs.length) {
      text(root, W / 2, H / 2, opts.empty || "no data yet", { "text-anchor": "middle", class: "muted" });
      return root;
    }
    const [x0, x1] = opts.xRange || extent(xs, opts.xLog);
    // Zoomed: the y range of the points inside the x range.
    const inX = opts.xRange ? ys.filter((_, i) => xsOf[i] >= opts.xRange[0] && xsOf[i] <= opts.xRange[1]) : ys;
    let [y0, y1] = opts.yRange || extent(inX.length ? inX : ys, opts.yLog);
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
    const pow2 = opts.pow2 || "";
    const xTicks = opts.xLog ? (pow2.includes("x") || onPowersOfTwo(xs) ? pow2Ticks(x0, x1) : logTicks(x0, x1)) : linearTicks(x0, x1, W < 420 ? 4 : 6);
    for (const v of xTicks) {
      const x = tx(v);
      svg("line", { x1: x, x2: x, y1: m.t, y2: H - m.b, class: "grid" }, axes);
      text(axes, x, H - m.b + 14, fmt(v), { "text-anchor": "middle" });
    }
    const yTicks = opts.yLog ? (pow2.includes("y") ? pow2Ticks(y0, y1) : logTicks(y0, y1)) : linearTicks(y0, y1, 5);
    for (const v of yTicks) {
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
    if (opts.bands && opts.bands.length > 1) {
      // Bands of constant y / x (the paper's constant-speedup bands): darker = larger ratio.
      const lo = x0;
      const hi = x1;
      const bandG = svg("g", { class: "bands" }, plot);
      for (let i = 0; i + 1 < opts.bands.length; i++) {
        const k0 = opts.bands[i];
        const k1 = opts.bands[i + 1];
        const pts = [];
        for (let j = 0; j <= 24; j++) pts.push(lo * Math.pow(hi / lo, j / 24));
        const d =
          pts.map((x, j) => `${j ? "L" : "M"}${tx(x).toFixed(1)},${ty(k0 * x).toFixed(1)}`).join("") +
          pts.slice().reverse().map((x) => `L${tx(x).toFixed(1)},${ty(k1 * x).toFixed(1)}`).join("") + "Z";
        const band = svg("path", { d, class: `band band-${i}`, "fill-opacity": (0.07 + 0.05 * i).toFixed(2) }, bandG);
        svg("title", {}, band).textContent = `speedup ${k0}–${k1}×`;
      }
    }
    if (opts.diagonal) {
      const lo = Math.max(x0, y0);
      const hi = Math.min(x1, y1);
      const d = svg("line", { x1: tx(lo), y1: ty(lo), x2: tx(hi), y2: ty(hi), class: "diagonal" }, plot);
      svg("title", {}, d).textContent = opts.diagonal === true ? "y = x" : opts.diagonal;
    }
    const hover = [];
    root.chartData = { hover, tx, ty, x0, x1, m, W, H, xLog: !!opts.xLog };
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
        if (s.markers || pts.length === 1 || (p.meta && p.meta.hollow)) {
          const hollow = p.meta && p.meta.hollow;
          svg(
            "circle",
            {
              cx: tx(p[0]),
              cy: ty(p[1]),
              r: s.markers === "big" ? 4 : 3,
              fill: hollow ? "var(--bg, #fff)" : s.color,
              stroke: s.color,
              "stroke-width": hollow ? 1.6 : 0,
              class: hollow ? "hollow" : null,
            },
            g
          );
        }
        hover.push({ sx: tx(p[0]), sy: ty(p[1]), x: p[0], y: p[1], name: s.name, color: s.color, tip: p.meta && p.meta.tip });
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
    const m = { l: opts.labelWidth || 90, r: 70, t: 4, b: 22 };
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

  // A line chart with hover values, drag-to-zoom on x (double-click or "reset" to undo), a log-y toggle and
  // optionally a second x quantity (opts.xAlt = {label, scale: x -> x'}: e.g. tokens instead of steps).
  // Keyboard: every control is a button; arrow keys on the focused chart step the hover through the points.
  function interactive(opts) {
    const box = document.createElement("div");
    box.className = "chart-interactive";
    const bar = document.createElement("div");
    bar.className = "chart-tools";
    const state = { yLog: !!opts.yLog, xRange: null, alt: false, focus: -1 };
    const mkButton = (label, title, onclick) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.title = title;
      b.addEventListener("click", onclick);
      bar.appendChild(b);
      return b;
    };
    const logBtn = mkButton("log y", "logarithmic loss axis", () => {
      state.yLog = !state.yLog;
      draw();
    });
    logBtn.className = "toggle-log";
    let altBtn = null;
    if (opts.xAlt) {
      altBtn = mkButton(opts.xAlt.label, `x axis in ${opts.xAlt.label}`, () => {
        state.alt = !state.alt;
        state.xRange = null;
        draw();
      });
      altBtn.className = "toggle-x";
    }
    const resetBtn = mkButton("reset zoom", "show the whole x range (or double-click the chart)", () => {
      state.xRange = null;
      draw();
    });
    resetBtn.className = "reset-zoom";
    const tip = document.createElement("div");
    tip.className = "chart-tip";
    tip.hidden = true;
    const holder = document.createElement("div");
    holder.className = "chart-holder";
    holder.tabIndex = 0;
    holder.setAttribute("aria-label", `${opts.title || opts.yLabel || "chart"}: arrow keys read the points`);
    box.append(bar, holder, tip);
    let root = null;
    const draw = () => {
      const alt = state.alt && opts.xAlt;
      const series = alt
        ? opts.series.map((s) => ({ ...s, points: s.points.map((p) => Object.assign([opts.xAlt.scale(p[0], s), ...p.slice(1)], { meta: p.meta })) }))
        : opts.series;
      root = lineChart({ ...opts, series, yLog: state.yLog, xRange: state.xRange, xLabel: alt ? opts.xAlt.label : opts.xLabel });
      holder.replaceChildren(root);
      logBtn.setAttribute("aria-pressed", String(state.yLog));
      if (altBtn) altBtn.setAttribute("aria-pressed", String(state.alt));
      resetBtn.disabled = !state.xRange;
      box.dataset.ylog = state.yLog ? "1" : "0";
      box.dataset.zoomed = state.xRange ? "1" : "0";
      tip.hidden = true;
    };
    const toData = (sx) => {
      const c = root.chartData;
      const f = (sx - c.m.l) / (c.W - c.m.l - c.m.r);
      return c.xLog ? c.x0 * Math.pow(c.x1 / c.x0, f) : c.x0 + f * (c.x1 - c.x0);
    };
    const local = (ev) => {
      const r = root.getBoundingClientRect();
      return [((ev.clientX - r.left) * root.chartData.W) / r.width, ((ev.clientY - r.top) * root.chartData.H) / r.height];
    };
    const show = (p) => {
      if (!p) {
        tip.hidden = true;
        return;
      }
      const r = root.getBoundingClientRect();
      const b = box.getBoundingClientRect();
      tip.hidden = false;
      tip.textContent = `${p.name}: ${opts.xFormat ? opts.xFormat(p.x) : fmt(p.x)}, ${opts.yFormat ? opts.yFormat(p.y) : fmt(p.y)}${p.tip ? ` (${p.tip})` : ""}`;
      const px = r.left - b.left + (p.sx * r.width) / root.chartData.W;
      tip.style.left = `${Math.max(0, Math.min(px + 8, b.width - 220))}px`;
      tip.style.top = `${r.top - b.top + (p.sy * r.height) / root.chartData.H + 8}px`;
    };
    let drag = null;
    holder.addEventListener("mousemove", (ev) => {
      if (!root || !root.chartData) return;
      const [x, y] = local(ev);
      if (drag !== null) return;
      let best = null;
      let dist = 400; // within 20 px
      for (const p of root.chartData.hover) {
        const d = (p.sx - x) ** 2 + (p.sy - y) ** 2;
        if (d < dist) {
          dist = d;
          best = p;
        }
      }
      show(best);
    });
    holder.addEventListener("mouseleave", () => show(null));
    holder.addEventListener("mousedown", (ev) => {
      if (root && root.chartData) drag = local(ev)[0];
    });
    holder.addEventListener("mouseup", (ev) => {
      if (drag === null || !root.chartData) return;
      const end = local(ev)[0];
      const a = Math.min(drag, end);
      const b = Math.max(drag, end);
      drag = null;
      if (b - a < 8) return; // a click, not a drag
      state.xRange = [toData(a), toData(b)];
      draw();
    });
    holder.addEventListener("dblclick", () => {
      state.xRange = null;
      draw();
    });
    holder.addEventListener("keydown", (ev) => {
      const pts = root && root.chartData ? root.chartData.hover : [];
      if (!pts.length || (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft")) return;
      ev.preventDefault();
      state.focus = (state.focus + (ev.key === "ArrowRight" ? 1 : pts.length - 1)) % pts.length;
      show(pts[state.focus]);
    });
    draw();
    box.zoomTo = (lo, hi) => {
      state.xRange = [lo, hi];
      draw();
    };
    return box;
  }

  // A colour ramp for a value in [0, 1]: cividis's ends and middle (Nuñez et al. 2018, colour-blind safe),
  // low = dark blue, high = yellow.
  function ramp(f) {
    const stops = [[0, 32, 77], [124, 123, 120], [255, 234, 70]];
    const t = Math.max(0, Math.min(1, f)) * 2;
    const i = Math.min(1, Math.floor(t));
    const u = t - i;
    const c = stops[i].map((a, k) => Math.round(a + u * (stops[i + 1][k] - a)));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  // Parallel coordinates: opts {axes: [{name, log, values?: [categorical labels]}], lines: [{values: [...],
  // color, title, className, width}], width, height}. One vertical axis per entry; numbers placed linearly
  // (or on log scale), strings at evenly spaced categories.
  function parallel(opts) {
    const W = fit(opts.width || 720);
    const H = opts.height || 300;
    const m = { l: 30, r: 40, t: 24, b: 28 };
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "chart parallel", role: "img", "aria-label": opts.title || "parallel coordinates" });
    const axes = opts.axes || [];
    const lines = opts.lines || [];
    if (!axes.length || !lines.length) {
      text(root, W / 2, H / 2, opts.empty || "no finished trials", { "text-anchor": "middle", class: "muted" });
      return root;
    }
    const step = axes.length > 1 ? (W - m.l - m.r) / (axes.length - 1) : 0;
    const scales = axes.map((a, i) => {
      const vals = lines.map((l) => l.values[i]).filter((v) => v !== null && v !== undefined);
      const numeric = vals.every((v) => typeof v === "number" && Number.isFinite(v));
      if (!numeric) {
        const cats = [...new Set(vals.map(String))].sort();
        return { cats, f: (v) => (cats.length > 1 ? cats.indexOf(String(v)) / (cats.length - 1) : 0.5), ticks: cats.map((c) => [c, cats.length > 1 ? cats.indexOf(c) / (cats.length - 1) : 0.5]) };
      }
      const log = a.log && vals.every((v) => v > 0);
      const [lo, hi] = extent(vals, log);
      const f = (v) => (log ? Math.log(v / lo) / Math.log(hi / lo) : (v - lo) / (hi - lo));
      const ticks = (log ? logTicks(lo, hi) : linearTicks(lo, hi, 4)).map((v) => [fmt(v), f(v)]);
      return { f, ticks };
    });
    const X = (i) => m.l + i * step;
    const Y = (f) => H - m.b - f * (H - m.t - m.b);
    const g = svg("g", { class: "lines" }, root);
    for (const l of lines) {
      const pts = [];
      l.values.forEach((v, i) => {
        if (v !== null && v !== undefined && (typeof v !== "number" || Number.isFinite(v))) pts.push(`${X(i).toFixed(1)},${Y(scales[i].f(v)).toFixed(1)}`);
      });
      if (pts.length < 2) continue;
      const path = svg("polyline", { points: pts.join(" "), fill: "none", stroke: l.color, "stroke-width": l.width || 1.2, "stroke-opacity": l.opacity ?? 0.7, class: l.className || null }, g);
      if (l.title) svg("title", {}, path).textContent = l.title;
    }
    const ax = svg("g", { class: "axes" }, root);
    axes.forEach((a, i) => {
      svg("line", { x1: X(i), x2: X(i), y1: m.t, y2: H - m.b, class: "frame" }, ax);
      text(ax, X(i), m.t - 8, a.name, { "text-anchor": i === 0 ? "start" : i === axes.length - 1 ? "end" : "middle", class: "label" });
      for (const [label, f] of scales[i].ticks.slice(0, 8)) {
        text(ax, X(i) + 4, Y(f) + 4, label, { class: "tick" });
      }
    });
    return root;
  }

  global.Charts = { lineChart, barChart, legend, interactive, parallel, ramp, linearTicks, logTicks, pow2Ticks, fit, fmt };
})(typeof window !== "undefined" ? window : globalThis);
