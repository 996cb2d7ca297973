"""The `memzip` command: c (compress), x (extract), info -- in the gzip/zstd tradition.

Inputs are kept; outputs are written to a temporary file beside the target and renamed into place
only when complete and verified, so an error or an interrupt never leaves a partial output. While
`memzip c` works, finished windows are journaled in FILE.mz.part; a run that is interrupted or killed
is resumed from there by the next `memzip c` of the same file, and the journal is deleted only after
the output is in place. An input larger than --frame-size is streamed into a framed file (memzip/frames.py),
restored frame by frame; `memzip x --range START:END` decodes only the frames holding those bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time

from . import __version__
from .errors import MemzipError

SUFFIX = ".mz"
JOURNAL_SUFFIX = ".part"  # FILE.mz.part: finished windows of an unfinished compression (memzip/journal.py)
RAY_ADDRESS_ENV = "MEMZIP_RAY_ADDRESS"  # memzip.parallel's default Ray address (kept torch- and ray-free here)


class UsageError(MemzipError):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="memzip", description="Lossless text compression with a frozen language model: "
                                "every token arithmetic-coded with the model's probabilities, on an exact engine.")
    p.add_argument("--version", action="version", version=f"memzip {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{c,x,info,train}")

    t = sub.add_parser("train", help="make a dictionary from sample files (like zstd --train)")

    def io_options(sp):
        if sp is t:
            sp.add_argument("files", nargs="+", metavar="SAMPLE", help="sample files or directories (searched recursively)")
        else:
            sp.add_argument("files", nargs="+", metavar="FILE", help="input files ('-' for standard input)")
        sp.add_argument("-o", "--output", metavar="OUT", help="output file (one input only; '-' for stdout)")
        sp.add_argument("-c", "--stdout", action="store_true", help="write to standard output")
        sp.add_argument("-f", "--force", action="store_true", help="overwrite existing output files")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
        sp.add_argument("-v", "--verbose", action="store_true", help="also the sizes of each output's sections")
        sp.add_argument("-k", "--keep", action="store_true", help="keep the input (always done; accepted as gzip does)")
        sp.add_argument("--model", metavar="PATH|ID", help="model directory or ID (default: packaged SmolLM2-135M-Instruct)")
        sp.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
        if sp is not t:
            sp.add_argument("-D", "--dictionary", metavar="DICT.mzd",
                            help="a dictionary made by `memzip train` (every row starts after its text; a file made "
                            "with one is restored with the same one)")
        sp.add_argument("-T", "--threads", type=int, default=None,
                        help="CPU threads (default: the cores here); only speed depends on it, never a bit of the "
                        "output: the exact engine computes the same logits with any count")
        if sp is not t:
            sp.add_argument("-j", "--jobs", type=int, default=None, metavar="N",
                            help="files coded at once by N worker processes, each loading the model once (0: one "
                            "per core; with --ray, default one per CPU of the cluster); each worker gets "
                            "cores/N threads unless -T says otherwise (default 1: one file after another)")
            sp.add_argument("-r", "--recursive", action="store_true",
                            help="directories: every regular file under them (c: those not ending in .mz; x: the "
                            ".mz files), as gzip -r")
            sp.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                            help="code the files on Ray workers (pip install 'memzip[ray]'): bare, a local Ray "
                            f"cluster or the one ${RAY_ADDRESS_ENV} names; 'auto' joins the cluster running "
                            "here; HOST:PORT or ray://HOST:PORT another (memzip must be installed on its nodes)")

    c = sub.add_parser("c", help="compress FILE to FILE.mz")
    io_options(c)
    from .format.vectors import CODES, VectorSpec
    from .settings import (DEFAULT_LEVEL, DEFAULT_WINDOW, LEVEL_CONTEXT, LEVEL_ROWS, OBJECTIVES, PRECISIONS, SIZE_STEPS,
                           SPLIT_TOKENS, STORE_POLICIES, OptimizerSettings)

    d, v = OptimizerSettings(), VectorSpec()
    levels = ", ".join(f"-{k} {n}" for k, n in LEVEL_ROWS.items())
    for k in LEVEL_ROWS:
        c.add_argument(f"-{k}", dest="level", action="store_const", const=k, default=DEFAULT_LEVEL,
                       help=argparse.SUPPRESS if k not in (1, 9) else
                       ("fastest: many short rows decoded in parallel" if k == 1 else "smallest: the longest rows"))
    c.add_argument("--window", type=int, default=None,
                   help=f"tokens of the first window (default: {DEFAULT_WINDOW} with memory vectors; without, from the "
                   f"level: rows of up to {levels} tokens, default -{DEFAULT_LEVEL}; each row is decoded as one "
                   f"sequence, all rows together: longer rows give more context, more rows decode faster; below -9 "
                   f"files of over {SPLIT_TOKENS} tokens get at least two rows)")
    c.add_argument("--context", type=int, default=None,
                   help="tokens of the first row that every later row starts after (the shared context, decoded "
                   "first; default: the level's, " + ", ".join(f"-{k} {n}" for k, n in LEVEL_CONTEXT.items()) +
                   "; with --window, 0); later rows hold window - context tokens")
    c.add_argument("--steps", type=int, default=None,
                   help=f"optimizer step budget per window (default {d.steps}; {SIZE_STEPS} with --objective size)")
    c.add_argument("--batch", type=int, default=d.batch, help=f"windows optimized together (default {d.batch})")
    c.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default 0.05 for compact codes, 0.01 for full vectors)")
    c.add_argument("--vectors", choices=CODES, default=v.code,
                   help=f"memory vectors: none = no vector, each token arithmetic-coded with the model's "
                   f"probabilities (the compressor); compact = a quantized code in a basis derived from the "
                   f"model's embeddings (--rank, --bits); full = the whole bf16 vector, the paper's setting "
                   f"(default {v.code})")
    c.add_argument("--objective", choices=OBJECTIVES, default=OBJECTIVES[0],
                   help="what memory vectors are chosen for: greedy = greedy decoding regenerates each window (the "
                   "paper's setting); size = the smallest file, one vector per row kept only if the file is smaller "
                   "with it (experimental: on the packaged model it never is) (default greedy)")
    c.add_argument("--store", choices=STORE_POLICIES, default=STORE_POLICIES[0],
                   help="smaller: store a window by the model (its coded tokens or a vector) only where that is expected to be "
                   "smaller than its share of the text compressed by zstd, the rest raw; always: every window "
                   "(the paper's setting with vectors; expands text) (default smaller)")
    c.add_argument("--verify", action="store_true",
                   help="decode the finished file as memzip x will before writing it (takes as long as memzip x; "
                   "the engine already makes compression's distributions exactly those decompression follows)")
    c.add_argument("--rank", type=int, default=v.rank, help=f"numbers per compact code, at most the model width (default {v.rank})")
    c.add_argument("--bits", type=int, default=v.bits, help=f"bits per number of a compact code (default {v.bits})")
    c.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="arithmetic of the optimizer's passes (memory vectors): bf16 autocast is faster where the "
                   "device has native bf16; auto picks it there (vectors are accepted only by the exact engine's "
                   "replay) (default auto)")
    c.add_argument("--margin", type=float, default=d.margin,
                   help=f"memory vectors: required lead of each replayed token's logit over the runner-up (default {d.margin})")

    from .frames import DEFAULT_FRAME_SIZE

    c.add_argument("--frame-size", default=str(DEFAULT_FRAME_SIZE), metavar="BYTES",
                   help=f"an input larger than this is cut into frames of at most this many bytes (at a newline "
                   f"where there is one), each compressed alone, with a seek table: restored in pieces, or only the "
                   f"frames a --range needs (suffixes K, M; default {DEFAULT_FRAME_SIZE // 1024}K)")

    x = sub.add_parser("x", help="restore FILE from FILE.mz")
    io_options(x)
    x.add_argument("--range", metavar="START:END",
                   help="restore only bytes START to END (exclusive; END left out: to the end) of the original, to -c "
                   "or -o OUT; of a framed file only the frames holding them are decoded")

    io_options(t)
    from .dictionary import BUDGETS

    t.add_argument("--max-tokens", type=int, default=BUDGETS[-1],
                   help=f"largest dictionary in tokens; train tries budgets up to it and keeps what makes held-out "
                   f"samples smallest, preferring the smaller (default {BUDGETS[-1]}; a larger dictionary makes every "
                   "decoding step attend to more positions)")

    i = sub.add_parser("info", help="describe .mz files")
    i.add_argument("files", nargs="+", metavar="FILE")
    return p


_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _byte_size(text: str, option: str) -> int:
    """A byte count: digits, optionally followed by K, M or G (powers of 1024)."""
    digits, suffix = (text[:-1], text[-1].upper()) if text[-1:].isalpha() else (text, "")
    if not digits.isascii() or not digits.isdigit() or suffix not in _SUFFIXES:
        raise UsageError(f"{option}: {text!r} is not a byte count (digits, optionally K, M or G)")
    return int(digits) * _SUFFIXES[suffix]


def _byte_range(text: str) -> tuple[int, int | None]:
    """--range START:END or START: (to the end), byte offsets."""
    start, colon, end = text.partition(":")
    if not colon or not start:
        raise UsageError(f"--range: {text!r} is not START:END or START: (byte offsets)")
    return _byte_size(start, "--range"), _byte_size(end, "--range") if end else None


def _rich_progress(quiet: bool):
    from .progress import Progress

    if quiet or not sys.stderr.isatty():
        say = (lambda text: None) if quiet else (lambda text: print(text, file=sys.stderr))

        class PlainProgress(Progress):  # no bars off a terminal, but messages still reach the user
            def message(self, text):
                say(text)

        return PlainProgress(), say
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)

    class RichProgress(Progress):
        def __init__(self):
            self.bar = None

        def phase(self, description, total):
            self.done()
            self.bar = Bar(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console, transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(description, total=total, info="")

        def update(self, completed, info=""):
            if self.bar is not None:
                self.bar.update(self.task, completed=completed, info=info)

        def done(self):
            if self.bar is not None:
                self.bar.stop()
                self.bar = None

        def message(self, text):
            console.print(text, highlight=False)

    return RichProgress(), (lambda text: console.print(text, highlight=False))


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def _output_path(args, path: str) -> str | None:
    """Where output goes; None means standard output."""
    if args.stdout or args.output == "-" or (path == "-" and not args.output):
        return None
    if args.output:
        return args.output
    if args.command == "c":
        return path + SUFFIX
    if not path.endswith(SUFFIX) or len(path) == len(SUFFIX):
        raise UsageError(f"{path}: unknown suffix, expected '{SUFFIX}' (use -o to name the output)")
    return path[: -len(SUFFIX)]


def _settings(args):
    """The compression settings the options ask for (validated by memzip.settings, once)."""
    from .settings import CompressSettings, OptimizerSettings, default_steps, vector_spec

    from .errors import SettingsError

    try:
        steps = args.steps if args.steps is not None else default_steps(args.objective)
        opt = OptimizerSettings(steps=steps, lr=args.lr, batch=args.batch, margin=args.margin, precision=args.precision)
        return CompressSettings(window=args.window, context=args.context, optimizer=opt, vectors=vector_spec(args.vectors, args.rank, args.bits),
                                store=args.store, verify=args.verify, level=args.level, objective=args.objective)
    except SettingsError as exc:
        raise UsageError(f"--{exc}") from None  # each message starts with the setting's name: its option


class _Models:
    """The models one command needs, each loaded once (on ``--device``) the first time a file needs it
    and kept for every later file that names the same model."""

    def __init__(self, device: str | None, say):
        self.device, self.say = device, say
        self.loaded: dict = {}

    def load(self, spec: str | None):
        from .model import load_model, resolve_model_id

        model_id = resolve_model_id(spec)
        if model_id not in self.loaded:
            self.loaded[model_id] = load_model(spec, device=self.device, progress=self.say)
        return self.loaded[model_id]

    def dictionary(self, path: str | None, lm):
        """The dictionary at ``path`` for ``lm``, read and evaluated once per command (None without one)."""
        if path is None:
            return None
        key = (os.path.abspath(path), id(lm))
        if key not in self.loaded:
            from .dictionary import load

            self.loaded[key] = load(path, lm)
        return self.loaded[key]


def _target(args, path: str) -> str | None:
    """Where ``path``'s output goes (None: standard output), once every check that can be made before
    any work has passed: an existing target (without -f), compressed data to a terminal, the input
    itself, a missing or unwritable directory."""
    target = _output_path(args, path)
    if target is not None and os.path.exists(target) and not args.force:
        raise UsageError(f"{target} already exists; use -f to overwrite")
    if target is None and args.command == "c" and sys.stdout.isatty() and not args.force:
        raise UsageError("refusing to write compressed data to a terminal (use -o or redirect; -f to force)")
    if target is not None and os.path.abspath(target) == os.path.abspath(path):
        raise UsageError(f"{path}: input and output are the same file")
    if target is not None:
        directory = os.path.dirname(os.path.abspath(target))
        if not os.path.isdir(directory):
            raise UsageError(f"{target}: output directory does not exist")
        if not os.access(directory, os.W_OK):
            raise UsageError(f"{target}: output directory is not writable")
    return target


def _write(args, path: str, target: str | None, out: bytes) -> None:
    _write_output(args, target, path, lambda f: f.write(out))


def _say_compressed(args, name: str, original: int, compressed: int, reports: list, elapsed: float,
                    journal: str | None, say, frames: int = 0) -> None:
    """The one-line summary of a compressed input (its reports: one per container, one per frame)."""
    from .strategies import percentile

    ratio = f"{compressed / original:.3f}" if original else "n/a"
    windows = sum(r.windows for r in reports)
    vectors, predicted = sum(r.vectors for r in reports), sum(r.predicted for r in reports)
    raw, not_tried = sum(r.fallback_windows for r in reports), sum(r.not_tried for r in reports)
    steps = [n for r in reports for n in r.steps]
    resumed = sum(r.resumed for r in reports)
    not_tried = f" ({not_tried} not tried: expected larger than zstd)" if not_tried else ""
    step_note = f", steps median {percentile(steps, 0.5)} p90 {percentile(steps, 0.9)}" if steps else ""
    step_note += f", {resumed} resumed from {journal}" if resumed else ""
    stored = f"{vectors} vectors" if vectors else f"{predicted} predicted"
    in_frames = f"{frames} frames, " if frames else ""
    say(
        f"{name}: {original} -> {compressed} bytes (ratio {ratio}); {in_frames}{windows} windows: {stored}, "
        f"{raw} raw{not_tried}{step_note}; {elapsed:.1f} s ({original / max(elapsed, 1e-9):.1f} B/s)"
    )
    if args.verbose and not frames and reports:
        say("  sections: " + _sections(reports[0].sizes))


def _run_file(args, path: str, models: _Models, progress, say) -> None:
    if getattr(args, "range", None) is not None and not (args.stdout or args.output):
        raise UsageError("--range writes to standard output (-c) or to a file named with -o")
    target = _target(args, path)
    name = "stdin" if path == "-" else path
    with _open_input(path) as src:
        if args.command == "x" and not src.seekable():  # standard input: framed files need seeking
            import io

            src = io.BytesIO(src.read())
        if args.command == "c":
            _compress(args, src, path, name, target, models, progress, say)
        elif args.range is not None or _framed(src):
            _restore_stream(args, src, path, name, target, models, progress, say)
        else:
            _restore(args, src, path, name, target, models, progress, say)


def _open_input(path: str):
    """The input as a binary file; standard input is not closed."""
    if path == "-":
        return contextlib.nullcontext(sys.stdin.buffer)
    return open(path, "rb")


def _framed(src) -> bool:
    from .format.frames import is_framed

    head = src.read(4)
    src.seek(0)
    return is_framed(head)


def _write_output(args, target: str | None, path: str, write) -> None:
    """``write(binary file)`` to standard output or atomically to ``target``."""
    from .files import write_atomically

    if target is None:
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    try:
        write_atomically(target, write, force=args.force, mode_from=None if path == "-" else path)
    except FileExistsError:
        raise UsageError(f"{target} already exists; use -f to overwrite") from None


def _compress(args, src, path: str, name: str, target: str | None, models: _Models, progress, say) -> None:
    """memzip c: one container for an input of at most one frame, else a framed file, streamed."""
    from .frames import compress_stream

    frame_size = _frame_size(args)
    settings = _settings(args)
    lm = models.load(args.model)
    size = os.fstat(src.fileno()).st_size if src.seekable() else None
    estimate = _estimate(args, size, None) if size is not None else None
    if estimate is not None:
        say(f"{name}: {estimate}")
    started = time.monotonic()
    journal = None if target is None or path == "-" else target + JOURNAL_SUFFIX
    done = []
    _write_output(args, target, path, lambda f: done.append(compress_stream(
        src, f, lm, settings, models.dictionary(args.dictionary, lm), frame_size, progress=progress,
        journal_path=journal)))
    if journal is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(journal)  # only now: the output is safely in place
    elapsed = time.monotonic() - started
    s = done[0]
    _say_compressed(args, name, s.original_size, s.compressed_size, s.reports, elapsed, journal, say, s.frames)


def _frame_size(args) -> int:
    from .format.frames import MAX_FRAME_BYTES

    frame_size = _byte_size(args.frame_size, "--frame-size")
    if not 1 <= frame_size <= MAX_FRAME_BYTES:
        raise UsageError(f"--frame-size must be 1..{MAX_FRAME_BYTES} bytes")
    return frame_size


def _dictionary_for_x(args, models: _Models):
    return (lambda lm: models.dictionary(args.dictionary, lm)) if args.dictionary else None


def _restore(args, src, path: str, name: str, target: str | None, models: _Models, progress, say) -> None:
    """memzip x of a plain container: read once (estimate and decoding), decoded whole, then written."""
    from . import codec
    from .format import container

    data = src.read()
    parsed = container.read(data)
    estimate = _estimate(args, len(data), parsed)
    if estimate is not None:
        say(f"{name}: {estimate}")
    started = time.monotonic()
    out = codec.decompress_container(parsed, args.model, progress, load=models.load,
                                     dictionary=_dictionary_for_x(args, models))
    elapsed = time.monotonic() - started
    _write_output(args, target, path, lambda f: f.write(out))
    say(f"{name}: restored {len(out)} bytes in {elapsed:.1f} s")


def _restore_stream(args, src, path: str, name: str, target: str | None, models: _Models, progress, say) -> None:
    """memzip x of a framed file (frame by frame) or of a --range (only the frames holding it)."""
    from . import frames

    dictionary = _dictionary_for_x(args, models)
    started = time.monotonic()
    written = []
    if args.range is None:
        _write_output(args, target, path, lambda f: written.append(frames.decompress_stream(
            src, f, args.model, dictionary, progress=progress, load=models.load)))
        what = f"{written[0]} bytes"
    else:
        start, end = _byte_range(args.range)
        pieces = frames.range_pieces(src, start, end, args.model, dictionary, progress=progress, load=models.load)

        def write(f):
            written.append(0)
            for piece in pieces:
                f.write(piece)
                written[0] += len(piece)

        _write_output(args, target, path, write)
        what = f"bytes {start}..{start + written[0]} ({written[0]} bytes)"
    say(f"{name}: restored {what} in {time.monotonic() - started:.1f} s")


BATCH_FILE_BYTES = 64 << 10  # files up to this size are coded together with others of the same command
BATCH_BYTES = 1 << 20  # input (c) or output (x) bytes per batch


def _batches(args, paths: list[str]) -> list[list[str]]:
    """The files in order, consecutive small ones grouped: a group goes through the engine together
    (their rows in one batch), a single file alone (with its journal, estimate and progress)."""
    if len(paths) < 2 or args.stdout or args.output or "-" in paths or getattr(args, "vectors", "none") != "none":
        return [[p] for p in paths]
    groups, size = [[]], 0
    for path in paths:
        n = os.path.getsize(path) if os.path.isfile(path) else BATCH_FILE_BYTES + 1
        if n > BATCH_FILE_BYTES:
            groups += [[path], []]
            size = 0
            continue
        if size + n > BATCH_BYTES and groups[-1]:
            groups.append([])
            size = 0
        groups[-1].append(path)
        size += n
    return [g for g in groups if g]


def _run_batch(args, paths: list[str], models: _Models, progress, say) -> None:
    """Small files compressed (``codec.compress_many``) or restored (``codec.decompress_many``) together;
    each output is exactly what the file alone gives, and each is written atomically (the time reported
    per file is the group's average)."""
    targets = [_target(args, path) for path in paths]
    inputs = [_read_input(path) for path in paths]
    started = time.monotonic()
    try:
        results = _together(args, inputs, models, progress)
    except MemzipError:  # one file cannot be done: each alone, so that those before it are written and the
        for path in paths:  # error is that file's own
            _run_file(args, path, models, progress, say)
        return
    elapsed = (time.monotonic() - started) / len(paths)
    for path, target, data, (out, report) in zip(paths, targets, inputs, results):
        _write(args, path, target, out)
        if report is not None:
            _say_compressed(args, path, len(data), len(out), [report], elapsed, None, say)
        else:
            say(f"{path}: restored {len(out)} bytes in {elapsed:.1f} s")


def _together(args, inputs: list[bytes], models: _Models, progress) -> list[tuple[bytes, object]]:
    """(output, compression report or None) of every input; decompress_many reads every container
    before any decoding, so a file that is not one is found before any work."""
    from . import codec

    if args.command == "c":
        lm = models.load(args.model)
        return codec.compress_many(inputs, lm, _settings(args), progress, dictionary=models.dictionary(args.dictionary, lm))
    return [(out, None) for out in codec.decompress_many(inputs, args.model, progress, load=models.load,
                                                         dictionary=_dictionary_for_x(args, models))]


def _run_pool(args, paths: list[str], progress, say) -> None:
    """Every file through a pool of workers (memzip.parallel: -j processes here, or Ray actors), frame
    by frame (memzip.batch.run): each output what one process writes, in input order as it comes,
    atomically, after every target was checked."""
    from . import batch
    from .parallel import WorkerSpec, open_pool

    kind = "compress" if args.command == "c" else "decompress"
    if "-" in paths:
        raise UsageError("-j and --ray read files, not standard input")
    targets = [_target(args, p) for p in paths]  # every refusal before any work
    settings = _settings(args) if kind == "compress" else None
    frame_size = _frame_size(args) if kind == "compress" else None
    if args.jobs is not None and args.jobs < 0:
        raise UsageError("--jobs must be 0 (all cores) or more")
    jobs = args.jobs if args.jobs is not None else (0 if args.ray is not None else 1)
    ray = None if args.ray is None else (args.ray or True)
    spec = WorkerSpec(args.model, args.device, args.dictionary, args.threads)
    done = []

    def on_file(r):
        done.append(r)
        progress.update(len(done), info=f"{sum(f.read for f in done):,} B read")
        if kind == "compress":
            say(f"{r.source}: {r.read} -> {r.written} bytes (ratio {r.written / r.read:.3f})" if r.read
                else f"{r.source}: {r.read} -> {r.written} bytes")
        else:
            say(f"{r.source}: restored {r.written} bytes")

    with open_pool(spec, jobs, ray) as pool:
        workers = f"{pool.workers} worker{'s' if pool.workers != 1 else ''}"
        progress.phase(f"{'compressing' if kind == 'compress' else 'restoring'} on {workers}", len(paths))
        summary = batch.run(kind, paths, pool.mapper(kind, settings), force=args.force, frame_size=frame_size,
                            targets=targets, write=lambda path, target, writer: _write_output(args, target, path, writer),
                            on_file=on_file)
    progress.done()
    say(f"{len(paths)} files: {summary.read} -> {summary.written} bytes on {workers}; {summary.seconds:.1f} s "
        f"({summary.read / max(summary.seconds, 1e-9):.1f} B/s read)")


def _worth_a_pool(args, paths: list[str]) -> bool:
    """-j N pays for its workers' start with several files, or one file of several frames."""
    if len(paths) > 1:
        return True
    if paths == ["-"] or not os.path.isfile(paths[0]):
        return False
    if args.command == "c":
        return os.path.getsize(paths[0]) > _frame_size(args)
    from .format.frames import MAGIC

    with open(paths[0], "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def _ray_option(argv: list[str]) -> list[str]:
    """``--ray`` takes an optional ADDRESS: the next argument is one only if it looks like one (auto,
    local, or with a ':'), so that ``memzip c --ray FILE`` keeps FILE a file."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return out + argv[i:]
        if a == "--ray":
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and (nxt in ("auto", "local") or ":" in nxt):
                out.append(f"--ray={nxt}")
                i += 2
                continue
            a = "--ray="
        out.append(a)
        i += 1
    return out


def _samples(paths: list[str]) -> list[str]:
    """Every regular file named, and every one under a named directory (sorted)."""
    out = []
    for path in paths:
        if os.path.isdir(path):
            out += sorted(str(p) for p in __import__("pathlib").Path(path).rglob("*") if p.is_file())
        elif os.path.isfile(path):
            out.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    return out


def _train(args, models: _Models, say) -> None:
    """memzip train -o DICT.mzd SAMPLES...: a dictionary for files like the samples."""
    from .dictionary import train
    from .files import write_atomically
    from .format import dictionary as dictfile

    if not args.output or args.output == "-":
        raise UsageError("train writes a file: name it with -o DICT.mzd")
    if os.path.exists(args.output) and not args.force:
        raise UsageError(f"{args.output} already exists; use -f to overwrite")
    paths = _samples(args.files)
    if not paths:
        raise UsageError("train needs sample files")
    samples = [_read_input(p) for p in paths]
    lm = models.load(args.model)
    started = time.monotonic()
    file = train(samples, lm, max_tokens=args.max_tokens, progress=None if args.quiet else say)
    blob = dictfile.write(file)
    write_atomically(args.output, blob, force=args.force)
    say(f"{args.output}: dictionary {file.id}, {file.header['tokens']} tokens "
        f"({file.header['samples']['text']}) from {len(samples)} samples of {sum(map(len, samples)):,} bytes; "
        f"{time.monotonic() - started:.1f} s")


# Rough speeds on a 2-core CPU (docs/RESULTS.md): compression of predicted windows, and one decoding step
# (one token for every row decoded together) as a function of those rows.
COMPRESS_BYTES_PER_S = 2500
STEP_S, STEP_S_PER_ROW = 0.02, 0.0015
ESTIMATE_ABOVE_S = 20


def _estimate(args, size: int, parsed) -> str | None:
    """A one-line estimate of a long job's time, before it starts (None for a short one): ``size`` bytes
    to compress (``c``), or ``parsed``, the container being restored (``x``)."""
    if args.command == "c":
        if args.vectors != "none":
            return "optimizing memory vectors: minutes per kilobyte (progress follows)"
        seconds = size / COMPRESS_BYTES_PER_S
    else:
        lengths = parsed.window_lengths
        if not lengths:
            return None  # nothing to decode
        from .rows import decoding_batches

        seconds = 0.0
        for batch in decoding_batches(lengths):  # the rows decoded together, as the decoder batches them
            seconds += max(lengths[i] for i in batch) * (STEP_S + STEP_S_PER_ROW * len(batch))
    if seconds < ESTIMATE_ABOVE_S:
        return None
    return f"expect roughly {_duration(seconds)} on a 2-core CPU ({'compressing' if args.command == 'c' else 'restoring'})"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _sections(sizes: dict) -> str:
    return ", ".join(f"{k} {v} B" for k, v in sizes.items())


def _info(path: str) -> None:
    from .format import container

    with _open_input(path) as f:
        if f.seekable() and _framed(f):
            return _info_framed(path, f)
        blob = f.read()
    c = container.read(blob)
    h = c.header
    raw_bytes = len(c.fallback)
    vectors = h["vectors"].get("code") != "none"
    steps = h["settings"].get("steps_median")
    lines = [
        f"file:            {path}",
        f"format:          version {container.FORMAT_VERSION}, "
        + (f"written by memzip {h['memzip_version']}" if h["memzip_version"] else "default profile (writer's version not recorded)"),
        f"model:           {h['model_id']}",
        f"fingerprint:     {h['model_fingerprint']}",
        f"engine:          {h['engine']} (memzip's exact engine: the same logits on every machine)",
        "dictionary:      " + (f"{h['dictionary']} (restore with memzip -d -D DICT.mzd)" if h["dictionary"] else "none"),
        f"original:        {h['original_size']} bytes (checksum: SHA-256 begins {c.checksum.hex()})",
        f"compressed:      {len(blob)} bytes, ratio "
        + (f"{len(blob) / h['original_size']:.3f}" if h["original_size"] else "n/a (empty input)"),
        f"windows:         {c.window_count} of up to {h['window']} tokens"
        + (f" (later ones after the first's first {h['context']}), " if h["context"] else ", ")
        + ("stored as vectors (their tokens coded given them)" if vectors else "tokens coded with the model's probabilities"),
        f"raw bytes:       {raw_bytes} in {sum(k == container.KIND_RAW for k, _ in c.segments)} spans "
        f"(zstd: {c.sizes['fallback']} B)",
        "vectors:         " + _describe_vectors(h["vectors"]),
        "optimizer steps: " + (f"median {steps}, p90 {h['settings'].get('steps_p90')} (windows stored as vectors)"
                               if steps is not None else "none (no window is stored as a vector)"),
        "sections:        " + _sections(c.sizes),
        "settings:        " + (", ".join(f"{k}={v}" for k, v in h["settings"].items()) or "defaults"),
    ]
    print("\n".join(lines))


def _info_framed(path: str, f) -> None:
    """memzip info of a framed file: its seek table, and every frame read strictly, one at a time."""
    from .format import container, frames

    table = frames.read_table(f)
    models, windows, raw = set(), 0, 0
    for _frame, c in frames.containers(f, table):
        models.add(c.header["model_id"])
        windows += c.window_count
        raw += len(c.fallback)
    sizes = [fr.original_size for fr in table.frames]
    packed = [fr.size for fr in table.frames]
    original = table.original_size
    lines = [
        f"file:            {path}",
        f"format:          framed file, version {frames.FRAMES_VERSION}: {len(sizes)} frames, each a container of "
        f"format {container.FORMAT_VERSION}, and a seek table ({table.file_size - sum(packed) - len(frames.preamble())} B)",
        "model:           " + ", ".join(sorted(models)),
        f"original:        {original} bytes",
        f"compressed:      {table.file_size} bytes, ratio {table.file_size / original:.3f}",
        f"frames:          {min(sizes)}..{max(sizes)} bytes of the original each, {min(packed)}..{max(packed)} compressed",
        f"windows:         {windows} (tokens coded with the model's probabilities or vectors), raw bytes: {raw}",
    ]
    print("\n".join(lines))


def _describe_vectors(v: dict) -> str:
    if v.get("code") == "compact":
        return f"compact codes, rank {v['rank']}, {v['bits']}-bit, basis {v['basis']} ({v['basis_digest']})"
    return "full bf16 vectors" if v.get("code") == "full" else "none (tokens coded with the model's probabilities)"


class _Terminated(Exception):
    pass


def _on_sigterm(signum, frame):
    raise _Terminated()


COMMANDS = ("c", "x", "info", "train")


def gzip_style(argv: list[str]) -> list[str]:
    """``memzip FILE`` compresses and ``memzip -d FILE.mz`` (``--decompress``, ``--uncompress``)
    restores, as gzip and zstd do: rewritten to the ``c`` and ``x`` commands."""
    if not argv or argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version"):
        return argv
    decompress = ("-d", "--decompress", "--uncompress")
    if any(a in decompress for a in argv):
        return ["x"] + [a for a in argv if a not in decompress]
    return ["c"] + argv


def main(argv: list[str] | None = None) -> int:
    # torch's OpenMP threads otherwise spin between parallel regions, burning cores that a busy machine
    # needs (measured with the float replay: 6x less wall time with PASSIVE on a loaded machine)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = _parser().parse_args(_ray_option(gzip_style(list(sys.argv[1:] if argv is None else argv))))
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.command == "info":
            for path in args.files:
                _info(path)
            return 0
        if args.output and len(args.files) > 1 and args.command != "train":
            raise UsageError("-o takes a single input file")
        if getattr(args, "range", None) is not None and len(args.files) > 1:
            raise UsageError("--range takes a single input file")
        if args.threads is not None:
            if args.threads < 1:
                raise UsageError("--threads must be at least 1")
            import torch

            torch.set_num_threads(args.threads)
        progress, say = _rich_progress(args.quiet)
        models = _Models(args.device, say)
        if args.command == "train":
            _train(args, models, say)
            return 0
        paths = args.files
        if args.recursive:
            from .batch import expand

            paths = expand(paths, "compress" if args.command == "c" else "decompress", recursive=True)
            if args.output and len(paths) > 1:
                raise UsageError("-o takes a single input file")
        if args.ray is not None or (args.jobs not in (None, 1) and _worth_a_pool(args, paths)):
            try:
                _run_pool(args, paths, progress, say)
            finally:
                progress.done()
            return 0
        for group in _batches(args, paths):
            try:
                if len(group) == 1:
                    _run_file(args, group[0], models, progress, say)
                else:
                    _run_batch(args, group, models, progress, say)
            finally:
                progress.done()
        return 0
    except MemzipError as exc:
        print(f"memzip: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"memzip: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("memzip: interrupted; no output written", file=sys.stderr)
        return 130
    except _Terminated:
        print("memzip: terminated; no output written", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
