// A sweep spec as text (YAML or JSON) -> a JSON value, with the line each field was written on.
//
// Why here: POST /sweeps takes JSON; the CLI takes YAML too (examples/quickstart.yaml), and a user pastes
// either. The page parses the text itself (no server round trip, no library to ship) and keeps, for each
// field path ("search.adamw.grid.lr", "optimizers.0"), its line, so the API's 422 errors, which name fields,
// are shown next to the line that wrote the field.
//
// The YAML subset is what sweep specs use: block mappings and sequences, flow [..] and {..} (over several
// lines too), comments, plain / 'single' / "double" quoted scalars. Scalars follow PyYAML (YAML 1.1, what
// `sweep-service run` reads) for null, booleans and numbers, except that 1e-3 is a number here (PyYAML reads
// a string, which the spec converts to a number anyway: sweep_service/spec.py _number). JSON is a subset of
// flow YAML. Anchors, tags, block scalars and multiple documents are refused with the line, never guessed.
(function (global) {
  "use strict";

  class SpecSyntaxError extends Error {
    constructor(message, line) {
      super(line ? `line ${line}: ${message}` : message);
      this.line = line || null;
    }
  }

  const NULLS = new Set(["", "~", "null", "Null", "NULL"]);
  const TRUES = new Set(["true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"]);
  const FALSES = new Set(["false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"]);
  const INT = /^[-+]?(0|[1-9][0-9_]*)$/;
  const FLOAT = /^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?$/;

  function scalar(text, line) {
    const t = text.trim();
    if (NULLS.has(t)) return null;
    if (TRUES.has(t)) return true;
    if (FALSES.has(t)) return false;
    if (INT.test(t) || FLOAT.test(t)) return Number(t.replace(/_/g, ""));
    if (/^[-+]?\.(inf|Inf|INF)$/.test(t)) return t.startsWith("-") ? -Infinity : Infinity;
    if (/^\.(nan|NaN|NAN)$/.test(t)) return NaN;
    if (t.startsWith('"')) return doubleQuoted(t, line);
    if (t.startsWith("'")) return singleQuoted(t, line);
    if (/^[&*!|>%@`]/.test(t)) throw new SpecSyntaxError(`unsupported YAML (${t[0]}): write plain values`, line);
    return t;
  }

  function doubleQuoted(t, line) {
    try {
      return JSON.parse(t);
    } catch (e) {
      throw new SpecSyntaxError(`bad double-quoted string ${t.slice(0, 40)}`, line);
    }
  }

  function singleQuoted(t, line) {
    if (t.length < 2 || !t.endsWith("'")) throw new SpecSyntaxError(`unterminated string ${t.slice(0, 40)}`, line);
    return t.slice(1, -1).replace(/''/g, "'");
  }

  // The end of a quoted string starting at s[i] (index after the closing quote), or -1.
  function quoteEnd(s, i) {
    const q = s[i];
    for (let j = i + 1; j < s.length; j++) {
      if (q === '"' && s[j] === "\\") j++;
      else if (s[j] === q) {
        if (q === "'" && s[j + 1] === "'") j++;
        else return j + 1;
      }
    }
    return -1;
  }

  // A line without its comment: `#` at the start or after whitespace, outside quotes.
  function stripComment(s) {
    for (let i = 0; i < s.length; i++) {
      const c = s[i];
      if (c === '"' || c === "'") {
        const e = quoteEnd(s, i);
        if (e < 0) return s;
        i = e - 1;
      } else if (c === "#" && (i === 0 || s[i - 1] === " " || s[i - 1] === "\t")) {
        return s.slice(0, i);
      }
    }
    return s;
  }

  // ---- flow collections ([..], {..}, and so JSON) over a text whose offsets map to lines ----
  class Flow {
    constructor(text, lineAt, record) {
      this.s = text;
      this.i = 0;
      this.lineAt = lineAt;
      this.record = record;
    }
    line() {
      return this.lineAt(this.i);
    }
    ws() {
      while (this.i < this.s.length && /\s/.test(this.s[this.i])) this.i++;
    }
    fail(msg) {
      throw new SpecSyntaxError(msg, this.line());
    }
    value(path) {
      this.ws();
      this.record(path, this.line());
      const c = this.s[this.i];
      if (c === "[") return this.seq(path);
      if (c === "{") return this.map(path);
      if (c === '"' || c === "'") {
        const e = quoteEnd(this.s, this.i);
        if (e < 0) this.fail("unterminated string");
        const t = this.s.slice(this.i, e);
        this.i = e;
        return scalar(t, this.line());
      }
      const start = this.i;
      while (this.i < this.s.length && !",]}".includes(this.s[this.i])) this.i++;
      const t = this.s.slice(start, this.i).trim();
      if (!t) this.fail("a value is missing");
      return scalar(t, this.lineAt(start));
    }
    seq(path) {
      this.i++;
      const out = [];
      for (;;) {
        this.ws();
        if (this.s[this.i] === "]") {
          this.i++;
          return out;
        }
        out.push(this.value(join(path, out.length)));
        this.ws();
        if (this.s[this.i] === ",") this.i++;
        else if (this.s[this.i] !== "]") this.fail("expected , or ] in a list");
      }
    }
    key() {
      this.ws();
      const c = this.s[this.i];
      if (c === '"' || c === "'") {
        const e = quoteEnd(this.s, this.i);
        if (e < 0) this.fail("unterminated key");
        const t = this.s.slice(this.i, e);
        this.i = e;
        return String(scalar(t, this.line()));
      }
      const start = this.i;
      while (this.i < this.s.length && !(this.s[this.i] === ":" && /[\s,\]}]|^$/.test(this.s[this.i + 1] || ""))) {
        if (",]}{[".includes(this.s[this.i])) this.fail("expected key: value in a mapping");
        this.i++;
      }
      const k = this.s.slice(start, this.i).trim();
      if (!k) this.fail("a key is missing");
      return k;
    }
    map(path) {
      this.i++;
      const out = {};
      for (;;) {
        this.ws();
        if (this.s[this.i] === "}") {
          this.i++;
          return out;
        }
        const k = this.key();
        this.ws();
        if (this.s[this.i] !== ":") this.fail(`expected : after ${k}`);
        this.i++;
        out[k] = this.value(join(path, k));
        this.ws();
        if (this.s[this.i] === ",") this.i++;
        else if (this.s[this.i] !== "}") this.fail("expected , or } in a mapping");
      }
    }
  }

  function join(path, key) {
    return path ? `${path}.${key}` : String(key);
  }

  // Bracket depth change of a line (outside quotes), to know where a multi-line flow collection ends.
  function depth(s) {
    let d = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s[i];
      if (c === '"' || c === "'") {
        const e = quoteEnd(s, i);
        if (e < 0) return d;
        i = e - 1;
      } else if (c === "[" || c === "{") d++;
      else if (c === "]" || c === "}") d--;
    }
    return d;
  }

  const KEY = /^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s'"\[\]{}#,&*!|>%@`-][^#]*?|-[^\s#][^#]*?)\s*:(?:\s+|$)/;

  function parse(text) {
    const lines = [];
    const raw = String(text).replace(/\r\n?/g, "\n").split("\n");
    raw.forEach((r, n) => {
      const body = stripComment(r).replace(/\s+$/, "");
      if (!body.trim()) return;
      const indent = body.length - body.replace(/^ +/, "").length;
      if (body[indent] === "\t") throw new SpecSyntaxError("tabs cannot indent YAML; use spaces", n + 1);
      const t = body.slice(indent);
      if (t === "---" || t === "...") {
        if (lines.length) throw new SpecSyntaxError("one document only (--- starts a second)", n + 1);
        return;
      }
      lines.push({ indent, text: t, line: n + 1 });
    });
    const where = {};
    const record = (path, line) => {
      if (!(path in where)) where[path] = line;
    };
    if (!lines.length) throw new SpecSyntaxError("the spec is empty", 1);

    // An inline value starting at lines[i] (text `t`): a flow collection may run over the next lines.
    function inline(i, t, path) {
      if (t[0] !== "[" && t[0] !== "{") {
        record(path, lines[i].line);
        return [scalar(t, lines[i].line), i + 1];
      }
      const parts = [t];
      const starts = [lines[i].line];
      let d = depth(t);
      let j = i + 1;
      while (d > 0 && j < lines.length) {
        parts.push(lines[j].text);
        starts.push(lines[j].line);
        d += depth(lines[j].text);
        j++;
      }
      if (d > 0) throw new SpecSyntaxError("unclosed [ or {", lines[i].line);
      const text = parts.join("\n");
      const offsets = [];
      let o = 0;
      parts.forEach((p) => {
        offsets.push(o);
        o += p.length + 1;
      });
      const lineAt = (k) => {
        let n = 0;
        while (n + 1 < offsets.length && offsets[n + 1] <= k) n++;
        return starts[n];
      };
      const flow = new Flow(text, lineAt, record);
      const value = flow.value(path);
      flow.ws();
      if (flow.i < text.length) flow.fail(`unexpected text after the value: ${text.slice(flow.i, flow.i + 20)}`);
      return [value, j];
    }

    function isItem(t) {
      return t === "-" || t.startsWith("- ");
    }

    function node(i, indent, path) {
      const l = lines[i];
      if (isItem(l.text)) return seq(i, l.indent, path);
      if (KEY.test(l.text) && l.text[0] !== "[" && l.text[0] !== "{") return map(i, l.indent, path);
      return inline(i, l.text, path);
    }

    function seq(i, indent, path) {
      const out = [];
      record(path, lines[i].line);
      while (i < lines.length && lines[i].indent === indent && isItem(lines[i].text)) {
        const l = lines[i];
        const itemPath = join(path, out.length);
        const rest = l.text.slice(1).replace(/^ +/, "");
        if (!rest) {
          record(itemPath, l.line);
          if (i + 1 < lines.length && lines[i + 1].indent > indent) {
            const [v, j] = node(i + 1, lines[i + 1].indent, itemPath);
            out.push(v);
            i = j;
          } else {
            out.push(null);
            i++;
          }
          continue;
        }
        // "- key: value" opens a mapping whose keys line up with `key`.
        const at = indent + (l.text.length - rest.length);
        lines[i] = { indent: at, text: rest, line: l.line };
        record(itemPath, l.line);
        const [v, j] = node(i, at, itemPath);
        out.push(v);
        i = j;
      }
      if (i < lines.length && lines[i].indent > indent) throw new SpecSyntaxError("bad indentation", lines[i].line);
      return [out, i];
    }

    function map(i, indent, path) {
      const out = {};
      if (path) record(path, lines[i].line);
      while (i < lines.length && lines[i].indent === indent && !isItem(lines[i].text)) {
        const l = lines[i];
        const m = KEY.exec(l.text);
        if (!m) throw new SpecSyntaxError(`expected "key: value", got ${l.text.slice(0, 40)}`, l.line);
        const k = /^["']/.test(m[1]) ? String(scalar(m[1], l.line)) : m[1].trim();
        const keyPath = join(path, k);
        const rest = l.text.slice(m[0].length).trim();
        record(keyPath, l.line);
        if (rest) {
          const [v, j] = inline(i, rest, keyPath);
          out[k] = v;
          i = j;
        } else if (
          i + 1 < lines.length &&
          (lines[i + 1].indent > indent || (lines[i + 1].indent === indent && isItem(lines[i + 1].text)))
        ) {
          const [v, j] = node(i + 1, lines[i + 1].indent, keyPath);
          out[k] = v;
          i = j;
        } else {
          out[k] = null;
          i++;
        }
      }
      if (i < lines.length && lines[i].indent > indent) throw new SpecSyntaxError("bad indentation", lines[i].line);
      return [out, i];
    }

    const [value, next] = node(0, lines[0].indent, "");
    if (next < lines.length) {
      throw new SpecSyntaxError("unexpected text (check the indentation)", lines[next].line);
    }
    return { value, lines: where };
  }

  // The line of a field path, or of its nearest written parent ("search.adamw.baseline.lr" -> "search.adamw").
  function lineOf(lines, field) {
    let path = String(field || "");
    while (path) {
      if (path in lines) return lines[path];
      const cut = path.lastIndexOf(".");
      path = cut < 0 ? "" : path.slice(0, cut);
    }
    return null;
  }

  global.SweepYaml = { parse, lineOf, SpecSyntaxError };
})(typeof window !== "undefined" ? window : globalThis);
