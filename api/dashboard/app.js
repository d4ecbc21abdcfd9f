// The sweep-service dashboard: one page, views chosen by the URL fragment, every piece of data from the REST
// API (with the bearer token when the user gave one). No framework and no build step: plain DOM.
//
// Views: #/sweeps (list), #/submit (spec form), #/best (best per scale over all sweeps), #/sweeps/ID
// (overview: per-cell progress, live curves), #/sweeps/ID/best (best per scale with speedups),
// #/sweeps/ID/speedup (D_eff vs D and sensitivity bars), #/sweeps/ID/trials (paginated trials),
// #/sweeps/ID/cells/KEY (one cell: best config and near-ties, coordinate-descent path, curves), #/trials/ID.
//
// Load budget: a sweep page never lists all of a sweep's trials; it reads the sweep (cells with their
// bests), the running trials and the latest finished page, and fetches curves only for those (a capped
// number). A cell page reads that cell's trials only.
(function () {
  "use strict";

  const TOKEN_KEY = "sweep-service.token";
  const PAGE = 50; // the API's default page size (api/deps.py DEFAULT_LIMIT)
  const MAX_PAGE = 500; // the API's largest page (api/deps.py MAX_LIMIT)
  const CURVES_RUNNING = 8; // running trials drawn on a sweep page
  const CURVES_RECENT = 8; // finished trials drawn besides the cells' bests (those seen finishing, or the latest)
  const CURVES_CELLS = 40; // cell bests drawn on a sweep page
  const CURVES_CELL_PAGE = 40; // trials drawn on a cell page (best, near-ties, running, then lowest loss)
  const CELL_TRIALS_CAP = 5000; // trials read for one cell page (10 pages of 500)
  const REFRESH_MS = 2000; // least time between two curve refreshes of a live page
  const POLL_MS = 3000; // polling period where no event stream is used (lists) or when the stream drops
  const FINISHED = new Set(["completed", "failed", "cancelled"]);
  const FINISHED_TRIAL = new Set(["completed", "diverged", "failed", "cancelled"]);
  // Colours: sweep_service/palette.py, served as /ui/palette.js (the report uses the same table).
  const NEUTRAL = { tie: "#E69F00", running: "#0072B2", other: "#9a9a9a" };

  const state = { token: localStorage.getItem(TOKEN_KEY) || "", view: null, curves: new Map() };

  // ---- DOM helpers ------------------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const $ = (sel, root) => (root || document).querySelector(sel);
  const colorOf = (name) => window.SweepPalette.colorOf(name);
  const fmtLoss = (v, digits) => (v === null || v === undefined || !Number.isFinite(v) ? "—" : v.toFixed(digits || 4));
  // Decimals at which every two distinct neighbouring values print differently (3 to 6): the same rule as
  // sweep_service/numfmt.py decimals_for, so a table never shows 2.9 beside 2.899.
  const decimalsFor = (values) => {
    const xs = [...new Set(values.filter((v) => typeof v === "number" && Number.isFinite(v)))];
    for (let d = 3; d <= 6; d++) if (new Set(xs.map((x) => x.toFixed(d))).size === xs.length) return d;
    return 6;
  };
  const fmtNum = (v) => {
    if (v === null || v === undefined) return "—";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return String(v);
    return Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5 ? v.toExponential(2) : String(Number(v.toPrecision(4)));
  };
  const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
  const fmtDuration = (s) => {
    if (s === null || s === undefined) return "—";
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  };
  const cellHref = (sweepId, key) => `#/sweeps/${sweepId}/cells/${encodeURIComponent(key)}`;
  const finishedCount = (t) => t.completed + t.diverged + t.failed + t.cancelled;

  // A legend only for a chart that has something drawn (issue 17: legends on empty charts).
  function legendOf(series, items) {
    return series.some((s) => s.points && s.points.length) ? window.Charts.legend(items) : null;
  }

  function badge(status) {
    return h("span", { class: `badge s-${status}`, text: status });
  }

  function progressBar(t, budget) {
    const done = finishedCount(t);
    const total = Math.max(t.total, budget || 0);
    const pct = total ? (100 * done) / total : 0;
    const bar = h("span", { class: "bar-fill" });
    bar.style.width = `${pct.toFixed(1)}%`; // CSSOM: allowed by the CSP
    const run = h("span", { class: "bar-run" });
    run.style.width = `${total ? ((100 * t.running) / total).toFixed(1) : 0}%`;
    const label = `${done}/${t.total} finished${t.running ? `, ${t.running} running` : ""}${
      t.pending ? `, ${t.pending} pending` : ""
    }${t.diverged ? `, ${t.diverged} diverged` : ""}${t.failed ? `, ${t.failed} failed` : ""}`;
    return h(
      "span",
      { class: "progress", title: label, dataset: { done: String(done), total: String(t.total) } },
      h("span", { class: "bar" }, bar, run),
      h("span", { class: "progress-label", text: label })
    );
  }

  // The near-tie configs other than the best itself (the engine's list includes the best: every config
  // within the tolerance of the best loss, sweep_service/coordinate_descent.py).
  function otherTies(best, ties) {
    if (!best) return ties || [];
    return (ties || []).filter((c) => Object.keys({ ...best, ...c }).some((k) => !sameValue(c[k], best[k])));
  }

  function configText(config, keys) {
    if (!config) return "—";
    const names = keys && keys.length ? keys.filter((k) => k in config) : Object.keys(config);
    return names.map((k) => `${k}=${fmtNum(config[k])}`).join("  ");
  }

  // ---- the API ----------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, detail) {
      super(typeof detail === "string" ? detail : `HTTP ${status}`);
      this.status = status;
      this.detail = detail;
    }
  }

  function headers(extra) {
    const hs = { Accept: "application/json", ...(extra || {}) };
    if (state.token) hs.Authorization = `Bearer ${state.token}`;
    return hs;
  }

  async function api(path, opts) {
    const o = opts || {};
    const hs = headers(o.headers);
    let body;
    if (o.body !== undefined) {
      hs["Content-Type"] = "application/json";
      body = JSON.stringify(o.body);
    }
    const res = await fetch(path, { method: o.method || "GET", headers: hs, body, signal: o.signal, cache: "no-store" });
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = text;
    }
    if (res.status === 401) {
      needToken();
      throw new ApiError(401, data && data.detail);
    }
    // Errors are RFC 9457 problems (api/problems.py); a 422's `errors` lists each bad field.
    if (!res.ok) {
      const detail = data && Array.isArray(data.errors) ? data.errors : data && data.detail !== undefined ? data.detail : data;
      throw new ApiError(res.status, detail);
    }
    return data;
  }

  // An endpoint another part of the service may not offer (404: not there, or nothing for this sweep).
  async function optional(path, signal) {
    try {
      return { data: await api(path, { signal }) };
    } catch (e) {
      if (e instanceof ApiError && (e.status === 404 || e.status === 422 || e.status === 409)) {
        return { missing: typeof e.detail === "string" ? e.detail : `HTTP ${e.status}` };
      }
      throw e;
    }
  }

  // Server-sent events over fetch (EventSource cannot send an Authorization header). Resolves on `end`.
  async function events(path, signal, onEvent) {
    const res = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal, cache: "no-store" });
    if (res.status === 401) {
      needToken();
      throw new ApiError(401, "token required");
    }
    if (!res.ok || !res.body) throw new ApiError(res.status, "no event stream");
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (!data.length) continue; // a keep-alive comment
        onEvent(name, JSON.parse(data.join("\n")));
        if (name === "end") return true;
      }
    }
  }

  // Follow a sweep: the event stream, and polling whenever the stream is unavailable. Calls onProgress with
  // the SweepProgress JSON; stops when the sweep finishes or the view is left.
  async function follow(ctx, sweepId, onProgress) {
    while (!ctx.signal.aborted) {
      try {
        const ended = await events(`/sweeps/${sweepId}/events`, ctx.signal, (name, data) => {
          if (name === "progress") onProgress(data);
        });
        if (ended) return;
      } catch (e) {
        if (ctx.signal.aborted || (e instanceof ApiError && e.status === 401)) return;
      }
      await ctx.sleep(POLL_MS);
      if (ctx.signal.aborted) return;
      try {
        const now = await api(`/sweeps/${sweepId}`, { signal: ctx.signal });
        onProgress(now);
        if (FINISHED.has(now.status)) return;
      } catch (e) {
        if (ctx.signal.aborted) return;
      }
    }
  }

  // Curves, cached: a finished trial's curve never changes; a running one is fetched again.
  async function curvesOf(ids, signal, statusById) {
    const out = new Map();
    await Promise.all(
      ids.map(async (id) => {
        const cached = state.curves.get(id);
        if (cached && FINISHED_TRIAL.has(cached.status) && cached.status === (statusById.get(id) || cached.status)) {
          out.set(id, cached);
          return;
        }
        try {
          const m = await api(`/trials/${id}/metrics`, { signal });
          state.curves.set(id, m);
          out.set(id, m);
        } catch (e) {
          if (e.name === "AbortError" || (e instanceof ApiError && e.status === 401)) throw e;
        }
      })
    );
    return out;
  }

  // ---- token ------------------------------------------------------------------------------------------
  function showTokenState() {
    $("#token-state").textContent = state.token ? "token set" : "";
    $("#token-input").value = "";
  }

  function setToken(value) {
    state.token = value.trim();
    if (state.token) localStorage.setItem(TOKEN_KEY, state.token);
    else localStorage.removeItem(TOKEN_KEY);
    state.curves.clear();
    showTokenState();
  }

  function needToken() {
    const prompt = $("#auth-prompt");
    $("#auth-message").textContent = state.token
      ? "The server refused the saved token. Paste a valid one from SWEEP_API_TOKEN (or SWEEP_API_READ_TOKENS)."
      : "Paste a token from SWEEP_API_TOKEN (or a read-only one from SWEEP_API_READ_TOKENS). " +
        "It is kept in this browser only (localStorage).";
    prompt.hidden = false;
    $("#auth-token").focus();
  }

  // ---- routing ----------------------------------------------------------------------------------------
  const ROUTES = [
    [/^#?\/?$/, () => viewSweeps],
    [/^#\/sweeps\/?(\?.*)?$/, () => viewSweeps],
    [/^#\/submit$/, () => viewSubmit],
    [/^#\/best$/, () => viewBestOverall],
    [/^#\/sweeps\/(\d+)\/cells\/(.+)$/, () => viewCell],
    [/^#\/sweeps\/(\d+)(?:\/(overview|best|speedup|explore|trials))?(\?.*)?$/, () => viewSweep],
    [/^#\/trials\/(\d+)$/, () => viewTrial],
    [/^#\/compare(\?.*)?$/, () => viewCompare],
  ];

  function makeContext() {
    const controller = new AbortController();
    const timers = new Set();
    return {
      signal: controller.signal,
      abort() {
        controller.abort();
        timers.forEach(clearTimeout);
      },
      sleep(ms) {
        return new Promise((resolve) => {
          const t = setTimeout(() => {
            timers.delete(t);
            resolve();
          }, ms);
          timers.add(t);
        });
      },
      every(fn, ms) {
        const tick = async () => {
          while (!controller.signal.aborted) {
            await this.sleep(ms);
            if (controller.signal.aborted) return;
            try {
              await fn();
            } catch (e) {
              /* the next tick tries again; a 401 shows the token prompt */
            }
          }
        };
        tick();
      },
    };
  }

  function route() {
    if (state.view) state.view.abort();
    const hash = location.hash || "#/sweeps";
    const main = $("#main");
    let view = null;
    let match = null;
    for (const [re, get] of ROUTES) {
      match = re.exec(hash);
      if (match) {
        view = get();
        break;
      }
    }
    const nav = hash.startsWith("#/submit") ? "submit" : hash.startsWith("#/best") ? "best" : hash.startsWith("#/compare") ? "compare" : "sweeps";
    document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === nav));
    const ctx = makeContext();
    state.view = ctx;
    if (!view) {
      render(main, "not-found", h("p", { text: `No such page: ${hash}` }));
      return;
    }
    const query = new URLSearchParams((hash.split("?")[1] || "").trim());
    view(ctx, main, match, query).catch((e) => {
      if (ctx.signal.aborted || e.name === "AbortError") return;
      showError(main, e);
    });
  }

  function render(main, name, ...children) {
    main.dataset.view = name;
    main.dataset.ready = "0";
    main.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  }

  function ready(main) {
    main.dataset.ready = "1";
  }

  // fn at most once every `ms`, and always once more after the last call (so the final state is drawn).
  function throttled(ctx, fn, ms) {
    let last = Date.now();
    let running = false;
    let again = false;
    const run = async () => {
      running = true;
      do {
        again = false;
        const wait = Math.max(0, last + ms - Date.now());
        if (wait) await ctx.sleep(wait);
        if (ctx.signal.aborted) break;
        last = Date.now();
        try {
          await fn();
        } catch (e) {
          /* the next call tries again; a 401 has shown the token prompt */
        }
      } while (again && !ctx.signal.aborted);
      running = false;
    };
    return () => {
      if (running) again = true;
      else run();
    };
  }

  function showError(main, e) {
    if (e instanceof ApiError && e.status === 401) {
      render(main, "auth", h("p", { class: "muted", text: "Waiting for an API token (see the prompt above)." }));
      return;
    }
    const detail = e instanceof ApiError ? (typeof e.detail === "string" ? e.detail : JSON.stringify(e.detail)) : e;
    render(
      main,
      "error",
      h("div", { class: "error-box" }, h("strong", { text: e instanceof ApiError ? `HTTP ${e.status}` : "Error" }), " ", String(detail))
    );
  }

  function markRendered(name) {
    // The bench (bench/dashboard_load.py) reads this mark: the time to a fully drawn view.
    if (!performance.getEntriesByName("rendered").length) performance.mark("rendered", { detail: name });
    document.body.dataset.rendered = name;
  }

  // ---- sweeps list ------------------------------------------------------------------------------------
  async function viewSweeps(ctx, main, _m, query) {
    const page = Math.max(0, Number(query.get("page") || 0) | 0);
    const status = query.get("status") || "";
    const table = h("div", { id: "sweeps-table" });
    const filter = h(
      "select",
      {
        id: "status-filter",
        onchange: (ev) => {
          location.hash = `#/sweeps?status=${ev.target.value}`;
        },
      },
      ["", "queued", "running", "completed", "failed", "cancelled"].map((s) =>
        h("option", { value: s, selected: s === status, text: s || "any status" })
      )
    );
    render(main, "sweeps", h("div", { class: "row" }, h("h1", { text: "Sweeps" }), filter), table);
    const load = async () => {
      const params = new URLSearchParams({ limit: String(PAGE), offset: String(page * PAGE) });
      if (status) params.set("status", status);
      const data = await api(`/sweeps?${params}`, { signal: ctx.signal });
      table.replaceChildren(sweepsTable(data, page, status));
      ready(main);
      markRendered("sweeps");
    };
    await load();
    ctx.every(load, POLL_MS); // the list polls: sweeps appear and progress without a reload
  }

  function sweepsTable(data, page, status) {
    if (!data.items.length && status) {
      // A filter with no match is not an empty service (issue 17: "No sweeps yet" with sweeps present).
      return h("p", { class: "empty", id: "no-match" }, `No ${status} sweeps. `, h("a", { href: "#/sweeps", text: "Show every sweep" }), ".");
    }
    if (!data.items.length) {
      return h("p", { class: "empty" }, "No sweeps yet. ", h("a", { href: "#/submit", text: "Submit one" }), ".");
    }
    const rows = data.items.map((s) =>
      h(
        "tr",
        { dataset: { sweep: String(s.id), status: s.status } },
        h("td", {}, h("a", { href: `#/sweeps/${s.id}`, text: `#${s.id}` })),
        h("td", {}, h("a", { href: `#/sweeps/${s.id}`, text: s.name }), s.imported ? h("span", { class: "tag", text: "imported" }) : null),
        h("td", {}, badge(s.status)),
        h("td", {}, s.trials.total ? progressBar(s.trials) : h("span", { class: "muted", text: "no trials yet" })),
        h("td", { text: fmtTime(s.created_at) }),
        h("td", { text: fmtTime(s.finished_at) }),
        h("td", { class: "error-text", text: s.error || "" })
      )
    );
    const base = `#/sweeps?${status ? `status=${status}&` : ""}page=`;
    const pages = Math.ceil(data.total / PAGE);
    return h(
      "div",
      {},
      h(
        "table",
        { class: "grid-table" },
        h("thead", {}, h("tr", {}, ["ID", "Name", "Status", "Progress", "Created", "Finished", ""].map((t) => h("th", { text: t })))),
        h("tbody", {}, rows)
      ),
      pages > 1
        ? h(
            "div",
            { class: "pager" },
            page > 0 ? h("a", { href: base + (page - 1), text: "← newer" }) : null,
            h("span", { text: ` page ${page + 1} of ${pages} (${data.total} sweeps) ` }),
            page + 1 < pages ? h("a", { href: base + (page + 1), text: "older →" }) : null
          )
        : null
    );
  }

  // ---- submit -----------------------------------------------------------------------------------------
  const EXAMPLE = `# A sweep spec, YAML or JSON (the same document as \`sweep-service run SPEC\`).
name: my-sweep
optimizers: [adamw, muon]
scales: [tiny-130k]
chinchilla: [0.1]
search:
  adamw:
    tune: [lr, wd]
    grid: {lr: [6.0e-3, 1.2e-2, 2.4e-2], wd: [0.0, 0.1, 0.2]}
    baseline: {lr: 1.2e-2, wd: 0.1}
strategy: coordinate_descent
budget: 12
seeds: [0]
resources: {cpu: 1, gpu: 0}
max_concurrent: 2
data: builtin
`;

  async function viewSubmit(ctx, main) {
    const saved = sessionStorage.getItem("sweep-service.draft");
    const area = h("textarea", { id: "spec-text", wrap: "off", spellcheck: "false", "aria-label": "sweep spec" });
    area.value = saved !== null ? saved : EXAMPLE;
    const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
    const notes = h("div", { class: "notes", id: "spec-notes" });
    const list = h("ul", { class: "errors", id: "spec-errors" });
    const status = h("p", { id: "submit-status", class: "muted" });
    const button = h("button", { type: "submit", id: "submit-spec", text: "Submit sweep" });
    let errors = [];
    const lineHeight = () => parseFloat(getComputedStyle(area).lineHeight) || 18;
    const drawGutter = () => {
      const n = area.value.split("\n").length;
      const bad = new Set(errors.map((e) => e.line).filter(Boolean));
      gutter.replaceChildren(...Array.from({ length: n }, (_, i) => h("div", { class: bad.has(i + 1) ? "ln err" : "ln", text: String(i + 1) })));
      gutter.scrollTop = area.scrollTop;
    };
    const drawNotes = () => {
      const lh = lineHeight();
      const pad = parseFloat(getComputedStyle(area).paddingTop) || 0;
      const used = new Map();
      notes.replaceChildren(
        ...errors
          .filter((e) => e.line)
          .map((e) => {
            const k = used.get(e.line) || 0;
            used.set(e.line, k + 1);
            const note = h(
              "div",
              { class: "field-error", dataset: { field: e.field, line: String(e.line) }, title: e.msg },
              h("b", { text: e.field }),
              " ",
              e.msg
            );
            note.style.top = `${pad + (e.line - 1) * lh - area.scrollTop + k * lh}px`;
            return note;
          })
      );
      list.replaceChildren(
        ...errors.map((e) =>
          h(
            "li",
            { class: "field-error-item", dataset: { field: e.field } },
            e.line ? h("a", { href: "#", class: "goto", text: `line ${e.line}`, onclick: (ev) => gotoLine(ev, e.line) }) : null,
            e.line ? " · " : null,
            h("b", { text: e.field }),
            ": ",
            e.msg
          )
        )
      );
    };
    const gotoLine = (ev, line) => {
      ev.preventDefault();
      const lines = area.value.split("\n");
      const start = lines.slice(0, line - 1).reduce((a, l) => a + l.length + 1, 0);
      area.focus();
      area.setSelectionRange(start, start + (lines[line - 1] || "").length);
      area.scrollTop = Math.max(0, (line - 3) * lineHeight());
    };
    const setErrors = (list_) => {
      errors = list_;
      drawGutter();
      drawNotes();
      main.dataset.errors = String(errors.length);
    };
    let version = 0; // bumped by every edit: an answer about an older text is not shown beside the new one
    area.addEventListener("input", () => {
      version += 1;
      sessionStorage.setItem("sweep-service.draft", area.value);
      // The errors were about the text before this edit: they go (the next submit checks again).
      if (errors.length) {
        setErrors([]);
        status.textContent = "Edited: submit again to check.";
      } else drawGutter();
    });
    area.addEventListener("scroll", () => {
      gutter.scrollTop = area.scrollTop;
      drawNotes();
    });
    const form = h(
      "form",
      {
        id: "submit-form",
        onsubmit: async (ev) => {
          ev.preventDefault();
          status.textContent = "";
          let parsed;
          try {
            parsed = window.SweepYaml.parse(area.value);
          } catch (e) {
            setErrors([{ field: "spec", line: e.line || 1, msg: e.message.replace(/^line \d+: /, "") }]);
            return;
          }
          if (!parsed.value || typeof parsed.value !== "object" || Array.isArray(parsed.value)) {
            setErrors([{ field: "spec", line: 1, msg: "a sweep spec is a mapping (name, optimizers, scales, ...)" }]);
            return;
          }
          button.disabled = true;
          setErrors([]); // the previous answer's errors are not about this submission
          status.textContent = "Submitting…";
          const sent = version;
          try {
            const key = window.crypto && crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
            const sweep = await api("/sweeps", { method: "POST", body: parsed.value, headers: { "Idempotency-Key": key } });
            setErrors([]);
            sessionStorage.removeItem("sweep-service.draft");
            location.hash = `#/sweeps/${sweep.id}`;
          } catch (e) {
            status.textContent = "";
            if (sent !== version) {
              status.textContent = "The spec was edited while it was being checked: submit again.";
            } else if (e instanceof ApiError && e.status === 422 && Array.isArray(e.detail)) {
              setErrors(
                e.detail.map((d) => {
                  const loc = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body") : [];
                  const field = d.field || loc.join(".") || "spec";
                  const line = window.SweepYaml.lineOf(parsed.lines, field) || (field === "spec" ? 1 : null);
                  return { field, line, msg: d.message || d.msg || String(d) };
                })
              );
              status.textContent = `The API refused the spec (${e.detail.length} problem${e.detail.length > 1 ? "s" : ""}).`;
            } else if (e instanceof ApiError && e.status === 403) {
              status.textContent = "This token is read-only: submitting needs a token from SWEEP_API_TOKEN.";
            } else if (e instanceof ApiError) {
              status.textContent = `HTTP ${e.status}: ${typeof e.detail === "string" ? e.detail : JSON.stringify(e.detail)}`;
            } else {
              status.textContent = String(e);
            }
          } finally {
            button.disabled = false;
          }
        },
      },
      h("div", { class: "editor" }, gutter, area, notes),
      list,
      h(
        "div",
        { class: "row" },
        button,
        h("button", { type: "button", text: "Reset to the example", onclick: () => {
          area.value = EXAMPLE;
          sessionStorage.removeItem("sweep-service.draft");
          setErrors([]);
        } }),
        status
      )
    );
    render(
      main,
      "submit",
      h("h1", { text: "Submit a sweep" }),
      h(
        "p",
        { class: "muted" },
        "YAML or JSON. The API validates it: each problem is shown next to the line of the field it names. Fields: ",
        "name, optimizers, scales, chinchilla, cells, search, strategy, tolerance, budget, seeds, resources, ",
        "max_concurrent, divergence, eval_every, data."
      ),
      form
    );
    setErrors([]);
    ready(main);
    markRendered("submit");
  }

  // ---- one sweep --------------------------------------------------------------------------------------
  function sweepHeader(detail, tab) {
    const t = detail.trials;
    const cancel =
      detail.status === "queued" || detail.status === "running"
        ? h("button", {
            type: "button",
            id: "cancel-sweep",
            text: "Cancel sweep",
            onclick: async (ev) => {
              if (!confirm(`Cancel sweep #${detail.id}? Its running trials stop.`)) return;
              ev.target.disabled = true;
              try {
                await api(`/sweeps/${detail.id}/cancel`, { method: "POST" });
              } catch (e) {
                alert(e.message);
              }
            },
          })
        : null;
    const tabs = [
      ["overview", "Overview"],
      ["best", "Best per scale"],
      ["speedup", "Speedup & sensitivity"],
      ["explore", "Explore"],
      ["trials", "Trials"],
    ];
    return h(
      "div",
      { id: "sweep-header" },
      h("div", { class: "row" }, h("h1", {}, `#${detail.id} ${detail.name} `, badge(detail.status)), cancel),
      h(
        "div",
        { class: "facts" },
        h("div", {}, h("span", { class: "k", text: "progress" }), progressBar(t)),
        h("div", {}, h("span", { class: "k", text: "compute" }), `${detail.device_hours.toFixed(3)} device-hours`),
        h("div", {}, h("span", { class: "k", text: "time left" }), FINISHED.has(detail.status) ? "—" : fmtDuration(detail.eta_seconds)),
        h("div", {}, h("span", { class: "k", text: "concurrency" }), String(detail.max_concurrent)),
        h("div", {}, h("span", { class: "k", text: "started" }), fmtTime(detail.started_at)),
        h("div", {}, exportLinks(detail.id)),
        detail.best
          ? h(
              "div",
              { id: "sweep-best" },
              h("span", { class: "k", text: "best so far" }),
              h("a", { href: cellHref(detail.id, detail.best.cell), text: detail.best.cell }),
              ` ${fmtLoss(detail.best.loss)}`
            )
          : null
      ),
      detail.error ? h("div", { class: "error-box", text: detail.error }) : null,
      h(
        "nav",
        { class: "tabs" },
        tabs.map(([k, label]) =>
          h("a", { href: `#/sweeps/${detail.id}${k === "overview" ? "" : `/${k}`}`, class: k === tab ? "active" : "", text: label })
        )
      )
    );
  }

  async function viewSweep(ctx, main, match, query) {
    const id = Number(match[1]);
    const tab = match[2] || "overview";
    // The overview's running trials are asked for with the sweep itself, not after it (one round trip less).
    const early = tab === "overview" ? api(runningUrl(id), { signal: ctx.signal }) : null;
    if (early) early.catch(() => {}); // awaited by the tab; a failure there is reported there
    let detail = await api(`/sweeps/${id}`, { signal: ctx.signal });
    const header = h("div");
    const body = h("div", { id: "tab-body" });
    render(main, `sweep-${tab}`, header, body);
    main.dataset.sweep = String(id);
    header.replaceChildren(sweepHeader(detail, tab));
    const tabView = { overview: tabOverview, best: tabBest, speedup: tabSpeedup, explore: tabExplore, trials: tabTrials }[tab];
    const update = await tabView(ctx, body, detail, query, early);
    ready(main);
    markRendered(`sweep-${tab}`);
    if (!FINISHED.has(detail.status)) {
      follow(ctx, id, (progress) => {
        detail = { ...detail, ...progress };
        main.dataset.status = detail.status;
        header.replaceChildren(sweepHeader(detail, tab));
        if (update) update(detail);
      });
    }
    main.dataset.status = detail.status;
  }

  function cellsTable(detail) {
    const budget = detail.spec && Number.isInteger(detail.spec.budget) ? detail.spec.budget : null;
    const seeds = detail.spec && Array.isArray(detail.spec.seeds) ? detail.spec.seeds.length : 1;
    return h(
      "table",
      { class: "grid-table", id: "cells-table" },
      h(
        "thead",
        {},
        h("tr", {}, ["Cell", "Status", "Round", "Progress", "Best loss", "Best config", "Near-ties"].map((t) => h("th", { text: t })))
      ),
      h(
        "tbody",
        {},
        detail.cells.map((c) =>
          h(
            "tr",
            { dataset: { cell: c.key, status: c.status } },
            h("td", {}, h("i", { class: "dot", dataset: { color: colorOf(c.optimizer) } }), h("a", { href: cellHref(detail.id, c.key), text: c.key })),
            h("td", {}, badge(c.status)),
            h("td", { text: String(c.round) }),
            h("td", {}, progressBar(c.trials, budget ? budget * seeds : 0)),
            h("td", { class: "num", text: fmtLoss(c.best_loss) }),
            h("td", { class: "config", text: configText(c.best_config) }),
            h("td", { class: "num", text: String(otherTies(c.best_config, c.near_ties).length) })
          )
        )
      )
    );
  }

  function paintDots(root) {
    root.querySelectorAll("i.dot[data-color]:not([data-painted])").forEach((d) => {
      d.dataset.painted = "1";
      d.style.background = d.dataset.color;
    });
  }

  // Trials whose curves a sweep page draws: each cell's best, the running ones, the ones seen running on this
  // page that have finished since, and (when nothing runs) the latest finished. Each curve is one request, so
  // their number is capped: the page must draw in under a second with 10,000 trials (bench/dashboard_load.py).
  const runningUrl = (id) => `/sweeps/${id}/trials?status=running&limit=${CURVES_RUNNING}`;

  async function overviewTrials(ctx, detail, runningPromise, finishedHere) {
    const sig = ctx.signal;
    const r = await (runningPromise || api(runningUrl(detail.id), { signal: sig }));
    const byId = new Map();
    for (const t of finishedHere.values()) byId.set(t.id, t);
    if (!r.items.length && !finishedHere.size && detail.trials.completed) {
      const offset = Math.max(0, detail.trials.completed - CURVES_RECENT);
      const f = await api(`/sweeps/${detail.id}/trials?status=completed&limit=${CURVES_RECENT}&offset=${offset}`, { signal: sig });
      for (const t of f.items) byId.set(t.id, t);
    }
    for (const t of r.items) byId.set(t.id, t);
    const best = new Set();
    for (const c of detail.cells.slice(0, CURVES_CELLS)) if (c.best_trial_id) best.add(c.best_trial_id);
    return { byId, best, running: r.items };
  }

  function curveSeries(curve, meta) {
    return (curve && curve.points ? curve.points : []).filter((p) => p.eval_loss !== null).map((p) => [p.step, p.eval_loss]);
  }

  async function tabOverview(ctx, body, detail0, _query, runningPromise) {
    let detail = detail0;
    let firstRunning = runningPromise;
    let wasRunning = new Map(); // trials running at the last draw
    const finishedHere = new Map(); // trials seen running on this page that have finished since (newest last)
    const cellsBox = h("div", { id: "cells" });
    const curvesBox = h("div", { id: "curves", class: "charts" });
    body.replaceChildren(
      h("h2", { text: "Cells" }),
      cellsBox,
      h("h2", { text: "Eval loss" }),
      h("p", { class: "muted", text: "Each cell's best (thick), running trials (dashed) and the latest finished trials, coloured by optimizer." }),
      curvesBox
    );
    const drawCells = () => {
      cellsBox.replaceChildren(cellsTable(detail));
      paintDots(cellsBox);
    };
    const drawCurves = async () => {
      const { byId, best, running } = await overviewTrials(ctx, detail, firstRunning, finishedHere);
      firstRunning = null;
      const now = new Set(running.map((t) => t.id));
      for (const [id, t] of wasRunning) {
        if (!now.has(id)) {
          finishedHere.delete(id);
          finishedHere.set(id, { ...t, status: "completed" }); // its curve is fetched again: no longer running
          byId.set(id, finishedHere.get(id));
        }
      }
      while (finishedHere.size > CURVES_RECENT) finishedHere.delete(finishedHere.keys().next().value);
      wasRunning = new Map(running.map((t) => [t.id, t]));
      const statusById = new Map([...byId.values()].map((t) => [t.id, t.status]));
      const ids = [...new Set([...best, ...byId.keys()])];
      const curves = await curvesOf(ids, ctx.signal, statusById);
      const cellByBest = new Map(detail.cells.filter((c) => c.best_trial_id).map((c) => [c.best_trial_id, c]));
      const byScale = new Map();
      for (const id of ids) {
        const t = byId.get(id);
        const cell = cellByBest.get(id);
        const optimizer = t ? t.optimizer : cell ? cell.optimizer : "?";
        const scale = t ? t.scale : cell ? cell.scale : "?";
        const isBest = best.has(id);
        const running = t && t.status === "running";
        const label = `trial ${id} · ${t ? t.cell : cell.key}${isBest ? " · best of its cell" : ""}${running ? " · running" : ""}`;
        const s = {
          name: label,
          title: label,
          color: colorOf(optimizer),
          points: curveSeries(curves.get(id)),
          width: isBest ? 3 : 1.2,
          opacity: isBest ? 1 : running ? 0.9 : 0.45,
          dash: running ? "5 3" : null,
          className: `${isBest ? "best" : ""} ${running ? "running" : ""} trial-${id}`,
        };
        if (!byScale.has(scale)) byScale.set(scale, { series: [], optimizers: new Set() });
        byScale.get(scale).series.push(s);
        byScale.get(scale).optimizers.add(optimizer);
      }
      // Only scales with at least one curve point get a chart (an imported sweep has final losses only).
      const charts = [...byScale.entries()]
        .filter(([, g]) => g.series.some((s) => s.points.length))
        .map(([scale, g]) =>
          h(
            "figure",
            { class: "chart-box", dataset: { scale } },
            h("figcaption", { text: `${scale}: eval loss vs step` }),
            window.Charts.interactive({ series: g.series, xLabel: "step", yLabel: "eval loss", yFormat: fmtLoss }),
            legendOf(g.series, [...g.optimizers].sort().map((o) => ({ name: o, color: colorOf(o) })))
          )
        );
      const none = detail.imported
        ? "No curves: this sweep was imported from released results, which hold each cell's final loss only."
        : "No curves yet: no trial has reported an evaluation.";
      curvesBox.replaceChildren(...(charts.length ? charts : [h("p", { class: "muted", id: "no-curves", text: none })]));
    };
    drawCells();
    await drawCurves();
    // Curves at most every REFRESH_MS: a busy sweep sends an event per finished trial.
    const refreshCurves = throttled(ctx, drawCurves, REFRESH_MS);
    return (next) => {
      detail = next;
      drawCells();
      refreshCurves();
    };
  }

  async function tabBest(ctx, body, detail0) {
    let detail = detail0;
    const note = h("p", { id: "speedup-note", class: "muted" });
    const box = h("div", { id: "best-per-scale" });
    body.replaceChildren(
      h("h2", { text: "Best per scale" }),
      h("p", { class: "muted", text: "One table per scale: each optimizer's best final loss (mean over seeds), its speedup over AdamW (PAPER.md section 5: the AdamW data D_eff needed to match it, over D) and its config." }),
      note,
      box
    );
    let speed = await optional(`/sweeps/${detail.id}/speedups?baseline=adamw`, ctx.signal);
    const draw = () => {
      const rows = speed.data ? speed.data.rows : [];
      note.textContent = speed.data ? "" : `Speedups: not available (${speed.missing}).`;
      const key = (o, s, c) => `${o}|${s}|${Number(c)}`;
      const speedOf = new Map(rows.map((r) => [key(r.optimizer, r.scale, r.chinchilla), r]));
      const scales = [...new Set(detail.cells.map((c) => c.scale))];
      box.replaceChildren(
        ...scales.map((scale) => {
          const cells = detail.cells.filter((c) => c.scale === scale);
          const low = new Map();
          for (const c of cells) {
            if (c.best_loss !== null && !(low.get(c.chinchilla) <= c.best_loss)) low.set(c.chinchilla, c.best_loss);
          }
          cells.sort((a, b) => a.chinchilla - b.chinchilla || (a.best_loss ?? Infinity) - (b.best_loss ?? Infinity));
          const digits = decimalsFor(cells.map((c) => c.best_loss));
          return h(
            "section",
            { class: "scale-table", dataset: { scale } },
            h("h3", { text: scale }),
            h(
              "table",
              { class: "grid-table cards" },
              h("thead", {}, h("tr", {}, ["Optimizer", "D (× Chinchilla)", "Best loss", "Speedup over AdamW", "Config", "Near-ties"].map((t) => h("th", { text: t })))),
              h(
                "tbody",
                {},
                cells.map((c) => {
                  const r = speedOf.get(key(c.optimizer, c.scale, c.chinchilla));
                  let sp = speed.data ? "—" : "not available";
                  if (r && r.speedup !== null) {
                    const ci = r.speedup_ci_low !== null && r.speedup_ci_high !== null ? ` [${r.speedup_ci_low.toFixed(2)}, ${r.speedup_ci_high.toFixed(2)}]` : "";
                    const flags = speedupFlags(r);
                    sp = `${r.speedup.toFixed(2)}×${ci}${flags.length ? ` (${flags.join("; ")})` : ""}`;
                  } else if (r && r.note) sp = r.note;
                  return h(
                    "tr",
                    { class: c.best_loss !== null && low.get(c.chinchilla) === c.best_loss ? "winner" : "", dataset: { optimizer: c.optimizer, chinchilla: String(c.chinchilla) } },
                    h("td", {}, h("i", { class: "dot", dataset: { color: colorOf(c.optimizer) } }), h("a", { href: cellHref(detail.id, c.key), text: c.optimizer })),
                    h("td", { class: "num", text: fmtNum(c.chinchilla) }),
                    h("td", { class: "num loss", text: fmtLoss(c.best_loss, digits) }),
                    h("td", { class: "num speedup", text: sp }),
                    h("td", { class: "config", text: configText(c.best_config) }),
                    h("td", { class: "num", text: String(otherTies(c.best_config, c.near_ties).length) })
                  );
                })
              )
            )
          );
        })
      );
      paintDots(box);
    };
    draw();
    return async (next) => {
      detail = next;
      draw();
    };
  }

  // The report's bands (sweep_service/report.py SPEEDUP_BANDS): constant speedups 1, 1.1, ... 2x.
  const SPEEDUP_BANDS = [1.0, 1.1, 1.2, 1.3, 1.4, 1.6, 2.0];

  function fmtSpeedup(r) {
    if (r.beyond_asymptote) return "∞ (beyond AdamW's asymptote)";
    if (r.speedup === null || r.speedup === undefined) return r.note || "—";
    const ci = r.speedup_ci_low !== null && r.speedup_ci_low !== undefined && r.speedup_ci_high !== null ? ` [${r.speedup_ci_low.toFixed(2)}, ${r.speedup_ci_high.toFixed(2)}]` : "";
    return `${r.speedup.toFixed(2)}×${ci}`;
  }

  // Optimizer x D speedup matrix of one scale: each cell the speedup with its interval; "tied within noise"
  // where the analysis says so (a field the noise work adds: shown when the API sends it); extrapolated or
  // unreliable numbers in italics with a dagger. Shaded by the speedup band it falls in.
  function speedupMatrix(scale, rs, baseline) {
    const optimizers = [...new Set(rs.map((r) => r.optimizer))].filter((o) => o !== baseline).sort();
    const ds = [...new Set(rs.map((r) => r.chinchilla))].sort((a, b) => a - b);
    if (!optimizers.length) return null;
    const at = new Map(rs.map((r) => [`${r.optimizer}|${r.chinchilla}`, r]));
    const hasTies = rs.some((r) => "tied_within_noise" in r);
    return h(
      "div",
      { class: "matrix-box" },
      h(
        "table",
        { class: "grid-table speedup-matrix", id: `matrix-${scale}`, dataset: { scale } },
        h("caption", { text: `${scale}: speedup over ${baseline} (D_eff / D) [95% interval]` }),
        h("thead", {}, h("tr", {}, h("th", { text: "optimizer \\ D" }), ds.map((d) => h("th", { class: "num", text: `${fmtNum(d)}×` })))),
        h(
          "tbody",
          {},
          optimizers.map((o) =>
            h(
              "tr",
              { dataset: { optimizer: o } },
              h("th", {}, h("i", { class: "dot", dataset: { color: colorOf(o) } }), o),
              ds.map((d) => {
                const r = at.get(`${o}|${d}`);
                if (!r) return h("td", { class: "num muted", text: "—" });
                const flagged = r.extrapolated || r.fit_unphysical;
                const band = r.speedup === null ? -1 : SPEEDUP_BANDS.filter((k) => r.speedup >= k).length - 1;
                const tied = r.tied_within_noise === true;
                const flags = speedupFlags(r);
                return h(
                  "td",
                  {
                    class: `num sp-cell ${band >= 0 ? `band-${band}` : ""} ${flagged ? "flagged" : ""} ${tied ? "tied" : ""}`,
                    title: [fmtSpeedup(r), ...flags, tied ? `tied within noise: the intervals overlap${Array.isArray(r.tied_with) && r.tied_with.length ? ` (with ${r.tied_with.join(", ")})` : ""}` : ""].filter(Boolean).join("; "),
                    dataset: { chinchilla: String(d) },
                  },
                  h("span", { text: fmtSpeedup(r) + (flagged ? " †" : "") }),
                  tied ? h("span", { class: "tie-tag", text: "tied within noise" }) : null
                );
              })
            )
          )
        )
      ),
      h(
        "p",
        { class: "muted small" },
        "† extrapolated beyond AdamW's measured D, or from an unphysical fit: not a measurement.",
        hasTies ? " \"tied within noise\": its interval overlaps AdamW's (no winner)." : ""
      )
    );
  }

  function fitLoss(r, d) {
    return r.fit_alpha * Math.pow(d, -r.fit_B) + r.fit_beta;
  }

  // Why a speedup row is not a plain measurement (api/schemas.py SpeedupRow): beyond AdamW's asymptote, D_eff
  // extrapolated beyond the multiples AdamW was measured at, or AdamW's fit unphysical at that scale.
  function speedupFlags(r) {
    const flags = [];
    if (r.beyond_asymptote) flags.push("beyond AdamW's asymptote");
    else if (r.extrapolated) flags.push(r.extrapolation_factor !== null ? `extrapolated ${r.extrapolation_factor.toFixed(1)}× beyond AdamW's measured D` : "extrapolated");
    if (r.fit_unphysical) flags.push("unreliable: AdamW's fit unphysical");
    if (r.tied_within_noise) flags.push(`tied within noise with ${r.tied_with.join(", ")}`);
    return flags;
  }

  async function tabSpeedup(ctx, body, detail) {
    const speedBox = h("div", { id: "speedup", class: "charts" });
    const sensBox = h("div", { id: "sensitivity" });
    const flipsBox = h("div", { id: "flips" });
    body.replaceChildren(
      h("h2", { text: "Speedup over AdamW" }),
      h("p", { class: "muted", text: "Per scale: AdamW's fit L(D) = α·D^(−B) + β of its best loss against the data multiple D, and for each optimizer the AdamW data D_eff it would need to match that optimizer's loss (PAPER.md section 5). Above the diagonal = faster than AdamW." }),
      speedBox,
      flipsBox,
      h("h2", { text: "Sensitivity" }),
      h("p", { class: "muted", text: "Loss increase when one hyperparameter moves away from the best config (the others held at the best); hatched = diverged." }),
      sensBox
    );
    const [speed, sens, flips] = await Promise.all([
      optional(`/sweeps/${detail.id}/speedups?baseline=adamw`, ctx.signal),
      optional(`/sweeps/${detail.id}/sensitivity`, ctx.signal),
      optional(`/sweeps/${detail.id}/flips`, ctx.signal),
    ]);
    drawSpeedups(speedBox, speed);
    drawFlips(flipsBox, flips);
    drawSensitivity(sensBox, sens);
    return null;
  }

  // Ranking flips over training (the analysis's GET /sweeps/{id}/flips, where the server has it): drawn from
  // whatever rows it sends: a table of their fields, and bars of any "fraction" field (the share of training
  // after which a pair's order no longer changes).
  function drawFlips(box, flips) {
    if (!flips.data) {
      box.replaceChildren();
      return;
    }
    const rows = Array.isArray(flips.data) ? flips.data : flips.data.rows || flips.data.pairs || [];
    const scalar = (v) => v === null || ["string", "number", "boolean"].includes(typeof v);
    const cols = [...new Set(rows.flatMap((r) => Object.keys(r).filter((k) => scalar(r[k]))))];
    // settled_at (api/schemas.py FlipRow): the fraction of training after which the pair keeps its order.
    const frac = cols.find((c) => c === "settled_at") || cols.find((c) => /fraction|settled/.test(c));
    const label = (r) =>
      r.optimizer_a && r.optimizer_b
        ? `${r.optimizer_a} vs ${r.optimizer_b} · ${r.scale ?? ""}${r.chinchilla !== undefined ? `/${fmtNum(r.chinchilla)}×` : ""}`
        : cols.filter((c) => typeof r[c] === "string").map((c) => r[c]).join(" · ");
    box.replaceChildren(
      h("h2", { text: "Ranking flips over training" }),
      h("p", { class: "muted", text: `From the eval curves of each cell's best trial: after which fraction of training each pair of optimizers keeps its order (PAPER.md, third finding).${flips.data.note ? ` ${flips.data.note}` : ""}` }),
      ...(rows.length
        ? [
            frac
              ? h(
                  "figure",
                  { class: "chart-box", id: "flips-chart" },
                  h("figcaption", { text: "share of training after which each pair keeps its order (bar colour: the one ahead at the end)" }),
                  window.Charts.barChart({
                    width: window.Charts.fit(640),
                    labelWidth: Math.min(220, window.Charts.fit(640) / 2.2),
                    rows: rows.map((r) => ({
                      label: label(r).slice(0, 34),
                      value: r[frac] === null ? NaN : Number(r[frac]),
                      color: colorOf(r.final_leader || r.optimizer || r.optimizer_a || ""),
                      title: `${label(r)}: ${r[frac] === null ? "tied at the end" : `settled after ${(100 * r[frac]).toFixed(0)}% of training`}${r.final_leader ? `; ${r.final_leader} ahead at the end` : ""}${r.n_flips !== undefined ? `; ${r.n_flips} flips` : ""}`,
                      note: Number.isFinite(r[frac]) ? `${(100 * r[frac]).toFixed(0)}%${r.final_leader ? ` (${r.final_leader} ahead)` : ""}` : "tied",
                    })),
                    min: 1,
                    format: (v) => v.toFixed(2),
                  })
                )
              : "",
            h(
              "table",
              { class: "grid-table compact", id: "flips-table" },
              h("thead", {}, h("tr", {}, cols.map((c) => h("th", { text: c })))),
              h("tbody", {}, rows.map((r) => h("tr", {}, cols.map((c) => h("td", { class: typeof r[c] === "number" ? "num" : "", text: typeof r[c] === "number" ? fmtNum(r[c]) : String(r[c] ?? "—") })))))
            ),
          ]
        : [h("p", { class: "not-available", text: "No ranking flips: no pair of cells has curves to compare." })])
    );
  }

  function drawSpeedups(box, speed) {
    if (!speed.data) {
      box.replaceChildren(h("p", { class: "not-available", text: `Speedups: not available (${speed.missing}).` }));
      return;
    }
    const rows = speed.data.rows;
    if (!rows.length) {
      box.replaceChildren(h("p", { class: "not-available", text: "Speedups: not available (no cell has a best yet)." }));
      return;
    }
    const scales = [...new Set(rows.map((r) => r.scale))];
    box.replaceChildren(
      ...scales.map((scale) => {
        const rs = rows.filter((r) => r.scale === scale);
        const optimizers = [...new Set(rs.map((r) => r.optimizer))].sort();
        const fit = rs.find((r) => r.fit_alpha !== null && r.fit_B !== null && r.fit_beta !== null);
        const ds = rs.map((r) => r.chinchilla).filter((d) => d > 0);
        const lossSeries = optimizers.map((o) => ({
          name: o,
          color: colorOf(o),
          markers: "big",
          line: false,
          points: rs.filter((r) => r.optimizer === o && r.loss !== null).map((r) => (r.loss_ci_low !== null && r.loss_ci_high !== null ? [r.chinchilla, r.loss, r.loss_ci_low, r.loss_ci_high] : [r.chinchilla, r.loss])),
        }));
        if (fit && ds.length) {
          const lo = Math.min(...ds);
          const hi = Math.max(...ds);
          const pts = [];
          for (let i = 0; i <= 40; i++) {
            const d = lo * Math.pow(hi / lo || 1, i / 40);
            pts.push([d, fitLoss(fit, d)]);
          }
          lossSeries.push({
            name: `AdamW fit: ${fit.fit_alpha.toFixed(3)}·D^-${fit.fit_B.toFixed(3)} + ${fit.fit_beta.toFixed(3)}`,
            color: colorOf("adamw"),
            width: 1.5,
            dash: "6 3",
            points: pts,
            className: "fit",
          });
        }
        const deffSeries = optimizers
          .filter((o) => o !== speed.data.baseline)
          .map((o) => ({
            name: o,
            color: colorOf(o),
            markers: "big",
            points: rs
              .filter((r) => r.optimizer === o && r.d_eff !== null && r.d_eff > 0)
              .sort((a, b) => a.chinchilla - b.chinchilla)
              .map((r) => {
                const p =
                  r.speedup_ci_low !== null && r.speedup_ci_high !== null
                    ? [r.chinchilla, r.d_eff, r.speedup_ci_low * r.chinchilla, r.speedup_ci_high * r.chinchilla]
                    : [r.chinchilla, r.d_eff];
                const flags = speedupFlags(r);
                p.meta = { hollow: !!(r.extrapolated || r.fit_unphysical), tip: `${fmtSpeedup(r)}${flags.length ? `; ${flags.join("; ")}` : ""}` };
                return p;
              }),
          }));
        const notes = rs.filter((r) => r.note || r.fit_underdetermined || r.beyond_asymptote || r.extrapolated || r.fit_unphysical || r.tied_within_noise);
        return h(
          "section",
          { class: "scale-speedup", dataset: { scale } },
          h("h3", { text: scale }),
          speedupMatrix(scale, rs, speed.data.baseline),
          h(
            "div",
            { class: "charts" },
            h(
              "figure",
              { class: "chart-box" },
              h("figcaption", { text: "best loss vs D (× Chinchilla)" }),
              window.Charts.interactive({ series: lossSeries, xLog: true, pow2: "x", xLabel: "D (× Chinchilla)", yLabel: "final loss", width: 520, height: 300, yFormat: fmtLoss }),
              legendOf(lossSeries, lossSeries.filter((s) => s.points.length).map((s) => ({ name: s.name, color: s.color })))
            ),
            h(
              "figure",
              { class: "chart-box", id: `deff-${scale}` },
              h("figcaption", { text: "D_eff vs D (AdamW = diagonal; bands of constant speedup; hollow = extrapolated, not measured)" }),
              window.Charts.lineChart({ series: deffSeries, xLog: true, yLog: true, pow2: "xy", bands: SPEEDUP_BANDS, diagonal: "AdamW (D_eff = D)", xLabel: "D (× Chinchilla)", yLabel: "D_eff (AdamW-equivalent)", width: 520, height: 300, empty: "no speedups at this scale" }),
              legendOf(deffSeries, [
                ...deffSeries.filter((s) => s.points.length).map((s) => ({ name: s.name, color: s.color })),
                ...(deffSeries.some((s) => s.points.some((p) => p.meta && p.meta.hollow)) ? [{ name: "extrapolated (hollow)", color: "transparent", className: "hollow-key" }] : []),
              ])
            )
          ),
          h(
            "details",
            { class: "rows" },
            h("summary", { text: `the numbers (${rs.length} rows)` }),
            h(
            "table",
            { class: "grid-table compact" },
            h("thead", {}, h("tr", {}, ["Optimizer", "D", "Loss", "D_eff", "Speedup", "95% CI", "Seeds", "Note"].map((t) => h("th", { text: t })))),
            h(
              "tbody",
              {},
              rs.map((r) =>
                h(
                  "tr",
                  { dataset: { optimizer: r.optimizer } },
                  h("td", { text: r.optimizer }),
                  h("td", { class: "num", text: fmtNum(r.chinchilla) }),
                  h("td", { class: "num", text: fmtLoss(r.loss) }),
                  h("td", { class: "num", text: fmtNum(r.d_eff) }),
                  h("td", { class: "num", text: r.speedup === null ? "—" : `${r.speedup.toFixed(2)}×` }),
                  h("td", { class: "num", text: r.speedup_ci_low === null || r.speedup_ci_high === null ? "—" : `${r.speedup_ci_low.toFixed(2)}–${r.speedup_ci_high.toFixed(2)}` }),
                  h("td", { class: "num", text: String(r.n_seeds ?? "—") }),
                  h("td", { class: "muted", text: [...speedupFlags(r), r.fit_underdetermined ? `fit underdetermined (${r.fit_n_points} points)` : "", r.note || ""].filter(Boolean).join("; ") })
                )
              )
            )
          )
          ),
          notes.length ? null : null
        );
      })
    );
  }

  function drawSensitivity(box, sens) {
    if (!sens.data) {
      box.replaceChildren(h("p", { class: "not-available", text: `Sensitivity: not available (${sens.missing}).` }));
      return;
    }
    const rows = sens.data.rows;
    if (!rows.length) {
      box.replaceChildren(
        h("p", { class: "not-available", text: "Sensitivity: not available (no finished config is one hyperparameter away from a cell's best)." })
      );
      return;
    }
    const groups = new Map();
    for (const r of rows) {
      const k = `${r.optimizer}/${r.scale}/${fmtNum(r.chinchilla)}`;
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(r);
    }
    box.replaceChildren(
      ...[...groups.entries()].map(([k, rs]) => {
        const hparams = [...new Set(rs.map((r) => r.hparam))];
        const bestLoss = rs.find((r) => r.best_loss !== null);
        return h(
          "section",
          { class: "sens-cell", dataset: { cell: k } },
          h("h3", {}, k, bestLoss ? h("span", { class: "muted", text: ` best ${fmtLoss(bestLoss.best_loss)}` }) : null),
          h(
            "div",
            { class: "sens-grid" },
            hparams.map((hp) => {
              const hr = rs.filter((r) => r.hparam === hp);
              const best = hr[0].best_value;
              return h(
                "figure",
                { class: "sens-bars", dataset: { hparam: hp } },
                h("figcaption", { text: `${hp} (best ${fmtNum(best)})` }),
                window.Charts.barChart({
                  width: 300,
                  valueLabel: "Δ loss",
                  rows: hr.map((r) => ({
                    label: fmtNum(r.value),
                    value: r.diverged || r.delta === null ? NaN : r.delta,
                    note: r.diverged ? "diverged" : r.delta === null ? "n/a" : null,
                    color: colorOf(r.optimizer),
                    className: r.diverged ? "diverged" : "",
                    title: `${hp}=${fmtNum(r.value)}: ${r.diverged ? "diverged" : `loss ${fmtLoss(r.loss)} (Δ ${r.delta === null ? "n/a" : r.delta.toFixed(4)})`}, ${r.n_seeds} seed(s)`,
                  })),
                })
              );
            })
          )
        );
      })
    );
  }

  async function tabTrials(ctx, body, detail, query) {
    const page = Math.max(0, Number(query.get("page") || 0) | 0);
    const status = query.get("status") || "";
    const cell = query.get("cell") || "";
    const box = h("div", { id: "trials" });
    const go = (p, st, c) => {
      const q = new URLSearchParams();
      if (p) q.set("page", String(p));
      if (st) q.set("status", st);
      if (c) q.set("cell", c);
      location.hash = `#/sweeps/${detail.id}/trials${q.toString() ? `?${q}` : ""}`;
    };
    const statusSel = h(
      "select",
      { id: "trial-status", onchange: (e) => go(0, e.target.value, cell) },
      ["", "pending", "running", "completed", "diverged", "failed", "cancelled"].map((s) => h("option", { value: s, selected: s === status, text: s || "any status" }))
    );
    const cellSel = h(
      "select",
      { id: "trial-cell", onchange: (e) => go(0, status, e.target.value) },
      h("option", { value: "", text: "any cell" }),
      detail.cells.map((c) => h("option", { value: c.key, selected: c.key === cell, text: c.key }))
    );
    body.replaceChildren(h("div", { class: "row" }, h("h2", { text: "Trials" }), statusSel, cellSel), compareBar(), box);
    const load = async () => {
      const params = new URLSearchParams({ limit: String(PAGE), offset: String(page * PAGE) });
      if (status) params.set("status", status);
      if (cell) params.set("cell", cell);
      const data = await api(`/sweeps/${detail.id}/trials?${params}`, { signal: ctx.signal });
      const pages = Math.max(1, Math.ceil(data.total / PAGE));
      box.replaceChildren(
        trialsTable(data.items, null, true),
        h(
          "div",
          { class: "pager" },
          page > 0 ? h("a", { href: "#", text: "← previous", onclick: (e) => (e.preventDefault(), go(page - 1, status, cell)) }) : null,
          h("span", { text: ` page ${page + 1} of ${pages} (${data.total} trials) ` }),
          page + 1 < pages ? h("a", { href: "#", text: "next →", onclick: (e) => (e.preventDefault(), go(page + 1, status, cell)) }) : null
        )
      );
    };
    await load();
    return throttled(ctx, load, REFRESH_MS);
  }

  function trialsTable(trials, best, withCell, keys) {
    const picked = compareSet();
    return h(
      "table",
      { class: "grid-table trials-table" },
      h(
        "thead",
        {},
        h("tr", {}, ["", "Trial", withCell ? "Cell" : null, "Round", "Seed", "Status", "Final loss", "Steps", "Config", "Reason"].filter((t) => t !== null).map((t) => h("th", { text: t })))
      ),
      h(
        "tbody",
        {},
        trials.map((t) =>
          h(
            "tr",
            { class: best && best.has(t.id) ? "winner" : "", dataset: { trial: String(t.id), status: t.status } },
            h("td", {}, h("input", { type: "checkbox", class: "pick", "aria-label": `compare trial ${t.id}`, checked: picked.has(t.id), onchange: (e) => toggleCompare(t.id, e.target.checked) })),
            h("td", {}, h("a", { href: `#/trials/${t.id}`, text: `#${t.id}` })),
            withCell ? h("td", {}, h("a", { href: cellHref(t.sweep_id, t.cell), text: t.cell })) : null,
            h("td", { class: "num", text: String(t.round) }),
            h("td", { class: "num", text: String(t.seed) }),
            h("td", {}, badge(t.status)),
            h("td", { class: "num", text: fmtLoss(t.final_loss) }),
            h("td", { class: "num", text: t.total_steps ? `${t.steps ?? 0}/${t.total_steps}` : "—" }),
            h("td", { class: "config", text: configText(t.config, keys) }),
            h("td", { class: "muted", text: t.reason || "" })
          )
        )
      )
    );
  }

  // ---- one cell ---------------------------------------------------------------------------------------
  const sameValue = (a, b) =>
    typeof a === "number" && typeof b === "number" ? Math.abs(a - b) <= 1e-6 * Math.max(Math.abs(a), Math.abs(b)) : a === b;
  const configId = (c, keys) => keys.map((k) => `${k}=${c[k]}`).join(",");

  // The hyperparameters the cell searched: those whose value differs between its trials' configs.
  function searchedKeys(trials) {
    const keys = new Set();
    if (!trials.length) return [];
    const first = trials[0].config;
    for (const t of trials) {
      for (const k of Object.keys(t.config)) if (!sameValue(t.config[k], first[k])) keys.add(k);
    }
    return Object.keys(first).filter((k) => keys.has(k));
  }

  // The coordinate-descent path, from the trials' rounds and configs. A round runs the neighbourhood of one
  // centre (the centre plus every config one hyperparameter away: sweep_service/coordinate_descent.py), so
  // the centre's value of each hyperparameter is the most common value in that round (ties: the value of the
  // best config so far). What changed is the centre against the previous round's centre.
  function descentPath(trials, keys) {
    const rounds = new Map();
    for (const t of trials) {
      if (!rounds.has(t.round)) rounds.set(t.round, []);
      rounds.get(t.round).push(t);
    }
    const path = [];
    let prev = null;
    let bestSoFar = null;
    for (const r of [...rounds.keys()].sort((a, b) => a - b)) {
      const ts = rounds.get(r);
      const centre = {};
      for (const k of keys) {
        const counts = new Map();
        for (const t of ts) {
          const v = t.config[k];
          const key = JSON.stringify(v);
          counts.set(key, (counts.get(key) || 0) + 1);
        }
        let top = null;
        let n = -1;
        for (const [v, c] of counts) {
          if (c > n || (c === n && bestSoFar && JSON.stringify(bestSoFar.config[k]) === v)) {
            top = v;
            n = c;
          }
        }
        centre[k] = JSON.parse(top);
      }
      const finished = ts.filter((t) => t.status === "completed" && t.final_loss !== null);
      const roundBest = finished.reduce((a, t) => (!a || t.final_loss < a.final_loss ? t : a), null);
      if (roundBest && (!bestSoFar || roundBest.final_loss < bestSoFar.final_loss)) bestSoFar = roundBest;
      const changed = prev ? keys.filter((k) => !sameValue(prev[k], centre[k])).map((k) => ({ k, from: prev[k], to: centre[k] })) : [];
      path.push({ round: r, centre, changed, trials: ts.length, open: ts.filter((t) => !FINISHED_TRIAL.has(t.status)).length, roundBest, bestSoFar });
      prev = centre;
    }
    return path;
  }

  async function loadCellTrials(ctx, sweepId, key) {
    const out = [];
    for (let offset = 0; offset < CELL_TRIALS_CAP; offset += MAX_PAGE) {
      const page = await api(`/sweeps/${sweepId}/trials?cell=${encodeURIComponent(key)}&limit=${MAX_PAGE}&offset=${offset}`, { signal: ctx.signal });
      out.push(...page.items);
      if (out.length >= page.total || !page.items.length) return { items: out, total: page.total };
    }
    return { items: out, total: out.length };
  }

  async function viewCell(ctx, main, match) {
    const sweepId = Number(match[1]);
    const key = decodeURIComponent(match[2]);
    let detail = await api(`/sweeps/${sweepId}`, { signal: ctx.signal });
    const findCell = () => detail.cells.find((c) => c.key === key);
    if (!findCell()) throw new ApiError(404, `sweep ${sweepId} has no cell ${key}`);
    const head = h("div", { id: "cell-header" });
    const bestBox = h("div", { id: "best-config" });
    const copyBox = h("div", { id: "copy" });
    let tokensPerStep = null; // from the best trial's detail: the same token budget for every trial of a cell
    const pathBox = h("div", { id: "descent-path" });
    const curvesBox = h("div", { id: "cell-curves", class: "charts" });
    const trialsBox = h("div", { id: "cell-trials" });
    render(
      main,
      "cell",
      h("p", {}, h("a", { href: `#/sweeps/${sweepId}`, text: `← sweep #${sweepId} ${detail.name}` })),
      head,
      h("h2", { text: "Best config and near-ties" }),
      bestBox,
      copyBox,
      h("h2", { text: "Coordinate-descent path" }),
      pathBox,
      h("h2", { text: "Eval loss" }),
      curvesBox,
      h("h2", { text: "Trials (lowest loss first)" }),
      compareBar(),
      trialsBox
    );
    main.dataset.cell = key;
    const draw = async () => {
      const cell = findCell();
      const { items, total } = await loadCellTrials(ctx, sweepId, key);
      const keys = searchedKeys(items);
      head.replaceChildren(
        h("div", { class: "row" }, h("h1", {}, h("i", { class: "dot", dataset: { color: colorOf(cell.optimizer) } }), cell.key, " ", badge(cell.status))),
        h(
          "div",
          { class: "facts" },
          h("div", {}, h("span", { class: "k", text: "optimizer" }), cell.optimizer),
          h("div", {}, h("span", { class: "k", text: "scale" }), cell.scale),
          h("div", {}, h("span", { class: "k", text: "D" }), `${fmtNum(cell.chinchilla)}× Chinchilla`),
          h("div", {}, h("span", { class: "k", text: "strategy" }), cell.strategy),
          h("div", {}, h("span", { class: "k", text: "round" }), String(cell.round)),
          cell.phase > 1 ? h("div", {}, h("span", { class: "k", text: "phase" }), String(cell.phase)) : null,
          h("div", {}, h("span", { class: "k", text: "trials" }), progressBar(cell.trials)),
          total > items.length ? h("div", { class: "muted", text: `showing the first ${items.length} of ${total} trials` }) : null
        ),
        // (replaceChildren is the DOM's: it would draw a null child as the text "null")
        ...(cell.decision ? [h("p", { id: "phase-decision", text: decisionText(cell.phase, cell.decision) })] : [])
      );
      bestBox.replaceChildren(bestConfigTable(cell, keys));
      if (!copyBox.firstChild) copyBox.replaceChildren(copyButtons(cell, await trainerKeys(ctx, cell.optimizer)) || "", h("p", {}, h("a", { href: `#/sweeps/${sweepId}/explore?cell=${encodeURIComponent(key)}`, id: "explore-cell", text: "Explore this cell: slice plots, parallel coordinates, importance →" })));
      if (tokensPerStep === null && cell.best_trial_id) {
        try {
          const bt = await api(`/trials/${cell.best_trial_id}`, { signal: ctx.signal });
          tokensPerStep = bt.tokens && bt.total_steps ? bt.tokens / bt.total_steps : 0;
        } catch (e) {
          tokensPerStep = 0;
        }
      }
      const path = descentPath(items, keys);
      pathBox.replaceChildren(pathTable(path, keys));
      const sorted = items.slice().sort((a, b) => (a.final_loss ?? Infinity) - (b.final_loss ?? Infinity) || a.id - b.id);
      const bestIds = new Set(cell.best_trial_id ? [cell.best_trial_id] : []);
      const tieIds = new Set();
      for (const tie of otherTies(cell.best_config, cell.near_ties)) {
        const tk = configId(tie, keys);
        for (const t of sorted) if (t.status === "completed" && configId(t.config, keys) === tk && !bestIds.has(t.id)) tieIds.add(t.id);
      }
      const running = items.filter((t) => t.status === "running");
      const chosen = [...new Set([...bestIds, ...tieIds, ...running.map((t) => t.id), ...sorted.filter((t) => t.final_loss !== null).map((t) => t.id)])].slice(0, CURVES_CELL_PAGE);
      const byId = new Map(items.map((t) => [t.id, t]));
      const curves = await curvesOf(chosen, ctx.signal, new Map(items.map((t) => [t.id, t.status])));
      const series = chosen.map((id) => {
        const t = byId.get(id);
        const isBest = bestIds.has(id);
        const tie = tieIds.has(id);
        const run = t && t.status === "running";
        const label = `trial ${id}${t ? ` · ${configText(t.config, keys)} · ${fmtLoss(t.final_loss)}` : ""}${isBest ? " · best" : tie ? " · near-tie" : run ? " · running" : ""}`;
        return {
          name: label,
          title: label,
          color: isBest ? colorOf(cell.optimizer) : tie ? NEUTRAL.tie : run ? NEUTRAL.running : NEUTRAL.other,
          points: curveSeries(curves.get(id)),
          width: isBest ? 3.2 : tie ? 2 : 1.2,
          opacity: isBest || tie || run ? 1 : 0.5,
          dash: run ? "5 3" : null,
          className: `${isBest ? "best" : ""} ${tie ? "near-tie" : ""} ${run ? "running" : ""} trial-${id}`,
        };
      });
      curvesBox.replaceChildren(
        h(
          "figure",
          { class: "chart-box" },
          h("figcaption", { text: `${cell.key}: eval loss vs step` }),
          window.Charts.interactive({ series, xLabel: "step", yLabel: "eval loss", width: 720, height: 340, yFormat: fmtLoss, xAlt: tokensPerStep ? { label: "tokens", scale: (x) => x * tokensPerStep } : null }),
          legendOf(series, [
            { name: "best", color: colorOf(cell.optimizer) },
            { name: "near-tie", color: NEUTRAL.tie },
            { name: "running", color: NEUTRAL.running },
            { name: "other (lowest loss first)", color: NEUTRAL.other },
          ])
        )
      );
      trialsBox.replaceChildren(trialsTable(sorted, bestIds, false, keys.length ? keys : null));
      paintDots(main);
    };
    await draw();
    ready(main);
    markRendered("cell");
    if (!FINISHED.has(detail.status)) {
      const refresh = throttled(ctx, draw, REFRESH_MS);
      follow(ctx, sweepId, (progress) => {
        detail = { ...detail, ...progress };
        refresh();
      });
    }
  }

  // A Phase II/III cell's decision (GET /sweeps/{id} `decision`), as `sweep-service status ID` prints it.
  function decisionText(phase, d) {
    if (phase === 2 || "unstable" in d) {
      const stable = Object.entries(d.stable || {}).map(([k, v]) => `${k} in ${JSON.stringify(v)}`).join(", ");
      return `Phase II (PAPER.md section 4): re-tunes ${(d.unstable || []).join(", ") || "nothing"}; stable: ${stable || "-"}.`;
    }
    const config = Object.entries(d.prediction || {}).map(([k, v]) => `${k}=${fmtNum(v)}`).join(", ");
    const fits = Object.entries(d.fits || {}).map(([k, f]) => `${k} ${f.form}${typeof f.error === "number" ? ` (held-out error ${fmtNum(f.error)})` : ""}${f.fallback ? " [fallback: the nearest cell's value]" : ""}`);
    return `Phase III (${d.method}): runs the predicted config ${config || "-"}; fits: ${fits.join(", ") || "-"}.`;
  }

  function bestConfigTable(cell, searched) {
    if (!cell.best_config) return h("p", { class: "muted", id: "no-best", text: "No best yet: no trial of this cell has finished." });
    const ties = otherTies(cell.best_config, cell.near_ties);
    const configs = [cell.best_config, ...ties];
    const isSearched = new Set(searched);
    // The searched hyperparameters first: they are what the tuning chose.
    const keys = [...searched.filter((k) => k in cell.best_config), ...Object.keys(cell.best_config).filter((k) => !isSearched.has(k))];
    return h(
      "div",
      {},
      h(
        "p",
        {},
        "Best loss ",
        h("strong", { id: "best-loss", text: fmtLoss(cell.best_loss) }),
        cell.best_trial_id ? [" from ", h("a", { href: `#/trials/${cell.best_trial_id}`, text: `trial #${cell.best_trial_id}` })] : null,
        ` · ${ties.length} near-tie${ties.length === 1 ? "" : "s"} (other configs within the tolerance of the best loss; PAPER.md section 4)`
      ),
      h(
        "table",
        { class: "grid-table config-table" },
        h("thead", {}, h("tr", {}, h("th", { text: "hyperparameter" }), h("th", { text: "best" }), ties.map((_, i) => h("th", { text: `near-tie ${i + 1}` })))),
        h(
          "tbody",
          {},
          keys.map((k) =>
            h(
              "tr",
              { class: isSearched.has(k) ? "searched" : "", dataset: { hparam: k } },
              h("th", { text: k }),
              configs.map((c, i) =>
                h("td", { class: `num ${i === 0 ? "best-value" : ""} ${i > 0 && !sameValue(c[k], cell.best_config[k]) ? "differs" : ""}`, dataset: { hparam: k }, text: fmtNum(c[k]) })
              )
            )
          )
        )
      )
    );
  }

  function pathTable(path, keys) {
    if (!path.length) return h("p", { class: "muted", text: "No rounds yet." });
    return h(
      "table",
      { class: "grid-table", id: "path-table" },
      h("thead", {}, h("tr", {}, ["Round", "Changed", "Centre", "Trials", "Best this round", "Best so far"].map((t) => h("th", { text: t })))),
      h(
        "tbody",
        {},
        path.map((p, i) =>
          h(
            "tr",
            { dataset: { round: String(p.round) } },
            h("td", { class: "num", text: String(p.round) }),
            h(
              "td",
              { class: "changed" },
              i === 0 ? h("span", { class: "muted", text: "start (baseline)" }) : p.changed.length ? p.changed.map((c) => h("span", { class: "chg", dataset: { hparam: c.k }, text: `${c.k}: ${fmtNum(c.from)} → ${fmtNum(c.to)}` })) : h("span", { class: "muted", text: "no change" })
            ),
            h("td", { class: "config", text: configText(p.centre, keys) }),
            h("td", { class: "num", text: `${p.trials}${p.open ? ` (${p.open} open)` : ""}` }),
            h("td", { class: "num", text: p.roundBest ? fmtLoss(p.roundBest.final_loss) : "—" }),
            h("td", { class: "num", text: p.bestSoFar ? fmtLoss(p.bestSoFar.final_loss) : "—" })
          )
        )
      )
    );
  }

  // ---- one trial --------------------------------------------------------------------------------------
  async function viewTrial(ctx, main, match) {
    const id = Number(match[1]);
    const [t, m] = await Promise.all([api(`/trials/${id}`, { signal: ctx.signal }), api(`/trials/${id}/metrics`, { signal: ctx.signal })]);
    const evalPts = m.points.filter((p) => p.eval_loss !== null).map((p) => [p.step, p.eval_loss]);
    const trainPts = m.points.filter((p) => p.train_loss !== null).map((p) => [p.step, p.train_loss]);
    render(
      main,
      "trial",
      h("p", {}, h("a", { href: cellHref(t.sweep_id, t.cell), text: `← ${t.cell} (sweep #${t.sweep_id})` })),
      h("h1", {}, `Trial #${t.id} `, badge(t.status)),
      h(
        "div",
        { class: "facts" },
        h("div", {}, h("span", { class: "k", text: "final loss" }), fmtLoss(t.final_loss)),
        h("div", {}, h("span", { class: "k", text: "round / seed" }), `${t.round} / ${t.seed}`),
        h("div", {}, h("span", { class: "k", text: "steps" }), t.total_steps ? `${t.steps ?? 0}/${t.total_steps}` : "—"),
        h("div", {}, h("span", { class: "k", text: "duration" }), fmtDuration(t.timings.duration_seconds)),
        h("div", {}, h("span", { class: "k", text: "tokens/s" }), fmtNum(t.timings.tokens_per_second)),
        h("div", {}, h("span", { class: "k", text: "worker" }), t.worker || "—"),
        t.reason ? h("div", { class: "error-text" }, t.reason) : null
      ),
      h(
        "figure",
        { class: "chart-box" },
        h("figcaption", { text: "loss vs step" }),
        window.Charts.interactive({
          series: [
            { name: "eval loss", color: colorOf(t.optimizer), points: evalPts, width: 2.5, markers: true },
            { name: "train loss", color: NEUTRAL.other, points: trainPts, width: 1.2 },
          ],
          xLabel: "step",
          yLabel: "loss",
          width: 720,
          yFormat: fmtLoss,
          xAlt: t.tokens && t.total_steps ? { label: "tokens", scale: (x) => (x * t.tokens) / t.total_steps } : null,
        }),
        legendOf([{ points: evalPts }, { points: trainPts }], [{ name: "eval loss", color: colorOf(t.optimizer) }, { name: "train loss", color: NEUTRAL.other }])
      ),
      h("h2", { text: "Config" }),
      h("table", { class: "grid-table config-table" }, h("tbody", {}, Object.entries(t.config).map(([k, v]) => h("tr", { dataset: { hparam: k } }, h("th", { text: k }), h("td", { class: "num", text: fmtNum(v) }))))),
      h("h2", { text: "Reproducibility" }),
      h("pre", { class: "repro", text: JSON.stringify(t.repro, null, 2) })
    );
    ready(main);
    markRendered("trial");
  }

  // ---- explore: slice plots, parallel coordinates, importance ---------------------------------------------
  // #/sweeps/ID/explore?cell=KEY (one cell) or ?optimizer=NAME (that optimizer's cells together). Reads the
  // chosen cells' trials (at most CELL_TRIALS_CAP) and the importance endpoint.
  async function tabExplore(ctx, body, detail, query) {
    const optimizers = [...new Set(detail.cells.map((c) => c.optimizer))].sort();
    const cellKey = query.get("cell") || (query.get("optimizer") ? "" : (detail.cells[0] || {}).key || "");
    const optimizer = query.get("optimizer") || "";
    const go = (k, v) => {
      location.hash = `#/sweeps/${detail.id}/explore?${k}=${encodeURIComponent(v)}`;
    };
    const pick = h(
      "select",
      { id: "explore-pick", "aria-label": "cell or optimizer", onchange: (e) => go(...e.target.value.split("=")) },
      h("optgroup", { label: "one cell" }, detail.cells.map((c) => h("option", { value: `cell=${c.key}`, selected: c.key === cellKey && !optimizer, text: c.key }))),
      h("optgroup", { label: "an optimizer over its cells" }, optimizers.map((o) => h("option", { value: `optimizer=${o}`, selected: o === optimizer, text: `${o} (every cell)` })))
    );
    const sliceBox = h("div", { id: "slices", class: "charts" });
    const parBox = h("div", { id: "parallel" });
    const impBox = h("div", { id: "importance" });
    body.replaceChildren(
      h("div", { class: "row" }, h("h2", { text: "Explore" }), pick),
      h("p", { class: "muted", text: "Every finished trial of the chosen cell (or of every cell of one optimizer): the loss against each hyperparameter (slice plots), all hyperparameters at once (parallel coordinates, darker = lower loss), and how much of the loss's spread each hyperparameter explains." }),
      h("h3", { text: "Hyperparameter importance" }),
      impBox,
      h("h3", { text: "Loss against each hyperparameter" }),
      sliceBox,
      h("h3", { text: "Parallel coordinates" }),
      parBox
    );
    const cells = optimizer ? detail.cells.filter((c) => c.optimizer === optimizer) : detail.cells.filter((c) => c.key === cellKey);
    const trials = [];
    for (const c of cells) {
      if (trials.length >= CELL_TRIALS_CAP) break;
      trials.push(...(await loadCellTrials(ctx, detail.id, c.key)).items);
    }
    const done = trials.filter((t) => t.status === "completed" && Number.isFinite(t.final_loss));
    const keys = searchedKeys(trials);
    const cellColors = new Map(cells.map((c, i) => [c.key, optimizer ? window.SweepPalette.FALLBACK[i % window.SweepPalette.FALLBACK.length] : colorOf(c.optimizer)]));
    const losses = done.map((t) => t.final_loss);
    const lo = Math.min(...losses);
    const hi = Math.max(...losses);
    // importance
    const imps = await Promise.all(cells.slice(0, 12).map((c) => optional(`/sweeps/${detail.id}/importance?cell=${encodeURIComponent(c.key)}`, ctx.signal)));
    const without = cells.slice(0, 12).filter((_, i) => !(imps[i].data && imps[i].data.cells[0] && imps[i].data.cells[0].rows.length));
    impBox.replaceChildren(
      without.length
        ? h("p", { class: "muted", id: "no-importance", text: `No importance for ${without.length === 1 ? without[0].key : `${without.length} cells`}: fewer than 3 finished trials, or nothing searched (an imported cell holds its best config only).` })
        : "",
      ...imps.map((imp) => {
        const c = imp.data && imp.data.cells[0];
        if (!c || !c.rows.length) return null;
        return h(
          "figure",
          { class: "chart-box importance", dataset: { cell: c.cell } },
          h("figcaption", { text: `${c.cell}: share of the loss variance (${c.n_trials} trials; ${imp.data.method})` }),
          window.Charts.barChart({
            width: window.Charts.fit(420),
            rows: [
              ...c.rows.map((r) => ({ label: r.hparam, value: r.importance, color: colorOf(c.optimizer), note: `${(100 * r.importance).toFixed(1)}%`, title: `${r.hparam}: ${(100 * r.importance).toFixed(1)}% of the variance over ${r.n_values} values` })),
              ...(c.unexplained !== null ? [{ label: "interactions + noise", value: c.unexplained, color: NEUTRAL.other, note: `${(100 * c.unexplained).toFixed(1)}%` }] : []),
            ],
            min: 1,
          })
        );
      }).filter(Boolean)
    );
    // slice plots
    if (!done.length || !keys.length) {
      sliceBox.replaceChildren(h("p", { class: "not-available", text: done.length ? "Nothing was searched here: every trial has the same config." : "No finished trials yet." }));
      parBox.replaceChildren();
      return null;
    }
    const numericKey = (k) => done.every((t) => typeof t.config[k] === "number");
    const sliceSeries = cells.map((c) => ({ name: c.key, color: cellColors.get(c.key), points: done.filter((t) => t.cell === c.key) }));
    sliceBox.replaceChildren(
      optimizer ? h("div", { class: "slice-legend" }, legendOf(sliceSeries, sliceSeries.filter((s) => s.points.length).map((s) => ({ name: s.name, color: s.color })))) : "",
      ...keys.map((k) => {
        const numeric = numericKey(k);
        const cats = numeric ? null : [...new Set(done.map((t) => String(t.config[k])))].sort();
        const xLog = numeric && done.every((t) => t.config[k] > 0) && Math.max(...done.map((t) => t.config[k])) / Math.min(...done.map((t) => t.config[k])) >= 8;
        const series = cells.map((c) => ({
          name: c.key,
          color: cellColors.get(c.key),
          markers: true,
          line: false,
          points: done
            .filter((t) => t.cell === c.key)
            .map((t) => {
              const p = [numeric ? t.config[k] : cats.indexOf(String(t.config[k])), t.final_loss];
              p.meta = { tip: `trial ${t.id}${numeric ? "" : ` ${k}=${t.config[k]}`}` };
              return p;
            }),
        }));
        return h(
          "figure",
          { class: "chart-box slice", dataset: { hparam: k } },
          h("figcaption", { text: `loss vs ${k}${cats ? ` (${cats.map((c, i) => `${i}=${c}`).join(", ")})` : ""}` }),
          window.Charts.interactive({ series, xLog, xLabel: k, yLabel: "final loss", width: 420, height: 260, yFormat: fmtLoss })
        );
      })
    );
    // parallel coordinates: best (lowest loss) drawn last, on top
    const axes = [...keys.map((k) => ({ name: k, log: true })), ...(optimizer ? [{ name: "D" }] : []), { name: "loss" }];
    const sorted = done.slice().sort((a, b) => b.final_loss - a.final_loss);
    parBox.replaceChildren(
      h(
        "figure",
        { class: "chart-box" },
        h("figcaption", { text: `${done.length} finished trials; colour = loss (dark blue lowest, yellow highest)` }),
        window.Charts.parallel({
          axes,
          width: 900,
          lines: sorted.map((t) => ({
            values: [...keys.map((k) => t.config[k]), ...(optimizer ? [t.chinchilla] : []), t.final_loss],
            color: window.Charts.ramp(hi > lo ? (t.final_loss - lo) / (hi - lo) : 0),
            title: `trial ${t.id} · ${t.cell} · ${configText(t.config, keys)} · ${fmtLoss(t.final_loss)}`,
          })),
        })
      )
    );
    return null;
  }

  // ---- compare runs (any sweeps) --------------------------------------------------------------------------
  const COMPARE_KEY = "sweep-service.compare";
  const compareSet = () => {
    try {
      return new Set(JSON.parse(sessionStorage.getItem(COMPARE_KEY) || "[]"));
    } catch (e) {
      return new Set();
    }
  };
  function toggleCompare(id, on) {
    const set = compareSet();
    if (on) set.add(id);
    else set.delete(id);
    sessionStorage.setItem(COMPARE_KEY, JSON.stringify([...set]));
    document.querySelectorAll(".compare-count").forEach((el) => {
      el.textContent = String(set.size);
    });
  }
  function compareBar() {
    const n = compareSet().size;
    return h(
      "div",
      { class: "row compare-bar" },
      h("a", { href: "#/compare", id: "compare-link", class: "button-link" }, "Compare selected (", h("span", { class: "compare-count", text: String(n) }), ")"),
      h("span", { class: "muted small", text: "tick trials here or on any sweep's pages; the selection is kept across sweeps" })
    );
  }

  async function viewCompare(ctx, main, _m, query) {
    const fromQuery = (query.get("trials") || "").split(",").map(Number).filter((n) => Number.isInteger(n) && n > 0);
    const ids = fromQuery.length ? fromQuery : [...compareSet()].map(Number);
    const add = h("input", { id: "compare-add", type: "text", inputmode: "numeric", placeholder: "trial id", "aria-label": "add a trial by id" });
    const form = h(
      "form",
      {
        class: "row",
        onsubmit: (ev) => {
          ev.preventDefault();
          const n = Number(add.value);
          if (Number.isInteger(n) && n > 0) {
            toggleCompare(n, true);
            location.hash = `#/compare?trials=${[...new Set([...ids, n])].join(",")}`;
          }
        },
      },
      add,
      h("button", { type: "submit", text: "Add" }),
      h("button", { type: "button", text: "Clear", onclick: () => {
        sessionStorage.removeItem(COMPARE_KEY);
        location.hash = "#/compare?trials=";
      } })
    );
    const got = await Promise.all(
      ids.slice(0, 12).map(async (id) => {
        try {
          const [t, m] = await Promise.all([api(`/trials/${id}`, { signal: ctx.signal }), api(`/trials/${id}/metrics`, { signal: ctx.signal })]);
          return { t, m };
        } catch (e) {
          if (e.name === "AbortError") throw e;
          return { id, error: e.message };
        }
      })
    );
    const ok = got.filter((g) => g.t);
    const colors = window.SweepPalette.FALLBACK;
    const series = ok.map((g, i) => ({
      name: `#${g.t.id} ${g.t.cell} (sweep ${g.t.sweep_id})`,
      color: colors[i % colors.length],
      width: 2,
      points: curveSeries(g.m),
      tokensPerStep: g.t.tokens && g.t.total_steps ? g.t.tokens / g.t.total_steps : null,
      className: `trial-${g.t.id}`,
    }));
    const keys = [...new Set(ok.flatMap((g) => Object.keys(g.t.config)))].sort();
    const differs = (k) => new Set(ok.map((g) => JSON.stringify(g.t.config[k]))).size > 1;
    const tokensKnown = series.length && series.every((s) => s.tokensPerStep);
    render(
      main,
      "compare",
      h("h1", { text: "Compare runs" }),
      form,
      got.filter((g) => g.error).map((g) => h("p", { class: "error-text", text: `trial ${g.id}: ${g.error}` })),
      ok.length
        ? [
            h(
              "figure",
              { class: "chart-box", id: "compare-curves" },
              h("figcaption", { text: "eval loss" }),
              window.Charts.interactive({
                series,
                xLabel: "step",
                yLabel: "eval loss",
                width: 900,
                height: 360,
                yFormat: fmtLoss,
                xAlt: tokensKnown ? { label: "tokens", scale: (x, s) => x * s.tokensPerStep } : null,
              }),
              legendOf(series, series.map((s) => ({ name: s.name, color: s.color })))
            ),
            h("h2", { text: "Config diff" }),
            h(
              "table",
              { class: "grid-table config-table", id: "compare-diff" },
              h("thead", {}, h("tr", {}, h("th", { text: "hyperparameter" }), ok.map((g) => h("th", {}, h("a", { href: `#/trials/${g.t.id}`, text: `#${g.t.id}` }))))),
              h(
                "tbody",
                {},
                h("tr", {}, h("th", { text: "final loss" }), ok.map((g) => h("td", { class: "num", text: fmtLoss(g.t.final_loss) }))),
                h("tr", {}, h("th", { text: "cell" }), ok.map((g) => h("td", { text: g.t.cell }))),
                keys.map((k) =>
                  h("tr", { class: differs(k) ? "differs-row" : "", dataset: { hparam: k } }, h("th", { text: k }), ok.map((g) => h("td", { class: `num ${differs(k) ? "differs" : ""}`, text: fmtNum(g.t.config[k]) })))
                )
              )
            ),
          ]
        : h("p", { class: "empty", text: "No runs selected: tick trials in a cell's or a sweep's trial table, or add one by id above." })
    );
    ready(main);
    markRendered("compare");
  }

  // ---- export and copy ------------------------------------------------------------------------------------
  // Download links: plain links (a right-click "save as" works without a token); with a token the click
  // fetches with the Authorization header and saves the blob instead (a link cannot send the header).
  function exportLinks(sweepId) {
    return h(
      "span",
      { class: "exports" },
      h("span", { class: "k", text: "export" }),
      ["csv", "json", "parquet"].map((f) =>
        h("a", {
          href: `/sweeps/${sweepId}/export?format=${f}`,
          id: `export-${f}`,
          class: "button-link",
          download: `sweep-${sweepId}.${f}`,
          text: f.toUpperCase(),
          onclick: async (ev) => {
            if (!state.token) return;
            ev.preventDefault();
            const res = await fetch(ev.currentTarget.getAttribute("href"), { headers: headers() });
            if (!res.ok) return alert(`HTTP ${res.status}`);
            const url = URL.createObjectURL(await res.blob());
            const a = h("a", { href: url, download: `sweep-${sweepId}.${f}` });
            document.body.appendChild(a);
            a.click();
            a.remove();
            setTimeout(() => URL.revokeObjectURL(url), 1000);
          },
        })
      )
    );
  }

  const yamlValue = (v) => (typeof v === "string" && !/^[A-Za-z_][\w.-]*$/.test(v) ? JSON.stringify(v) : typeof v === "number" && !Number.isInteger(v) && Math.abs(v) < 1e-3 ? v.toExponential() : String(v));
  function configYaml(cell) {
    const lines = [`optimizer: ${cell.optimizer}`, `scale: ${cell.scale}`, `chinchilla: ${cell.chinchilla}`, "config:"];
    for (const [k, v] of Object.entries(cell.best_config || {})) lines.push(`  ${k}: ${yamlValue(v)}`);
    return lines.join("\n") + "\n";
  }
  // `valid`: the trainer's hyperparameter names for this optimizer (GET /optimizers/{name}), or null when
  // unknown. A best config imported from the paper's results also holds constants of the authors' code that our
  // trainer has no setting for (nesterov, lr_schedule, ...): `train` would refuse them, so they are left out of
  // the command and named in a trailing comment.
  function trainCommand(cell, valid) {
    const fmt = ([k, v]) => `${k}=${typeof v === "string" ? JSON.stringify(v) : v}`;
    const entries = Object.entries(cell.best_config || {});
    const kept = valid ? entries.filter(([k]) => valid.has(k)) : entries;
    const left = valid ? entries.filter(([k]) => !valid.has(k)) : [];
    const parts = ["sweep-service train", `--scale ${cell.scale}`, `--optimizer ${cell.optimizer}`, `--chinchilla ${cell.chinchilla}`, ...kept.map((e) => `--set ${fmt(e)}`)];
    if (left.length) parts.push(`  # left out, not settings of this trainer: ${left.map(fmt).join(", ")}`);
    return parts.join(" ");
  }
  async function trainerKeys(ctx, optimizer) {
    const got = await optional(`/optimizers/${encodeURIComponent(optimizer)}`, ctx.signal);
    if (!got.data) return null;
    return new Set(Object.values(got.data.hparams || {}).flatMap((hp) => Object.keys(hp)));
  }
  function copyButtons(cell, valid) {
    if (!cell.best_config) return null;
    const out = h("pre", { class: "copy-out", id: "copy-out", hidden: true });
    const copy = (text, what) => async (ev) => {
      out.hidden = false;
      out.textContent = text;
      out.dataset.what = what;
      try {
        await navigator.clipboard.writeText(text);
        ev.target.textContent = "Copied ✓";
      } catch (e) {
        // no clipboard (an insecure origin): the text is shown, selected, for Ctrl+C
        const r = document.createRange();
        r.selectNodeContents(out);
        getSelection().removeAllRanges();
        getSelection().addRange(r);
      }
    };
    return h(
      "div",
      { class: "copy-box" },
      h("div", { class: "row" }, h("button", { type: "button", id: "copy-yaml", text: "Copy best config (YAML)", onclick: copy(configYaml(cell), "yaml") }), h("button", { type: "button", id: "copy-train", text: "Copy as sweep-service train", onclick: copy(trainCommand(cell, valid), "train") })),
      out
    );
  }

  // ---- tables: sortable, filterable -----------------------------------------------------------------------
  // Every .grid-table gets a scroll wrapper (so a wide table scrolls inside itself instead of widening the
  // page on a phone), and header buttons that sort it (numbers as numbers); a table over 8 rows gets a filter
  // box. The sort order of a table (by id) is kept when a live page redraws it.
  const sortState = new Map();
  const cellValue = (td) => {
    const t = (td && td.textContent.trim()) || "";
    const n = parseFloat(t.replace(/^#/, "").replace(/[×,]/g, ""));
    return Number.isFinite(n) && /^[#\-+]?[\d.]/.test(t) ? n : t.toLowerCase();
  };
  function sortTable(table, col, dir) {
    const body = table.tBodies[0];
    if (!body) return;
    const rows = [...body.rows];
    rows.sort((a, b) => {
      const x = cellValue(a.cells[col]);
      const y = cellValue(b.cells[col]);
      const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return dir * c;
    });
    body.append(...rows);
    table.querySelectorAll("thead th").forEach((th, i) => th.setAttribute("aria-sort", i === col ? (dir > 0 ? "ascending" : "descending") : "none"));
  }
  function enhance(table) {
    if (table.dataset.enhanced) return;
    table.dataset.enhanced = "1";
    if (!table.parentElement.classList.contains("table-wrap")) {
      const wrap = h("div", { class: "table-wrap" });
      table.replaceWith(wrap);
      wrap.appendChild(table);
    }
    const head = table.tHead && table.tHead.rows[0];
    if (!head || table.classList.contains("speedup-matrix")) return;
    // Each cell knows its column's name: on a phone a "cards" table shows rows as blocks, labelled.
    const names = [...head.cells].map((th) => th.textContent.trim());
    for (const body of table.tBodies) for (const r of body.rows) [...r.cells].forEach((td, i) => {
      if (names[i]) td.dataset.label = names[i];
    });
    [...head.cells].forEach((th, i) => {
      if (!th.textContent.trim()) return;
      const b = h("button", { type: "button", class: "sort", text: th.textContent, title: "sort by this column" });
      b.addEventListener("click", () => {
        const prev = sortState.get(table.id);
        const dir = prev && prev.col === i ? -prev.dir : 1;
        if (table.id) sortState.set(table.id, { col: i, dir });
        sortTable(table, i, dir);
      });
      th.replaceChildren(b);
    });
    const saved = table.id && sortState.get(table.id);
    if (saved) sortTable(table, saved.col, saved.dir);
    const body = table.tBodies[0];
    if (body && body.rows.length > 8) {
      const box = h("input", { type: "search", class: "table-filter", placeholder: "filter rows", "aria-label": "filter rows" });
      box.addEventListener("input", () => {
        const q = box.value.trim().toLowerCase();
        for (const r of body.rows) r.hidden = q && !r.textContent.toLowerCase().includes(q);
      });
      table.parentElement.before(box);
    }
  }
  function watchTables(main) {
    const run = () => {
      main.querySelectorAll("table.grid-table:not([data-enhanced])").forEach(enhance);
      paintDots(main); // colour swatches of any view (CSSOM: the CSP allows it, an attribute would not be)
    };
    new MutationObserver(run).observe(main, { childList: true, subtree: true });
    run();
  }

  // ---- best over all sweeps ---------------------------------------------------------------------------
  async function viewBestOverall(ctx, main) {
    const data = await api("/best", { signal: ctx.signal });
    const byScale = new Map();
    for (const r of data.results) {
      if (!byScale.has(r.scale)) byScale.set(r.scale, []);
      byScale.get(r.scale).push(r);
    }
    const scales = [...byScale.keys()].sort((a, b) => (byScale.get(a)[0].non_embedding_params || 0) - (byScale.get(b)[0].non_embedding_params || 0));
    render(
      main,
      "best",
      h("h1", { text: "Best per scale, over all sweeps" }),
      h("p", { class: "muted", text: "For each scale and data multiple, every optimizer's best loss over all finished work (imported results too), with the loss difference to AdamW's best at the same scale and multiple. Speedups (D_eff / D) are on each sweep's page." }),
      scales.length
        ? scales.map((scale) => {
            const rs = byScale.get(scale).slice().sort((a, b) => a.chinchilla - b.chinchilla || a.loss - b.loss);
            const adamw = new Map(rs.filter((r) => r.optimizer === "adamw").map((r) => [r.chinchilla, r.loss]));
            const digits = decimalsFor(rs.map((r) => r.loss));
            return h(
              "section",
              { class: "scale-table", dataset: { scale } },
              h("h3", { text: `${scale}${rs[0].non_embedding_params ? ` (${fmtNum(rs[0].non_embedding_params)} non-embedding parameters)` : ""}` }),
              h(
                "table",
                { class: "grid-table cards" },
                h("thead", {}, h("tr", {}, ["Optimizer", "D", "Best loss", "Δ vs AdamW", "Config", "Near-ties", "From"].map((t) => h("th", { text: t })))),
                h(
                  "tbody",
                  {},
                  rs.map((r) =>
                    h(
                      "tr",
                      { dataset: { optimizer: r.optimizer } },
                      h("td", {}, h("i", { class: "dot", dataset: { color: colorOf(r.optimizer) } }), r.optimizer),
                      h("td", { class: "num", text: fmtNum(r.chinchilla) }),
                      h("td", { class: "num", text: fmtLoss(r.loss, digits) }),
                      h("td", { class: "num", text: adamw.has(r.chinchilla) ? (r.loss - adamw.get(r.chinchilla)).toFixed(digits) : "—" }),
                      h("td", { class: "config", text: configText(r.config) }),
                      h("td", { class: "num", text: String(otherTies(r.config, r.near_ties).length) }),
                      h("td", {}, h("a", { href: cellHref(r.sweep_id, r.cell), text: `#${r.sweep_id} ${r.sweep_name}` }), r.imported ? h("span", { class: "tag", text: "imported" }) : null)
                    )
                  )
                )
              )
            );
          })
        : h("p", { class: "empty", text: "No finished work yet." })
    );
    paintDots(main);
    ready(main);
    markRendered("best");
  }

  // ---- start ------------------------------------------------------------------------------------------
  function start() {
    $("#token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (!$("#token-input").value.trim()) return; // "Clear" forgets the token; an empty Save does nothing
      setToken($("#token-input").value);
      $("#auth-prompt").hidden = true;
      route();
    });
    $("#token-clear").addEventListener("click", () => {
      setToken("");
      route();
    });
    $("#auth-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = $("#auth-token").value;
      if (!value.trim()) return;
      setToken(value);
      $("#auth-token").value = "";
      $("#auth-prompt").hidden = true;
      route();
    });
    showTokenState();
    watchTables($("#main"));
    window.addEventListener("hashchange", route);
    // Leaving the page (or its being frozen in the back-forward cache) ends its event stream and requests:
    // an open stream costs the server a progress snapshot every second (api/routers/events.py).
    window.addEventListener("pagehide", () => {
      if (state.view) state.view.abort();
    });
    window.addEventListener("pageshow", (ev) => {
      if (ev.persisted) route();
    });
    route();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
