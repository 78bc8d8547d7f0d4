"""Citations of the algorithm document resolve, and nothing cites material outside the repository."""
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "ALGORITHMS.md"
SKIP_DIRS = {".git", ".venv", "work_dirs", "data", "__pycache__", ".pytest_cache", "shared"}
TEXT_SUFFIXES = {".py", ".md", ".txt", ".sh", ".ini", ".cfg", ".toml", ".yaml", ".yml", ""}
THIS = Path(__file__).resolve()

# "docs/ALGORITHMS.md §5", "... §1, §3", "... §5-§7", "... §5.6, §7" (also across a line break)
CITATION = re.compile(r"docs/ALGORITHMS\.md((?:[\s,;–-]*(?:and\s+)?§\d+(?:\.\d+)?)+)")
SECTION = re.compile(r"§(\d+)(?:\.(\d+))?")
FORBIDDEN = {
    "a path into the shared folder outside the repository": re.compile(r"\.\./shared|/work/shared|shared/(?:seeds|reference)"),
    "ALGORITHMS.md cited without its docs/ folder": re.compile(r"(?<!docs/)\bALGORITHMS(?:\.md)?\s*§"),
    "a numbered background file instead of the paper": re.compile(r"\bseeds?\s+`*0\d\d\b|\b00\d_[0-9a-f]{16}\.txt"),
}


def _project_files():
    """The project's files: what git tracks plus what it would add (``.gitignore`` applied, so no
    environment folder such as ``.venv-mm``, no outputs); a walk with SKIP_DIRS outside a checkout."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True).stdout
        return [REPO / name for name in out.decode("utf-8").split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        paths = []
        for root, dirs, files in os.walk(REPO):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".venv")]
            paths += [Path(root) / name for name in files]
        return paths


def _text_files():
    for path in _project_files():
        if path.suffix in TEXT_SUFFIXES and path.resolve() != THIS and path.is_file():
            try:
                yield path, path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue


def test_environment_folders_are_not_project_files():
    """A clean clone holds .venv and .venv-mm as real folders (CI): their packages' docs are not
    the project's."""
    names = {p.relative_to(REPO).parts[0] for p in _project_files()}
    assert not {n for n in names if n.startswith(".venv") or n == "work_dirs"}
    assert {"pipeline", "stages", "docs", "README.md"} <= names


def _sections() -> set[tuple[int, int | None]]:
    found = set()
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"##\s+(\d+)\.\s", line) or re.match(r"###\s+(\d+)\.(\d+)\s", line)
        if m:
            found.add((int(m.group(1)), int(m.group(2)) if m.lastindex == 2 else None))
    return found


def _citations():
    for path, text in _text_files():
        for m in CITATION.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            for sec in SECTION.finditer(m.group(1)):
                yield path, line, int(sec.group(1)), int(sec.group(2)) if sec.group(2) else None


def test_document_numbers_its_sections_in_order():
    top = sorted(n for n, sub in _sections() if sub is None)
    assert top == list(range(1, len(top) + 1)), top
    assert all((n, None) in _sections() for n, sub in _sections() if sub is not None)


def test_every_citation_points_to_an_existing_section():
    sections = _sections()
    cites = list(_citations())
    assert len(cites) >= 40, "expected the library and configs to cite docs/ALGORITHMS.md"
    bad = [f"{p.relative_to(REPO)}:{line}: §{n}{'' if sub is None else f'.{sub}'}"
           for p, line, n, sub in cites if (n, sub) not in sections]
    assert not bad, "citations of missing sections:\n" + "\n".join(bad)


def test_every_library_module_with_an_algorithm_cites_its_source():
    algorithm_modules = ["pipeline/models/pooling.py", "pipeline/models/bew.py",
                         "pipeline/models/sge.py", "pipeline/models/lip.py",
                         "pipeline/models/vgg.py", "pipeline/models/deeplab.py",
                         "pipeline/heatmaps.py", "pipeline/seeds.py", "pipeline/growing.py",
                         "pipeline/losses.py", "pipeline/dsrg.py", "pipeline/crf.py",
                         "pipeline/inference.py", "pipeline/rib.py", "pipeline/saliency.py",
                         "pipeline/localize.py", "pipeline/metrics.py", "pipeline/voc.py"]
    missing = [m for m in algorithm_modules if "docs/ALGORITHMS.md §" not in (REPO / m).read_text()]
    assert not missing, f"no docs/ALGORITHMS.md citation in {missing}"


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_nothing_cites_material_outside_the_repository(what):
    pattern = FORBIDDEN[what]
    hits = [f"{p.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}"
            for p, text in _text_files() for m in pattern.finditer(text)]
    assert not hits, f"{what}:\n" + "\n".join(hits)


def test_linked_documents_exist():
    missing = sorted({f"{p.relative_to(REPO)}: {m.group(0)}" for p, text in _text_files()
                      for m in re.finditer(r"\bdocs/[A-Z][A-Za-z_]*\.md\b", text)
                      if not (REPO / m.group(0)).is_file()})
    assert not missing, missing
