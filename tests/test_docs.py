"""The documentation resolves: citations of the algorithm document, links and their anchors in
README.md and docs/, sections that comments name, README's make commands and config paths; and
nothing cites material outside the repository."""
import os
import re
import shlex
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


# --- README and docs/: links, anchors, make targets, config paths ---------------------------

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
MAKE_TARGET = re.compile(r"^([A-Za-z0-9_.-]+(?:[ \t]+[A-Za-z0-9_.-]+)*)[ \t]*:(?!=)")
CONFIG_PATH = re.compile(r"\bconfigs/[\w./*-]*?\.py\b")
SHELL_BREAKS = {"&&", "||", ";", "|", ">", ">>", "<", "2>&1", "&"}


def _markdown_docs() -> list[Path]:
    """README.md and every docs/*.md of the project (git's view, as everywhere in this file)."""
    return sorted(p for p in _project_files() if p.is_file() and p.suffix == ".md" and (
        p == REPO / "README.md" or p.parent == REPO / "docs"))


def _prose_lines(text: str):
    """(line number, line) of the lines outside fenced code blocks."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield n, line


def _code_blocks(text: str) -> list[str]:
    blocks, current, fenced = [], [], False
    for line in text.splitlines():
        if FENCE.match(line):
            if fenced:
                blocks.append("\n".join(current))
                current = []
            fenced = not fenced
        elif fenced:
            current.append(line)
    return blocks


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: link text kept, lower case, punctuation dropped, spaces → -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose_lines(text):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = _slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def _broken_links(doc: Path, text: str) -> list[str]:
    """Relative links of a markdown text (as if it were ``doc``) whose file or heading is missing."""
    bad = []
    for n, line in _prose_lines(text):
        for m in LINK.finditer(line):
            target = m.group(1)
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):       # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            where = f"{doc.relative_to(REPO) if doc.is_relative_to(REPO) else doc}:{n}: {target}"
            file = (doc.parent / path).resolve() if path else doc
            if path and (not file.is_relative_to(REPO) or not file.exists()):
                bad.append(f"{where} (no such file)")
                continue
            if anchor:
                body = text if file == doc else (file.read_text(encoding="utf-8")
                                                 if file.is_file() else "")
                if anchor not in _anchors(body):
                    bad.append(f"{where} (no heading with that anchor)")
    return bad


def _makefile_targets() -> set[str]:
    targets = set()
    for line in (REPO / "Makefile").read_text(encoding="utf-8").splitlines():
        m = MAKE_TARGET.match(line)
        if m:
            targets.update(m.group(1).split())
    return targets


def _make_invocations(text: str):
    """(command line, [targets]) of every ``make`` call in the text's code blocks."""
    for block in _code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"^\s*\$\s+", "", line)
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                words = line.split("#", 1)[0].split()
            for i, word in enumerate(words):
                if word != "make":
                    continue
                targets = []
                for w in words[i + 1:]:
                    if w in SHELL_BREAKS:
                        break
                    if "=" not in w and not w.startswith("-"):
                        targets.append(w)
                yield line.strip(), targets


def _unknown_make_targets(text: str, known: set[str]) -> list[str]:
    return [f"{line!r}: make {t}" for line, targets in _make_invocations(text)
            for t in targets if t not in known]


def _missing_config_paths(text: str) -> list[str]:
    """``configs/....py`` paths (or globs such as ``configs/_base_/*.py``) that match no file."""
    def exists(path: str) -> bool:
        if "*" in path:
            return any(p.is_file() for p in REPO.glob(path))
        return (REPO / path).is_file()
    return sorted({m.group(0) for m in CONFIG_PATH.finditer(text) if not exists(m.group(0))})


# a section name: a capital, then up to 80 characters without quotes or parentheses
SECTION_NAME = r'"([A-Z][^"()]{0,80})"'
SECTION_CITATION = re.compile(r'docs/([A-Z][A-Za-z_]*\.md),?\s*\(?((?:"[A-Z][^"()]{0,80}"(?:,\s*|\s+and\s+)?)+)')


def _headings(text: str) -> list[str]:
    return [re.sub(r"[`*]", "", m.group(1)).lower() for _, line in _prose_lines(text)
            if (m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line))]


def _section_citations(text: str):
    """(document, section name) of citations such as ``docs/RESULTS.md, "Real photos"`` (also
    across a line break of a ``#`` comment)."""
    flat = re.sub(r"[ \t]*\n[ \t]*(?:#+[ \t]*)?", " ", text)
    for m in SECTION_CITATION.finditer(flat):
        for name in re.findall(SECTION_NAME, m.group(2)):
            yield m.group(1), name


def _unknown_sections(text: str) -> list[str]:
    """Cited sections that no heading of the cited document starts with."""
    bad = []
    for doc, name in _section_citations(text):
        path = REPO / "docs" / doc
        heads = _headings(path.read_text(encoding="utf-8")) if path.is_file() else []
        if not any(h.startswith(name.lower()) for h in heads):
            bad.append(f'docs/{doc}, "{name}"')
    return bad


def test_cited_document_sections_exist():
    """Comments and documents that name a section of a document (``docs/FIDELITY.md, "Seed
    rule"``) name a heading that is there."""
    cites = [(p, c) for p, text in _text_files() for c in _section_citations(text)]
    assert len(cites) >= 8, cites
    bad = [f"{p.relative_to(REPO)}: {b}" for p, text in _text_files() for b in _unknown_sections(text)]
    assert not bad, "citations of missing sections:\n" + "\n".join(bad)


def test_markdown_links_and_anchors_resolve():
    docs = _markdown_docs()
    assert REPO / "README.md" in docs and len(docs) >= 8, docs
    bad = [b for p in docs for b in _broken_links(p, p.read_text(encoding="utf-8"))]
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_readme_links_every_document_in_docs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = {(REPO / m.group(1).partition("#")[0]).resolve()
              for _, line in _prose_lines(readme) for m in LINK.finditer(line)}
    missing = [str(p.relative_to(REPO)) for p in _markdown_docs()
               if p.parent == REPO / "docs" and p.resolve() not in linked]
    assert not missing, f"README links none of {missing}"


def test_readme_make_commands_name_makefile_targets():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    calls = list(_make_invocations(readme))
    assert len(calls) >= 8, calls
    bad = _unknown_make_targets(readme, _makefile_targets())
    assert not bad, "README runs make targets the Makefile does not have:\n" + "\n".join(bad)


def test_readme_setup_is_make_demo_and_make_test():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    calls = [targets for _, targets in _make_invocations(section)]
    assert calls == [["demo"], ["test"]], calls


def test_readme_config_paths_exist():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    named = {m.group(0) for m in CONFIG_PATH.finditer(readme)}
    assert len(named) >= 5, named
    missing = _missing_config_paths(readme)
    assert not missing, f"README names configs that do not exist: {missing}"


def test_the_checks_catch_broken_input():
    """Each check above reports a broken input (so a passing run means something)."""
    doc = REPO / "docs" / "EXAMPLE.md"
    text = ("# Title\n\n## A section\n\n[ok](#a-section) [ok](../README.md) [ok](RESULTS.md#demo)\n"
            "[no file](NOPE.md) [no anchor](#nowhere) [no anchor there](RESULTS.md#nowhere)\n"
            "[outside](../../etc/passwd)\n```\n[in code](IGNORED.md)\n```\n")
    bad = _broken_links(doc, text)
    assert len(bad) == 4 and all(any(s in b for b in bad) for s in
                                 ("NOPE.md", "#nowhere", "RESULTS.md#nowhere", "passwd")), bad
    block = ("```bash\nmake demo\nOMP_NUM_THREADS=1 make data classifier EXP=configs/x.py\n"
             "make seeds OPTS=\"a.b=(1, 2)\" && make segmentr  # typo\n$ make nosuch\n```\n")
    assert _unknown_make_targets(block, _makefile_targets()) == [
        "'make seeds OPTS=\"a.b=(1, 2)\" && make segmentr  # typo': make segmentr",
        "'make nosuch': make nosuch"]
    assert _missing_config_paths("configs/demo_synthetic.py configs/_base_/*.py configs/nope.py "
                                 "configs/_base_/none*.py") == ["configs/_base_/none*.py",
                                                               "configs/nope.py"]
    comment = ('# see docs/RESULTS.md, "Real photos" and docs/RESULTS.md "Hard\n'
               '# synthetic benchmark", "Nowhere"; docs/NOPE.md, "Demo"\n')
    assert list(_section_citations(comment)) == [
        ("RESULTS.md", "Real photos"), ("RESULTS.md", "Hard synthetic benchmark"),
        ("RESULTS.md", "Nowhere"), ("NOPE.md", "Demo")]
    assert _unknown_sections(comment) == ['docs/RESULTS.md, "Nowhere"', 'docs/NOPE.md, "Demo"']
