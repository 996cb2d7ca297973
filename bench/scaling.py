"""Throughput against workers: many files compressed and restored by one process, by -j N local worker
processes, and by a Ray cluster of two nodes started on this machine (two ``ray start`` processes).

    python -m bench.scaling [FILE_OR_DIR ...] [--jobs 1 2] [--ray-nodes 2] [--restore-files 10] [--out DIR]

Each configuration runs ``memzip.compress_files`` (and ``decompress_files`` on the first
``--restore-files`` outputs) on copies of the files in a scratch directory; every output is compared
with the one-process output byte for byte. Reported: wall time, input bytes/s, the rate per worker,
the pool's start-up (workers importing torch and loading the model: timed by mapping one empty piece),
and from those a prediction for 10 and 100 machines of this kind (each worker a machine's worth of
work; start-up paid once per machine, in parallel). Writes DIR/scaling.md and DIR/scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import memzip
from memzip.parallel import WorkerSpec, open_pool

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "scaling"
DEFAULT = [ROOT / "texts" / "small" / kind / "test" for kind in ("commits", "copyright")]


def _inputs(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        out += sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    return out


def _copy(files: list[Path], where: Path) -> list[str]:
    where.mkdir(parents=True)
    out = []
    for i, f in enumerate(files):
        target = where / f"{i:03d}-{f.name}"
        shutil.copyfile(f, target)
        out.append(str(target))
    return out


def _run(label: str, files: list[Path], scratch: Path, jobs: int, ray, restore: int, model) -> dict:
    """One configuration on a pool started once: its start (every worker importing torch and loading the
    model, timed by one empty piece per worker), the cost of a piece beyond its coding (50 empty pieces),
    then the files compressed and the first ``restore`` restored, each timed on the warm pool."""
    from memzip import batch

    work = scratch / label.replace(" ", "_").replace(",", "")
    paths = _copy(files, work)
    started = time.perf_counter()
    pool = open_pool(WorkerSpec(model), jobs, ray)
    try:
        list(pool.map("compress", [b""] * pool.workers))
        startup = time.perf_counter() - started
        started = time.perf_counter()
        list(pool.map("compress", [b""] * 50))
        per_piece = (time.perf_counter() - started) / 50
        c = batch.run("compress", paths, pool.mapper("compress"))
        outputs = [Path(p + ".mz").read_bytes() for p in paths]
        for p in paths[:restore]:
            os.unlink(p)
        d = batch.run("decompress", [p + ".mz" for p in paths[:restore]], pool.mapper("decompress"))
    finally:
        pool.close()
    ok = all(Path(p).read_bytes() == f.read_bytes() for p, f in zip(paths[:restore], files))
    return {"label": label, "workers": pool.workers, "files": len(files), "bytes": c.read,
            "compress_s": round(c.seconds, 2), "compress_Bps": round(c.read / c.seconds, 1),
            "restore_files": restore, "restore_bytes": d.written, "restore_s": round(d.seconds, 2),
            "restore_Bps": round(d.written / d.seconds, 1), "startup_s": round(startup, 2),
            "per_piece_ms": round(per_piece * 1000, 1), "exact": ok, "outputs": outputs}


def _ray_cluster(nodes: int) -> tuple[str, callable]:
    """A Ray cluster of ``nodes`` nodes on this machine (one CPU each): its address, and its stopper."""
    ray = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    port = 6391
    # Ray 2.59+ turns on token authentication for a local head when a token file exists (~/.ray/auth_token,
    # written by an earlier ray.init); both nodes and this driver must agree: off, on this one machine
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"],
                   check=True, capture_output=True, env=env)
    for _ in range(nodes - 1):
        subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1"], check=True,
                       capture_output=True, env=env)
    return f"127.0.0.1:{port}", lambda: subprocess.run([ray, "stop", "--force"], capture_output=True, env=env)


def table(rows: list[dict]) -> str:
    base = rows[0]
    lines = ["| configuration | workers | compress B/s | × one process | per worker B/s | restore B/s | × one process "
             "| pool start s | ms per piece beyond its coding | exact |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        workers = r["workers"]
        lines.append(f"| {r['label']} | {workers} | {r['compress_Bps']:,.0f} | {r['compress_Bps'] / base['compress_Bps']:.2f} "
                     f"| {r['compress_Bps'] / workers:,.0f} | {r['restore_Bps']:,.0f} | "
                     f"{r['restore_Bps'] / base['restore_Bps']:.2f} | {r['startup_s']:.1f} | {r['per_piece_ms']:.1f} | "
                     f"{'yes' if r['exact'] and r['identical'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="*", type=Path, help="files or directories (default: two small-files test sets)")
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--ray-nodes", type=int, default=2, help="nodes of the local Ray cluster (0: no Ray row)")
    p.add_argument("--restore-files", type=int, default=10)
    p.add_argument("--model", help="model (default: the packaged one)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    files = _inputs(args.inputs or DEFAULT)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for jobs in args.jobs:
            row = _run(f"-j {jobs}", files, Path(scratch), jobs, None, args.restore_files, args.model)
            rows.append(row)
            print({k: v for k, v in row.items() if k != "outputs"}, flush=True)
        if args.ray_nodes:
            address, stop = _ray_cluster(args.ray_nodes)
            try:
                row = _run(f"Ray, {args.ray_nodes} nodes", files, Path(scratch), 0, address, args.restore_files, args.model)
            finally:
                stop()
            rows.append(row)
            print({k: v for k, v in row.items() if k != "outputs"}, flush=True)
    reference = rows[0]["outputs"]
    for r in rows:
        r["identical"] = r.pop("outputs") == reference  # byte for byte, every file, against one process
    return _write(rows, args, files)


def _write(rows, args, files) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "files": len(files), "command": "python -m bench.scaling"}
    (args.out / "scaling.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (args.out / "scaling.md").write_text(table(rows) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
