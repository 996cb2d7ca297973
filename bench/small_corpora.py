"""Builds the small-files corpora in bench/texts/small/ (sources: bench/texts/small/SOURCES.md).

    python -m bench.small_corpora [--flask GIT_DIR] [--out bench/texts/small]

Four kinds of small files, 0.3-4 KB each, every corpus split into files to train a dictionary on and 20
held-out test files (disjoint), chosen deterministically (sorted by name, every k-th to the test set):

* ``commits``: commit records (hash line, author, date, message, changed-files summary) of the Flask
  repository (``git log --stat`` of a checkout: ``--flask``);
* ``json``: AWS API pagination descriptions (botocore's ``paginators-1.json``), one service per file;
* ``man``: manual page sources (roff) of this Debian machine's commands (/usr/share/man/man1);
* ``copyright``: Debian package copyright files (/usr/share/doc/*/copyright).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "texts" / "small"
LOW, HIGH = 300, 4000
TEST_FILES = 20
TRAIN_FILES = 150


def _fits(data: bytes) -> bool:
    return LOW <= len(data) <= HIGH


def commits(git_dir: str) -> dict[str, bytes]:
    out = subprocess.run(["git", "--git-dir", git_dir, "log", "--no-merges", "--stat", "--date=iso",
                          "--format=%x00commit %H%nAuthor: %an%nDate:   %ad%n%n%B"], capture_output=True, check=True).stdout
    records = {}
    for chunk in out.split(b"\x00")[1:]:
        text = chunk.strip() + b"\n"
        if _fits(text):
            records[text.split(b"\n", 1)[0][7:19].decode() + ".txt"] = text
    return records


def json_records() -> dict[str, bytes]:
    import botocore

    data = Path(botocore.__file__).parent / "data"
    out = {}
    for path in sorted(data.glob("*/*/paginators-1.json")):
        blob = path.read_bytes()
        if _fits(blob):
            out[f"{path.parent.parent.name}-{path.parent.name}.json"] = blob
    return out


def manpages() -> dict[str, bytes]:
    import gzip

    out = {}
    for path in sorted(Path("/usr/share/man/man1").glob("*.1.gz")):
        if path.is_file() and not path.is_symlink():
            blob = gzip.decompress(path.read_bytes())
            if _fits(blob) and not blob.startswith(b".so "):  # not a mere pointer to another page
                out[path.name[:-3]] = blob
    return out


def copyrights() -> dict[str, bytes]:
    out = {}
    for path in sorted(Path("/usr/share/doc").glob("*/copyright")):
        if path.is_file() and not path.is_symlink() and _fits(path.read_bytes()):
            out[path.parent.name + ".txt"] = path.read_bytes()
    return out


def split(files: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(train, test): every k-th file (sorted by name) to the test set, at most TRAIN_FILES to train."""
    names = sorted(files)
    step = max(2, len(names) // TEST_FILES)
    test = {n: files[n] for n in names[::step][:TEST_FILES]}
    rest = [n for n in names if n not in test]
    stride = max(1, len(rest) // TRAIN_FILES)
    train = {n: files[n] for n in rest[::stride][:TRAIN_FILES]}
    return train, test


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.small_corpora", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flask", help="git directory of a Flask clone (commit records)")
    p.add_argument("--out", default=str(ROOT))
    args = p.parse_args(argv)
    kinds = {"json": json_records(), "man": manpages(), "copyright": copyrights()}
    if args.flask:
        kinds["commits"] = commits(args.flask)
    for kind, files in kinds.items():
        train, test = split(files)
        for part, chosen in (("train", train), ("test", test)):
            folder = Path(args.out) / kind / part
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            for name, blob in chosen.items():
                (folder / name).write_bytes(blob)
        print(f"{kind}: {len(train)} train, {len(test)} test files ({sum(map(len, test.values())):,} test bytes)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
