"""One fixed colour, marker and line style per implementation, and the figure look.

Colours are colour-blind safe: Okabe-Ito for the implementations that run on any machine, Paul
Tol's "muted" scheme for the GPU-only ones and for implementations attnbench does not know. A
built-in always gets the same look (a fixed table keyed by name, so adding an implementation to
the registry never recolours the others); any other name gets a slot chosen by a stable hash of
its name, moved to the next free slot only if two such names in one report would collide.
Markers differ per implementation too, and JAX implementations are dashed, so no figure
depends on colour alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping

PAPER_WIDTH_IN = 3.3        # single column
PANEL_WIDTH_IN = 1.75
PANEL_HEIGHT_IN = 1.45


@dataclass(frozen=True)
class Look:
    color: str
    marker: str
    linestyle: str = "-"
    markersize: float = 3.5


BUILTIN: dict[str, Look] = {
    # Okabe-Ito
    "softmax_torch": Look("#000000", "o"),
    "sdpa_math": Look("#0072B2", "s"),
    "sdpa_flash": Look("#56B4E9", "^"),
    "performer_torch": Look("#009E73", "D", markersize=3.0),
    "hrr_torch": Look("#D55E00", "*", markersize=5.0),
    "softmax_jax": Look("#CC79A7", "v", "--"),
    "hrr_jax": Look("#E69F00", "P", "--", markersize=4.0),
    # Paul Tol muted
    "sdpa_efficient": Look("#332288", "<"),
    "sdpa_cudnn": Look("#999933", ">"),
    "flash_attn": Look("#882255", "X", markersize=4.0),
    "xformers": Look("#44AA99", "h"),
}
FALLBACK_COLORS = ("#CC6677", "#117733", "#AA4499", "#88CCEE", "#DDCC77", "#888888")
FALLBACK_MARKERS = ("p", "d", "H", "8", "o", "s")

# status colours of the failure map (Paul Tol "light"/"bright"); each cell also carries a letter
STATUS_COLORS = {"ok": "#DDDDDD", "oom": "#EE6677", "timeout": "#CCBB44", "error": "#AA3377",
                 "unsupported": "#FFFFFF", "skipped": "#BBCCEE"}
STATUS_LETTER = {"ok": "", "oom": "M", "timeout": "T", "error": "E", "unsupported": "U",
                 "skipped": "S"}


def _hash(name: str) -> int:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16)


def looks_for(names: Iterable[str], frameworks: Mapping[str, str] | None = None
              ) -> dict[str, Look]:
    """The look of every implementation in one report (stable for the same set of names);
    ``frameworks`` (name -> framework, as registered or recorded) dashes the JAX ones."""
    names = sorted(set(names))
    frameworks = frameworks or {}
    looks = {n: BUILTIN[n] for n in names if n in BUILTIN}
    taken: set[int] = set()
    for name in names:
        if name in looks:
            continue
        slot = _hash(name) % len(FALLBACK_COLORS)
        for step in range(len(FALLBACK_COLORS)):
            if (slot + step) % len(FALLBACK_COLORS) not in taken:
                slot = (slot + step) % len(FALLBACK_COLORS)
                break
        taken.add(slot)
        dash = "--" if frameworks.get(name) == "jax" else "-"
        looks[name] = Look(FALLBACK_COLORS[slot], FALLBACK_MARKERS[slot], dash)
    return looks


def look(name: str) -> Look:
    return looks_for([name])[name]


def impl_order(names: Iterable[str], registry_order: list[str]) -> list[str]:
    """Registry order for known names, then the rest alphabetically."""
    names = set(names)
    known = [n for n in registry_order if n in names]
    return known + sorted(names - set(known))


RC = {
    "font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "xtick.labelsize": 6,
    "ytick.labelsize": 6, "legend.fontsize": 6, "lines.linewidth": 1.0,
    "axes.linewidth": 0.6, "xtick.major.width": 0.6, "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4, "ytick.minor.width": 0.4, "grid.linewidth": 0.4,
    "grid.alpha": 0.5, "axes.grid": True, "axes.grid.which": "major",
    "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 100,
    "savefig.dpi": 300, "pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "attnbench",
    "svg.fonttype": "none", "font.family": "DejaVu Sans", "legend.frameon": False,
    "path.simplify": False,
}
