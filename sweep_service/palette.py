"""One colour per optimizer, shared by the HTML report (matplotlib) and the dashboard (served as
/ui/palette.js, generated from this module by api/routers/dashboard.py), so an optimizer keeps its colour
everywhere.

The colours are colour-blind safe: Okabe & Ito's eight ("Color Universal Design", 2008,
https://jfly.uni-koeln.de/color/) first, then Paul Tol's "muted" scheme (https://personal.sron.nl/~pault/,
2021) for the optimizers beyond eight. No two greys and no two near-identical blues: AdamW, the baseline, is
the only neutral colour (black; near-white on a dark background, where black would vanish).
"""

from __future__ import annotations

import hashlib
import json

# Okabe-Ito (2008).
OKABE_ITO = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
# Paul Tol's muted scheme (2021), its nine colours.
TOL_MUTED = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499")

# The registry's optimizers (workers.optimizers.REGISTRY); the paper's main ones get Okabe-Ito colours.
OPTIMIZER_COLORS: dict[str, str] = {
    "adamw": "#000000",
    "muon": "#D55E00",
    "soap": "#0072B2",
    "kron": "#CC79A7",
    "lion": "#009E73",
    "mars": "#56B4E9",
    "muonh": "#E69F00",
    "nadamw": "#882255",
    "cautious": "#332288",
    "scion": "#999933",
    "sophia": "#CC6677",
    "adam_mini": "#44AA99",
    "adamh": "#AA4499",
}
# On a dark background (the dashboard's prefers-color-scheme: dark) black is invisible and the darkest Tol
# colours are too dim: these replace them there.
DARK_OVERRIDES: dict[str, str] = {"adamw": "#E8E8E8", "cautious": "#8877DD", "nadamw": "#CC5588"}
# Optimizers outside the table (imported names, new registry entries) take one of these by a stable hash.
FALLBACK = (*TOL_MUTED, *OKABE_ITO[1:])
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")


def color_of(name: str, dark: bool = False) -> str:
    """The colour of optimizer `name` (a stable hash into FALLBACK for names the table lacks)."""
    if dark and name in DARK_OVERRIDES:
        return DARK_OVERRIDES[name]
    if name in OPTIMIZER_COLORS:
        return OPTIMIZER_COLORS[name]
    digest = hashlib.sha256(name.encode()).digest()
    return FALLBACK[int.from_bytes(digest[:4], "big") % len(FALLBACK)]


def marker_of(name: str) -> str:
    """A matplotlib marker per optimizer: a second cue besides colour (colour-blind readers, print)."""
    names = list(OPTIMIZER_COLORS)
    index = names.index(name) if name in names else int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")
    return MARKERS[index % len(MARKERS)]


def javascript() -> str:
    """window.SweepPalette for the dashboard: the same table, the same fallback and the same hash."""
    table = json.dumps(OPTIMIZER_COLORS, sort_keys=True)
    dark = json.dumps(DARK_OVERRIDES, sort_keys=True)
    fallback = json.dumps(list(FALLBACK))
    return f"""// Generated from sweep_service/palette.py (do not edit): one colour per optimizer, as in the report.
(function (global) {{
  "use strict";
  const COLORS = {table};
  const DARK = {dark};
  const FALLBACK = {fallback};
  async function sha256(text) {{
    const buf = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
    return new DataView(buf).getUint32(0, false);
  }}
  const hashed = new Map();
  function isDark() {{
    return !!(global.matchMedia && global.matchMedia("(prefers-color-scheme: dark)").matches);
  }}
  // Synchronous: a name outside the table gets a provisional colour until its hash is known (prime() below).
  function colorOf(name) {{
    const n = String(name);
    if (isDark() && DARK[n]) return DARK[n];
    if (COLORS[n]) return COLORS[n];
    if (hashed.has(n)) return hashed.get(n);
    let x = 0;
    for (const ch of n) x = (x * 31 + ch.charCodeAt(0)) >>> 0;
    return FALLBACK[x % FALLBACK.length];
  }}
  // Resolve names outside the table with the report's hash (SHA-256), so they match it too.
  async function prime(names) {{
    if (!(global.crypto && crypto.subtle)) return;
    await Promise.all(
      [...new Set(names)].filter((n) => !COLORS[n] && !hashed.has(n)).map(async (n) => {{
        hashed.set(n, FALLBACK[(await sha256(n)) % FALLBACK.length]);
      }})
    );
  }}
  global.SweepPalette = {{ COLORS, DARK, FALLBACK, colorOf, prime, isDark }};
}})(typeof window !== "undefined" ? window : globalThis);
"""
