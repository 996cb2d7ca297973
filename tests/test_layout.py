"""The package's layout: every module imports on its own, modules import no cycle, the default path never
loads the memory-vector research code (memzip.vectors), and the modules that say they are torch-free are."""

import ast
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import memzip

ROOT = Path(memzip.__file__).parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT.parent))


def _modules() -> list[str]:
    """Every module of the package but ``memzip.__main__`` (which runs the command)."""
    return sorted(m.name for m in pkgutil.walk_packages([str(ROOT)], "memzip.") if m.name != "memzip.__main__")


def _source(module: str) -> Path | None:
    """A module's Python source (None for the optional C kernels)."""
    path = ROOT.parent / module.replace(".", "/")
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return path if path.is_file() else None


def _python(code: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, env=ENV,
                          cwd=ROOT.parent)


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module imported as the first memzip module of an interpreter: an import cycle that only
    works in some import order fails here."""
    names = _modules()
    assert {"memzip.codec", "memzip.encoder", "memzip.decoder", "memzip.rows", "memzip.files",
            "memzip.vectors.codes", "memzip.vectors.optimizer", "memzip.vectors.journal", "memzip.vectors.greedy",
            "memzip.vectors.memory_vectors", "memzip.vectors.vectors_by_size", "memzip.strategies.model_coded"} <= set(names)
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'memzip' or m.startswith('memzip.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr


def _module_imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The memzip modules ``name`` imports at module level (imports inside functions are lazy)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def test_no_import_cycle_between_modules():
    modules = {m for m in set(_modules()) | {"memzip"} if _source(m) is not None}
    graph = {m: _module_imports(_source(m), m, modules) for m in modules}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m, [m])
    assert "memzip.vectors.optimizer" not in graph["memzip.settings"] and graph["memzip.settings"] <= {
        "memzip.errors", "memzip.format.vectors"}


def test_the_default_path_never_imports_memory_vector_code(tiny_model_dir, tmp_path):
    text = tmp_path / "t.txt"
    text.write_bytes(b"The quick brown fox jumps over the lazy dog. Memory tokens let a frozen model regenerate text.")
    code = (
        "import sys\n"
        "import memzip.codec, memzip.cli\n"
        "from memzip import compress, decompress\n"
        "from memzip.cli import main\n"
        "from memzip.tiny import tiny_lm\n"
        "lm = tiny_lm()\n"
        "data = b'Compression is prediction; prediction is compression. ' * 3\n"
        "assert decompress(compress(data, lm), lm) == data\n"
        f"assert main(['c', {str(text)!r}, '--model', {tiny_model_dir!r}, '-q', '--store', 'always']) == 0\n"
        f"assert main(['x', {str(text) + '.mz'!r}, '-o', {str(tmp_path / 'out')!r}, '-q']) == 0\n"
        f"assert main(['info', {str(text) + '.mz'!r}]) == 0\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('memzip.vectors'))\n"
        "assert not loaded, loaded\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out").read_bytes() == text.read_bytes()


def test_settings_and_the_journal_load_no_torch():
    for module in ("memzip.settings", "memzip.vectors.journal", "memzip.vectors.results", "memzip.format.container",
                   "memzip.files"):
        done = _python(f"import {module}", "-X", "importtime")
        assert done.returncode == 0, done.stderr
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
        assert module in imported and not {m for m in imported if m == "torch" or m.startswith("torch.")}, module


def test_no_module_is_left_at_the_old_paths():
    for old in ("codes", "optimizer", "journal"):
        assert not (ROOT / f"{old}.py").exists()
    for old in ("memory_vectors", "vectors_by_size"):
        assert not (ROOT / "strategies" / f"{old}.py").exists()
