"""The layering the code claims: a Dagster-free core under the wiring, asset modules that import no other
asset module, and Dagster's run-range tags as the schedules spell them."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import rec_orchestration

PACKAGE_DIR = Path(rec_orchestration.__file__).parent
# Everything here must import, and work, where Dagster is not installed (the CLI, benchmarks, other tools).
DAGSTER_FREE = ("ml", "sources", "db", "publishing", "quality")
DAGSTER_FREE_MODULES = ("rec_orchestration.settings", "rec_orchestration.backup", "rec_orchestration.sample_data",
                        "rec_orchestration.dbt_child", "rec_orchestration.confinement",
                        "rec_orchestration.progress")

BLOCK_DAGSTER = """
import importlib.abc, sys
class NoDagster(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "dagster" or name.startswith(("dagster.", "dagster_")):
            raise ImportError(f"{name} is made unimportable by the test")
        return None
sys.meta_path.insert(0, NoDagster())
"""


def modules_of(package: str) -> list[str]:
    directory = PACKAGE_DIR / package
    names = [f"rec_orchestration.{package}"]
    for info in pkgutil.walk_packages([str(directory)], prefix=f"rec_orchestration.{package}."):
        names.append(info.name)
    return sorted(names)


def test_the_core_imports_with_dagster_unimportable():
    modules = [name for package in DAGSTER_FREE for name in modules_of(package)] + list(DAGSTER_FREE_MODULES)
    assert "rec_orchestration.publishing.swap" in modules and "rec_orchestration.db.embedded" in modules
    script = BLOCK_DAGSTER + "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules) + (
        "assert not any(n == 'dagster' or n.startswith('dagster_') for n in sys.modules), "
        "sorted(n for n in sys.modules if 'dagster' in n)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_blocker_really_blocks_dagster():
    done = subprocess.run([sys.executable, "-c", BLOCK_DAGSTER + "import rec_orchestration.resources.postgres"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "made unimportable by the test" in done.stderr


def imported_modules(path: Path, with_names: bool = False) -> set[str]:
    """Modules ``path`` imports; ``with_names`` adds ``module.name`` for each ``from module import name``
    (the name may be a submodule)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if with_names:
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its code (function-level imports included), not
    counting the packages above it (importing a submodule runs its package's ``__init__`` anyway)."""
    paths = {module_name(path): path for path in PACKAGE_DIR.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        targets = set()
        for imported in imported_modules(path, with_names=True):
            while imported and imported not in paths:
                imported = imported.rpartition(".")[0]
            if imported and not name.startswith(imported + ".") and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def test_there_is_no_import_circle():
    graph = import_graph()
    assert "rec_orchestration.db.embedded" in graph["rec_orchestration.db.servers"]
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            assert state.get(target) != 1, "import circle: " + " -> ".join([*path, name, target])
            if target not in state:
                visit(target, [*path, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_asset_modules_import_no_other_asset_module():
    for path in sorted((PACKAGE_DIR / "assets").glob("*.py")):
        others = {name for name in imported_modules(path) if name.startswith("rec_orchestration.assets")}
        assert not others, f"{path.name} imports {others}"


# Dagster offers executors no public API: the dask executor builds on its step-delegating executor, as
# dagster-k8s and dagster-docker do (rec_orchestration/dask_executor.py says why).
PRIVATE_DAGSTER_ALLOWED = {"dask_executor.py": {"dagster._core.events", "dagster._core.execution.retries",
                                                "dagster._core.executor.step_delegating"}}


def test_no_private_names_are_imported_across_modules():
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        allowed = PRIVATE_DAGSTER_ALLOWED.get(str(path.relative_to(PACKAGE_DIR)), set())
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{path.relative_to(PACKAGE_DIR)} imports {private} from {node.module}"
                assert "._" not in node.module or node.module in allowed, (
                    f"{path.relative_to(PACKAGE_DIR)} imports from {node.module}")


def test_the_schedule_spells_dagsters_partition_range_tags():
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from rec_orchestration.partitions import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG

    assert (PARTITION_RANGE_START_TAG, PARTITION_RANGE_END_TAG) == (ASSET_PARTITION_RANGE_START_TAG,
                                                                     ASSET_PARTITION_RANGE_END_TAG)
