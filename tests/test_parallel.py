"""Many files on all the cores and on a Ray cluster (memzip/parallel.py, memzip/batch.py, memzip -j/-r/--ray):
every output is byte-identical to coding the files one after another in this process, in input order,
also when a worker dies mid-piece. Worker processes are slow to start (each imports torch and loads the
model), so each test starts one pool at most."""

import os
import sys
from pathlib import Path

import pytest

import memzip
from memzip import parallel
from memzip.cli import _ray_option, main
from memzip.errors import ContainerError
from memzip.parallel import InlinePool, WorkerSpec, open_pool

REPO = str(Path(__file__).resolve().parents[1])
TEXTS = [
    b"",
    b"The quick brown fox jumps over the lazy dog.\n" * 3,
    "caf\u00e9 \u00fcber na\u00efve \U0001f642 \r\n".encode() + b"\xff\x00 not utf-8",
    b"1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12" * 4,
    b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
]


@pytest.fixture(scope="module", autouse=True)
def worker_environment(tmp_path_factory):
    """Workers (spawned processes, Ray's) import this tree's memzip, and honour the test hook that
    makes one of them exit mid-piece once its file is created (``armed``)."""
    armed = tmp_path_factory.mktemp("hook") / "exit-once"
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", parallel.TEST_EXIT_ONCE_ENV)}
    os.environ["PYTHONPATH"] = os.pathsep.join([REPO] + ([saved["PYTHONPATH"]] if saved["PYTHONPATH"] else []))
    os.environ[parallel.TEST_EXIT_ONCE_ENV] = str(armed)
    yield armed
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def inline(tiny_model_dir):
    """This process as the only worker: the reference every pool's output must equal."""
    return InlinePool(WorkerSpec(tiny_model_dir))


@pytest.fixture(scope="module")
def expected(inline):
    return list(inline.map("compress", TEXTS))


def _tree(root: Path) -> list[Path]:
    files = [root / "a.txt", root / "sub" / "b.txt", root / "sub" / "deeper" / "c.bin", root / "sub" / "d.txt"]
    for path, text in zip(files, TEXTS[1:]):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
    return files


def test_the_inline_pool_round_trips(inline, expected):
    assert list(inline.map("decompress", expected)) == TEXTS


def test_compress_files_with_two_jobs_equals_one_job(tiny_model_dir, tmp_path, expected):
    paths = []
    for i, text in enumerate(TEXTS):
        paths.append(tmp_path / f"f{i}.txt")
        paths[-1].write_bytes(text)
    big = b"".join(TEXTS[1:]) * 2  # over 200 bytes: framed, its frames spread over the workers
    paths.append(tmp_path / "big.txt")
    paths[-1].write_bytes(big)
    summary = memzip.compress_files(paths, model=tiny_model_dir, jobs=2, frame_size=200)
    assert [f.source for f in summary.files] == [str(p) for p in paths]
    assert [Path(str(p) + ".mz").read_bytes() for p in paths[:-1]] == expected
    from memzip.frames import compress_bytes
    from memzip.format.frames import is_framed

    framed = Path(str(paths[-1]) + ".mz").read_bytes()
    assert is_framed(framed) and framed == compress_bytes(big, tiny_model_dir, frame_size=200)
    assert summary.read == sum(map(len, TEXTS)) + len(big) and summary.written == sum(map(len, expected)) + len(framed)
    for p in paths:
        p.unlink()
    memzip.decompress_files([str(p) + ".mz" for p in paths], model=tiny_model_dir)  # one job: this process
    assert [p.read_bytes() for p in paths] == TEXTS + [big]
    with pytest.raises(FileExistsError):  # every target is checked before any work
        memzip.compress_files(paths, model=tiny_model_dir, jobs=2)


def test_cli_recursive_with_two_jobs_equals_one_job_though_a_worker_dies(tiny_model_dir, tmp_path, expected, capsys,
                                                                         worker_environment):
    files = _tree(tmp_path / "tree")
    (tmp_path / "tree" / "sub" / "old.mz").write_bytes(expected[0])  # an .mz file: -r compression skips it
    worker_environment.write_bytes(b"")  # armed: the first worker process given a file exits there
    assert main(["c", "-r", "-j", "2", "--model", tiny_model_dir, "-q", str(tmp_path / "tree")]) == 0
    assert not worker_environment.exists()  # it did (the pool was started again, the lost files redone)
    assert [Path(f"{f}.mz").read_bytes() for f in files] == expected[1:]
    assert not (tmp_path / "tree" / "sub" / "old.mz.mz").exists()
    assert not [p for p in (tmp_path / "tree").rglob("*.tmp")]

    assert main(["c", "-r", "-j", "2", "--model", tiny_model_dir, str(tmp_path / "tree")]) == 1  # refused at once
    assert "already exists; use -f" in capsys.readouterr().err

    for f in files:
        f.unlink()
    assert main(["x", "-r", "--model", tiny_model_dir, "-q", str(tmp_path / "tree")]) == 0  # -j 1: as before
    assert [f.read_bytes() for f in files] == TEXTS[1:] and (tmp_path / "tree" / "sub" / "old").read_bytes() == b""


def test_ray_address_is_optional_and_never_eats_a_file():
    assert _ray_option(["c", "--ray", "a.txt"]) == ["c", "--ray=", "a.txt"]
    assert _ray_option(["c", "--ray", "auto", "a.txt"]) == ["c", "--ray=auto", "a.txt"]
    assert _ray_option(["x", "--ray", "10.0.0.1:6379", "a.mz"]) == ["x", "--ray=10.0.0.1:6379", "a.mz"]
    assert _ray_option(["c", "--ray"]) == ["c", "--ray="]
    assert parallel.ray_address("local") is None and parallel.ray_address("auto") == "auto"


def test_without_ray_installed_the_error_says_how_to_install_it(tiny_model_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "a.txt").write_bytes(b"text")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert main(["c", "--ray", str(tmp_path / "a.txt"), "--model", tiny_model_dir, "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'memzip[ray]'" in err
    assert not (tmp_path / "a.txt.mz").exists()


@pytest.fixture(scope="module")
def ray_cluster(worker_environment):
    """A local Ray cluster of two CPUs, started once with the workers' environment (no skip: a sandbox
    where Ray cannot start fails here)."""
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_workers_exact_in_order_and_a_worker_killed_mid_piece(ray_cluster, tiny_model_dir, inline, expected,
                                                                  worker_environment):
    ray = ray_cluster
    where = ray.get(ray.remote(lambda: __import__("memzip").__file__).remote())
    assert where == os.path.join(REPO, "memzip", "__init__.py")
    worker_environment.write_bytes(b"")  # armed: the first worker given a piece exits there
    with open_pool(WorkerSpec(tiny_model_dir), jobs=2, ray=True) as pool:
        assert pool.workers == 2
        read = []

        def pieces():
            for text in TEXTS:
                read.append(text)
                yield text

        results = pool.map("compress", pieces())
        first = next(results)
        assert len(read) <= parallel.IN_FLIGHT_PER_WORKER * pool.workers + 1  # lazy: bounded in flight
        assert [first, *results] == expected  # every piece once, in input order, exact
        assert not worker_environment.exists()  # a worker did die (it deleted the file, then exited)
        assert list(pool.map("decompress", expected)) == TEXTS
        with pytest.raises(ContainerError) as error:  # a piece's own error, as the worker raised it
            list(pool.map("decompress", [expected[1], b"not a memzip file"]))
        assert "\n" not in str(error.value)
