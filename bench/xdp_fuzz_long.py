"""The long fuzz run of bpf/xdp_vip.c against the RFC reference model (tests/unit/responder_model.py):
FRAMES_PER_CLASS frames in each of the seven classes of tests/unit/xdp_fuzz.py (2.1M in all,
ten times ``make test``'s run, with other seeds), each through BPF_PROG_TEST_RUN once.

Prints frames and answers per class, the model's reasons, every disagreement with a hex dump,
and writes bench/results/xdp_fuzz_long.json. Exit status 1 on any disagreement.
Usage: bench/xdp_fuzz_long.py [FRAMES_PER_CLASS] [SEED]
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.dataplane import Dataplane  # noqa: E402
from metalxdp.rig import xdp_fuzz as F  # noqa: E402

FRAMES_PER_CLASS = 300_000
SEED = 1903
CLASSES = ("structured_arp", "structured_ns", "mutated", "truncated", "random", "vlan", "traffic")


def main(per_class: int, seed: int) -> dict:
    dp = Dataplane(None).open()
    try:
        model = F.setup(dp)
        report = F.run(dp, model, {c: per_class for c in CLASSES}, seed)
    finally:
        dp.close()
    print(report.summary())
    for d in report.disagreements:
        print(d)
    print("model's reasons:")
    for why, n in report.reasons.most_common():
        print(f"  {n:9d}  {why}")
    return {"kernel": platform.release(), "seed": seed, "frames": report.total, "seconds": round(report.seconds, 1),
            "frames_per_s": round(report.total / report.seconds), "disagreements": len(report.disagreements),
            "per_class": {c: {"frames": report.frames[c], "answered": report.answered[c]} for c in CLASSES},
            "reasons": dict(report.reasons.most_common()), "disagreement_texts": report.disagreements[:50]}


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else FRAMES_PER_CLASS
    s = int(sys.argv[2]) if len(sys.argv) > 2 else SEED
    t0 = time.monotonic()
    out = main(n, s)
    out["elapsed_s"] = round(time.monotonic() - t0, 1)
    path = Path(__file__).resolve().parent / "results" / "xdp_fuzz_long.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{out['frames']} frames, {out['disagreements']} disagreements, {out['elapsed_s']} s; wrote {path}")
    sys.exit(1 if out["disagreements"] else 0)
