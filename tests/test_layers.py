"""The layers of docs/DESIGN.md ("Layers"), read from the imports of every module (``ast``; imports
inside functions count too):

    algorithms  pipeline/*.py, pipeline/models/     torch / numpy, no files, no config
    data        pipeline/data/                      datasets on disk, the files stages exchange
    runtime     pipeline/runtime/                   stage runner, manifests, locks, training loop
    settings    pipeline/settings/                  typed config sections
    edge        pipeline/mm/                        the only modules importing mmseg / mmcv
    report      pipeline/report/                    HTML, plots, tables
    stages      stages/                             one module per pipeline stage

A module imports its own layer or lower ones; ``edge`` and ``report`` do not import each other;
nothing in ``pipeline/`` imports ``stages``; mm* (mmengine, mmcv, mmseg) is imported only in
``pipeline/mm/`` and by ``stages/common.py`` / ``stages/opts.py`` (mmengine's ``Config`` for the
config files, ``DictAction``'s value parsing for ``--opts``; ``bench/training.py`` compares the training loop with mmengine's train step);
no module imports a private name (``_x``) from another module; the modules of ``pipeline/`` and
``stages/`` import no cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RANK = {"algorithms": 0, "data": 1, "runtime": 2, "settings": 3, "edge": 4, "report": 4,
        "stages": 5}
MM = ("mmengine", "mmcv", "mmseg")
MM_OUTSIDE_EDGE = {"stages.common": {"mmengine.config"}, "stages.opts": {"mmengine.config"},
                   "bench.training": {"mmengine.model", "mmengine.optim"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    """The layer of a ``pipeline`` / ``stages`` module (None for anything else)."""
    parts = module.split(".")
    if parts[0] == "stages":
        return "stages"
    if parts[0] != "pipeline":
        return None
    sub = parts[1] if len(parts) > 2 or (len(parts) == 2 and (REPO / "pipeline" / parts[1]).is_dir()) else None
    return {"data": "data", "runtime": "runtime", "settings": "settings", "mm": "edge",
            "report": "report"}.get(sub, "algorithms")


def imports_of(path: Path, name: str | None = None) -> list[tuple[str, str | None, int]]:
    """``(module, name or None, line)`` of every import of ``path`` (module ``name``, by default
    from its place in the repository); relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = (name or module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out += [(module, a.name, node.lineno) for a in node.names]
    return out


def library_files() -> list[Path]:
    return sorted(p for d in ("pipeline", "stages") for p in (REPO / d).rglob("*.py"))


def known_modules() -> set[str]:
    return {module_name(p) for p in library_files()}


def resolve(module: str, name: str | None, known: set[str]) -> str:
    """The project module an import reaches (``from pipeline.data import files`` → the
    submodule ``pipeline.data.files``)."""
    if name is not None and f"{module}.{name}" in known:
        return f"{module}.{name}"
    return module


def import_graph() -> dict[str, dict[str, int]]:
    known = known_modules()
    graph: dict[str, dict[str, int]] = {}
    for path in library_files():
        edges = graph.setdefault(module_name(path), {})
        for module, name, line in imports_of(path):
            target = resolve(module, name, known)
            if target in known:
                edges.setdefault(target, line)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules (first = last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def layer_violations(graph) -> list[str]:
    bad = []
    for src, edges in graph.items():
        a = layer_of(src)
        for dst, line in edges.items():
            b = layer_of(dst)
            lower = RANK[b] < RANK[a]
            if a != b and not lower:
                bad.append(f"{src} ({a}) imports {dst} ({b}), line {line}")
    return sorted(bad)


def test_the_layer_map_covers_every_folder_of_pipeline():
    folders = {p.name for p in (REPO / "pipeline").iterdir()
               if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == {"data", "runtime", "settings", "mm", "report", "models"}, (
        "a new folder under pipeline/ needs its layer in tests/test_layers.py and docs/DESIGN.md")
    assert layer_of("pipeline.models.deeplab") == layer_of("pipeline.growing") == "algorithms"
    assert layer_of("pipeline.mm") == layer_of("pipeline.mm.segmentation") == "edge"
    assert layer_of("pipeline.runtime.stage") == "runtime" and layer_of("stages.seeds") == "stages"


def test_no_import_cycle_among_pipeline_and_stage_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1}}) is None


def test_each_layer_imports_only_lower_layers():
    assert layer_violations(import_graph()) == []


def test_the_layer_check_flags_an_upward_import():
    graph = {"pipeline.growing": {"pipeline.runtime.stage": 3},
             "pipeline.report.html": {"pipeline.mm": 5},
             "stages.seeds": {"pipeline.growing": 1}}
    assert layer_violations(graph) == [
        "pipeline.growing (algorithms) imports pipeline.runtime.stage (runtime), line 3",
        "pipeline.report.html (report) imports pipeline.mm (edge), line 5"]


def test_the_library_never_imports_stages():
    bad = [f"{module_name(p)}:{line} imports {m}" for p in (REPO / "pipeline").rglob("*.py")
           for m, _, line in imports_of(p) if m.split(".")[0] == "stages"]
    assert bad == []


def openmmlab_imports(name: str, imports) -> list[str]:
    """The mm* imports of module ``name`` that are not allowed there."""
    if name.startswith("pipeline.mm"):
        return []
    return [f"{name}:{line} imports {module}" for module, _, line in imports
            if module.split(".")[0] in MM and module not in MM_OUTSIDE_EDGE.get(name, ())]


def private_imports(name: str, imports, known: set[str]) -> list[str]:
    """``from project.module import _private`` in module ``name`` (submodules excepted)."""
    return [f"{name}:{line} imports {module}.{imported}" for module, imported, line in imports
            if imported and imported.startswith("_") and not imported.startswith("__")
            and resolve(module, imported, known) == module
            and module.split(".")[0] in ("pipeline", "stages", "bench")]


@pytest.mark.parametrize("folder", ["pipeline", "stages", "bench"])
def test_openmmlab_is_imported_only_at_the_edge(folder):
    """(tests/ may import it: they exercise the edge, and skip without it)"""
    bad = [v for path in sorted((REPO / folder).rglob("*.py"))
           for v in openmmlab_imports(module_name(path), imports_of(path))]
    assert bad == []


def test_no_private_name_is_imported_from_another_module():
    known = known_modules()
    bad = [v for path in library_files() + sorted((REPO / "bench").glob("*.py"))
           for v in private_imports(module_name(path), imports_of(path), known)]
    assert bad == []


def test_the_import_checks_flag_what_they_forbid(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("from mmseg.models import resize\nimport mmengine.config\n"
                    "def f():\n    from pipeline.runtime.stage import _private, StageError\n"
                    "    from ..data import files\n")
    imports = imports_of(path, "pipeline.report.mod")
    assert ("pipeline.data", "files", 5) in imports             # relative import resolved
    assert openmmlab_imports("pipeline.report.mod", imports) == [
        "pipeline.report.mod:1 imports mmseg.models", "pipeline.report.mod:2 imports mmengine.config"]
    assert openmmlab_imports("stages.common", imports) == ["stages.common:1 imports mmseg.models"]
    assert openmmlab_imports("pipeline.mm.segmentation", imports) == []
    assert private_imports("pipeline.report.mod", imports, known_modules()) == [
        "pipeline.report.mod:4 imports pipeline.runtime.stage._private"]
