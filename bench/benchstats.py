"""What the benchmarks share: the nearest-rank percentile, the summary of a sample, its table
and the results file."""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Callable


def nearest_rank(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of ``values``."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def summary(xs: list[float], unit: str, digits: int) -> dict:
    """n, p50, p99, min, max, mean and population stdev of ``xs`` (not empty), each rounded to
    ``digits`` and keyed ``<figure>_<unit>`` (``p50_s``, ``p50_ms``)."""
    s = sorted(xs)
    figures = {"p50": statistics.median(s), "p99": nearest_rank(s, 99), "min": s[0], "max": s[-1],
               "mean": statistics.fmean(s), "stdev": statistics.pstdev(s)}
    return {"n": len(s), **{f"{k}_{unit}": round(v, digits) for k, v in figures.items()}}


RESULTS = Path(__file__).resolve().parent / "results"


def arg_parser(doc: str, results_name: str) -> argparse.ArgumentParser:
    """The command line of a benchmark: described by the first line of its ``doc``, with
    ``--out`` (default bench/results/<results_name>.json); the caller adds its own options."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", default=str(RESULTS / f"{results_name}.json"))
    return ap


FIGURES = ("p50", "p99", "min", "max", "mean", "stdev")


def print_table(first: str, rows: dict[str, dict], unit: str, digits: int, width: int, col: int,
                note: Callable[[dict], str] = lambda _s: "") -> None:
    """``summary`` dicts as a table, one row each (a row of n 0 is left out), ``note(row)`` after it."""
    print(f"\n{first:{width}} {'n':>3} " + " ".join(f"{f:>{col}}" for f in FIGURES) + f"  ({unit})")
    for k, s in rows.items():
        if s["n"]:
            print(f"{k:{width}} {s['n']:3} " + " ".join(f"{s[f'{f}_{unit}']:{col}.{digits}f}" for f in FIGURES)
                  + note(s))


def write_json(path: Path, doc: dict) -> None:
    """``doc`` as indented JSON at ``path`` (its folder made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path}")
