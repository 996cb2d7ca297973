"""Two versions of memzip side by side: compression and decompression speed and size of the same
files with default settings, each git revision checked out in a temporary worktree and run in its own
process, the revisions alternating file by file and round by round (this machine's speed drifts).

    python -m bench.revisions OLD NEW FILE [FILE ...] [--rounds 2] [--out DIR]

Writes DIR/revisions.json (every run) and DIR/revisions.md (medians per file and revision). Each run
loads the model (not timed), then times compress() and decompress() of one file and checks the round
trip; a run that does not restore its input fails the whole comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# runs inside the checked-out revision: prints one JSON line
ONE_RUN = r"""
import json, sys, time
import memzip
from memzip import compress, decompress
from memzip.model import load_model
lm = load_model(progress=lambda _t: None)
import os
tree = os.path.dirname(os.path.dirname(os.path.abspath(memzip.__file__)))
try:
    import memzip.engine as engine
    mine = os.path.abspath(engine.__file__).startswith(tree + os.sep)
    kernels = ("c" if engine.kernels_available() else "torch") if mine else "none"
except ImportError:
    kernels = "none"
data = open(sys.argv[1], "rb").read()
t0 = time.perf_counter(); blob = compress(data, lm); t1 = time.perf_counter()
back = decompress(blob, lm); t2 = time.perf_counter()
print(json.dumps({"module": memzip.__file__, "bytes": len(data), "compressed": len(blob), "exact": back == data,
                  "compress_s": t1 - t0, "decompress_s": t2 - t1, "kernels": kernels}))
"""


def checkout(rev: str, where: Path) -> str:
    """A detached worktree of ``rev`` at ``where``, with its C extensions built in place (a revision
    without them would silently run slower fallbacks); returns the full commit id."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", rev + "^{commit}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(where), commit], check=True)
    if (where / "setup.py").is_file():
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=where, check=True,
                       capture_output=True)
    return commit


def one_run(tree: Path, path: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", ONE_RUN, str(Path(path).resolve())], cwd=tree,
                          capture_output=True, text=True, env={"PYTHONPATH": str(tree), **_env()})
    if proc.returncode != 0:
        raise SystemExit(f"run of {path} in {tree} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not Path(result.pop("module")).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"the run meant for {tree} imported memzip from elsewhere")
    if not result["exact"]:
        raise SystemExit(f"{tree}: {path} did not round-trip")
    return result


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def table(runs: list[dict], revs: list[str]) -> str:
    lines = ["| file | bytes | revision | compressed | ratio | compress B/s | decompress B/s | runs |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for path in dict.fromkeys(r["file"] for r in runs):
        for rev in revs:
            mine = [r for r in runs if r["file"] == path and r["rev"] == rev]
            n = mine[0]["bytes"]
            c = statistics.median(r["compress_s"] for r in mine)
            d = statistics.median(r["decompress_s"] for r in mine)
            size = mine[0]["compressed"]
            lines.append(f"| {Path(path).name} | {n:,} | {rev[:10]} | {size:,} | {size / n:.3f} | "
                         f"{n / c:.0f} | {n / d:.0f} | {len(mine)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.revisions", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("files", nargs="+")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "revisions")
    args = p.parse_args(argv)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="memzip-revisions-") as tmp:
        trees, revs = [], []
        try:
            for i, rev in enumerate((args.old, args.new)):
                trees.append(Path(tmp) / f"rev{i}")
                revs.append(checkout(rev, trees[-1]))
            for round_no in range(args.rounds):
                for path in args.files:
                    order = range(2) if (round_no + len(runs) // 2) % 2 == 0 else range(1, -1, -1)
                    for i in order:
                        result = {"file": path, "rev": revs[i], "round": round_no, **one_run(trees[i], path)}
                        print(json.dumps(result), flush=True)
                        runs.append(result)
        finally:
            for tree in trees:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.revisions " + " ".join(sys.argv[1:] if argv is None else argv)
    (args.out / "revisions.json").write_text(json.dumps({"command": command, "revisions": revs, "runs": runs}, indent=1))
    md = f"`{command}`\n\nmedians over {args.rounds} rounds:\n\n" + table(runs, revs)
    (args.out / "revisions.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
