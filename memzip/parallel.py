"""Workers that compress and decompress *pieces* on all the cores here, or on a Ray cluster.

A piece is the bytes of one independent input: a whole file (memzip.batch), or one frame of a large
input. Compressing a piece gives an ordinary .mz container; decompressing one gives the bytes back.
Each worker loads the model once (``WorkerSpec``: the model ID or path, the device, a dictionary file)
and then serves pieces; which worker codes a piece never changes a bit of the output (the exact engine).

``open_pool(spec, jobs, ray)`` gives one of three pools with the same interface:

* ``InlinePool``: this process, one piece after another (jobs=1, no Ray);
* ``ProcessPool``: ``jobs`` local processes (``concurrent.futures.ProcessPoolExecutor``, spawn); a
  process that dies takes the executor down with it: a new one is started and the pieces not yet
  returned are submitted again (a few times at most);
* ``RayPool``: Ray actors, one CPU each (``ray.util.ActorPool``), on a cluster joined at an address
  (``auto``: the running one) or on a local one started here; pieces travel by object reference. An
  actor that dies is restarted (``max_restarts``) and the method it was running is run again
  (``max_task_retries``), so a piece lost with a worker is redone and the output is still exact.

``pool.map(kind, pieces, settings)`` is an ordered, lazy map: pieces are read from the iterable only as
workers need them (at most ``2 x workers`` in flight, so memory stays bounded) and the results come
back in input order. ``pool.mapper(kind, settings)`` is that map as a callable, pieces -> results.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from .errors import MemzipError

KINDS = ("compress", "decompress")
RAY_ADDRESS_ENV = "MEMZIP_RAY_ADDRESS"
RAY_INSTALL = "pip install 'memzip[ray]'"
IN_FLIGHT_PER_WORKER = 2  # pieces submitted ahead per worker: every worker busy, memory bounded
PROCESS_RESTARTS = 3  # new executors a local pool starts after worker processes die, before giving up
RAY_RETRIES = 3  # restarts of a Ray actor, and re-runs of the piece it was running
# Tests only: while the file this variable names exists, a worker given a piece deletes it and exits
# abruptly (only one worker can delete it: exactly one dies, once, mid-piece).
TEST_EXIT_ONCE_ENV = "MEMZIP_TEST_WORKER_EXIT_ONCE"


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker loads once: ``model`` (an ID or local path; None: the default, or for
    decompression the one each file names), the torch ``device`` (None: cuda if available), a dictionary
    file made by ``memzip train`` (``dictionary``), and the torch/engine ``threads`` per worker (None:
    torch's default)."""

    model: str | None = None
    device: str | None = None
    dictionary: str | None = None
    threads: int | None = None


class Worker:
    """One worker's state: its models, each loaded once, and its dictionary for each of them."""

    def __init__(self, spec: WorkerSpec):
        self.spec = spec
        self.loaded: dict = {}
        if spec.threads is not None:
            import torch

            torch.set_num_threads(spec.threads)
        if spec.model is not None:
            self.model(spec.model)

    def model(self, name: str | None):
        from .model import load_model, resolve_model_id

        model_id = resolve_model_id(name)
        if model_id not in self.loaded:
            say = lambda text: print(text, file=sys.stderr)  # noqa: E731 - first-time cache builds only
            self.loaded[model_id] = load_model(name, device=self.spec.device, progress=say)
        return self.loaded[model_id]

    def dictionary(self, lm):
        """The spec's dictionary bound to ``lm`` (None without one), read once per model."""
        if self.spec.dictionary is None:
            return None
        key = ("dictionary", id(lm))
        if key not in self.loaded:
            from .dictionary import load

            self.loaded[key] = load(self.spec.dictionary, lm)
        return self.loaded[key]

    def run(self, kind: str, piece: bytes, settings=None) -> bytes:
        """``piece`` compressed with ``settings`` (``kind`` "compress") or decompressed."""
        _test_exit_once()
        from . import codec

        if kind == "compress":
            from .settings import CompressSettings

            lm = self.model(self.spec.model)
            return codec.compress(piece, lm, settings or CompressSettings(), dictionary=self.dictionary(lm))
        if kind == "decompress":
            from .format import container

            dictionary = self.dictionary if self.spec.dictionary is not None else None
            return codec.decompress_container(container.read(piece), self.spec.model, load=self.model,
                                              dictionary=dictionary)
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")


def _test_exit_once() -> None:
    armed = os.environ.get(TEST_EXIT_ONCE_ENV)
    if armed:
        try:
            os.unlink(armed)
        except FileNotFoundError:
            return
        os._exit(3)


class Pool(contextlib.AbstractContextManager):
    """The interface of every pool: ``workers``, ``map``, ``mapper``, ``close`` (also on leaving a
    ``with`` block)."""

    workers: int = 1

    def map(self, kind: str, pieces: Iterable[bytes], settings=None) -> Iterator[bytes]:
        raise NotImplementedError

    def mapper(self, kind: str, settings=None) -> Callable[[Iterable[bytes]], Iterator[bytes]]:
        """``pieces -> results in input order``: what a caller that cuts its input into pieces (files,
        frames) needs, with the kind and settings fixed."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        return lambda pieces: self.map(kind, pieces, settings)

    def close(self, abort: bool = False) -> None:
        """Stop the workers: after the work they are doing (default), or at once (``abort``)."""

    def __exit__(self, exc_type, *exc) -> None:
        self.close(abort=exc_type is not None)  # an error or an interrupt: nothing more is wanted


class InlinePool(Pool):
    """This process is the only worker: each piece is coded when the map asks for it."""

    def __init__(self, spec: WorkerSpec):
        self.worker = Worker(spec)

    def map(self, kind, pieces, settings=None):
        for piece in pieces:
            yield self.worker.run(kind, piece, settings)


def _worker_or_error(spec: WorkerSpec) -> Worker | Exception:
    """A new Worker, or the error making it raised (a model that will not load): kept and raised again
    for every piece, so that the caller sees that error rather than a pool of dead workers."""
    try:
        return Worker(spec)
    except Exception as exc:  # noqa: BLE001 - raised with each piece
        return exc


def _run(worker: Worker | Exception, kind: str, piece: bytes, settings) -> bytes:
    if isinstance(worker, Exception):
        raise worker
    return worker.run(kind, piece, settings)


_process_worker: Worker | Exception | None = None  # a ProcessPool worker's, made once by its initializer


def _process_init(spec: WorkerSpec) -> None:
    global _process_worker
    _process_worker = _worker_or_error(spec)


def _process_run(kind: str, piece: bytes, settings) -> bytes:
    return _run(_process_worker, kind, piece, settings)


class ProcessPool(Pool):
    """``jobs`` local worker processes (spawned: no torch state is forked), each loading the model once."""

    def __init__(self, spec: WorkerSpec, jobs: int):
        self.spec, self.workers, self.restarts = spec, jobs, 0
        self.executor = self._executor()

    def _executor(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_process_init, initargs=(self.spec,))

    def map(self, kind, pieces, settings=None):
        pending: deque = deque()  # [piece, future] for every piece submitted and not yet returned
        try:
            for piece in pieces:
                pending.append([piece, self.executor.submit(_process_run, kind, piece, settings)])
                if len(pending) >= IN_FLIGHT_PER_WORKER * self.workers:
                    yield self._next(pending, kind, settings)
            while pending:
                yield self._next(pending, kind, settings)
        finally:
            for _, future in pending:
                future.cancel()

    def _next(self, pending: deque, kind: str, settings) -> bytes:
        from concurrent.futures.process import BrokenProcessPool

        while True:
            try:
                result = pending[0][1].result()
            except BrokenProcessPool:  # a worker died (killed, out of memory): the unfinished pieces are lost
                self._restart()
                for entry in pending:
                    if not _succeeded(entry[1]):
                        entry[1] = self.executor.submit(_process_run, kind, entry[0], settings)
                continue
            pending.popleft()
            return result

    def _restart(self) -> None:
        self.restarts += 1
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self.restarts > PROCESS_RESTARTS:
            raise MemzipError(f"worker processes died {self.restarts} times (out of memory, or killed); giving up")
        self.executor = self._executor()

    def close(self, abort: bool = False) -> None:
        if abort:  # stop the pieces being coded now rather than wait for them (minutes, for a large file)
            terminate = getattr(self.executor, "terminate_workers", None)  # Python 3.14
            if terminate is not None:
                terminate()
            else:  # before 3.14: the executor's own process table
                for process in list((getattr(self.executor, "_processes", None) or {}).values()):
                    with contextlib.suppress(Exception):
                        process.terminate()
        self.executor.shutdown(wait=True, cancel_futures=True)


def _succeeded(future) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


class _RayActor:
    """A Worker as a Ray actor (made a remote class by RayPool, so that Ray stays optional)."""

    def __init__(self, spec: WorkerSpec):
        self.worker = _worker_or_error(spec)

    def run(self, kind: str, piece: bytes, settings) -> bytes:
        return _run(self.worker, kind, piece, settings)


def _ray():
    try:
        import ray
    except ImportError:
        raise MemzipError(f"--ray needs Ray: {RAY_INSTALL}") from None
    return ray


class RayPool(Pool):
    """Ray actors, one CPU each: ``jobs`` of them, at most one per CPU of the cluster (0: that many).
    ``address``: a cluster to join (``auto``: the one running here), or None for a local cluster started
    for this pool (Ray itself still honours RAY_ADDRESS). A Ray session already initialized in this
    process is used as it is, and left running."""

    def __init__(self, spec: WorkerSpec, jobs: int = 0, address: str | None = None):
        ray = _ray()
        self.started = not ray.is_initialized()
        if self.started:
            import logging

            try:
                ray.init(address=address, num_cpus=(jobs or None) if address is None else None,
                         include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise MemzipError(f"cannot start or join a Ray cluster ({address or 'local'}): {first}") from None
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.workers = min(jobs, cpus) if jobs else cpus  # an actor beyond the CPUs would never start
        threads = spec.threads if spec.threads is not None else 1
        spec = WorkerSpec(spec.model, spec.device, spec.dictionary, threads)
        actor = ray.remote(num_cpus=1, max_restarts=RAY_RETRIES, max_task_retries=RAY_RETRIES)(_RayActor)
        self.actors = [actor.remote(spec) for _ in range(self.workers)]

    def map(self, kind, pieces, settings=None):
        ray = _ray()
        from ray.util import ActorPool

        pool, waiting = ActorPool(self.actors), 0
        for piece in pieces:
            pool.submit(lambda a, ref: a.run.remote(kind, ref, settings), ray.put(piece))
            waiting += 1
            if waiting >= IN_FLIGHT_PER_WORKER * self.workers:
                yield self._next(pool)
                waiting -= 1
        while pool.has_next():
            yield self._next(pool)

    @staticmethod
    def _next(pool) -> bytes:
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return pool.get_next()
        except RayTaskError as exc:  # the piece's own error (a corrupt file...): raised as it was raised
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, BaseException) else MemzipError(str(exc).splitlines()[0])) from None
        except RayActorError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MemzipError(f"a Ray worker was lost and not restarted (at most {RAY_RETRIES} times): {first}") from None

    def close(self, abort: bool = False) -> None:
        ray = _ray()
        for a in getattr(self, "actors", []):
            with contextlib.suppress(Exception):
                ray.kill(a)
        if self.started:
            ray.shutdown()


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def ray_address(ray: bool | str | None) -> str | None:
    """The cluster address for ``ray``: a string as given ("local": None, a local cluster), True:
    MEMZIP_RAY_ADDRESS or None."""
    if isinstance(ray, str) and ray:
        return None if ray == "local" else ray
    return os.environ.get(RAY_ADDRESS_ENV) or None


def _absolute(spec: WorkerSpec) -> WorkerSpec:
    """The spec with its local paths absolute: workers (Ray's above all) need not share our directory."""
    model = os.path.abspath(spec.model) if spec.model and os.path.isdir(spec.model) else spec.model
    dictionary = os.path.abspath(spec.dictionary) if spec.dictionary else None
    return WorkerSpec(model, spec.device, dictionary, spec.threads)


def open_pool(spec: WorkerSpec, jobs: int = 1, ray: bool | str | None = None) -> Pool:
    """The pool for ``jobs`` workers (0: one per core here, or per CPU of the Ray cluster): Ray actors
    when ``ray`` is True or an address ("auto": the running cluster), else local processes, or this
    process alone for one job. Local workers get ``cores // jobs`` threads each unless ``spec.threads``
    says otherwise (one each when every core has a worker)."""
    if jobs < 0:
        raise MemzipError("jobs must be 0 (all cores) or more")
    spec = _absolute(spec)
    if ray is not None and ray is not False:
        return RayPool(spec, jobs, ray_address(ray))
    jobs = jobs or cores()
    if jobs == 1:
        return InlinePool(spec)
    if spec.threads is None:
        spec = WorkerSpec(spec.model, spec.device, spec.dictionary, max(1, cores() // jobs))
    return ProcessPool(spec, jobs)
