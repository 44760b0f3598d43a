"""The declared dependencies cover what the pipeline's own entry points import at run time.

What this proves: every third-party module that Snakemake's report code imports (``snakemake
--report``, which needs pygments, jinja2 and docutils) belongs to a distribution reached from
pyproject.toml's ``[project] dependencies`` through the installed packages' requirement metadata,
extras included. It does not install anything: it checks the dependency graph of this environment,
so a module that is importable here only because something outside that graph (pytest, a manual
install) pulled it in is caught.
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def declared() -> list[Requirement]:
    with open(REPO / "pyproject.toml", "rb") as fh:
        return [Requirement(r) for r in tomllib.load(fh)["project"]["dependencies"]]


def closure(requirements: list[Requirement]) -> set[str]:
    """Canonical names of the distributions the requirements pull in (transitively, with extras)."""
    seen: set[tuple[str, frozenset]] = set()
    names: set[str] = set()
    todo = [(r.name, frozenset(r.extras)) for r in requirements]
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional platform dependency not installed here
        names.add(canonicalize_name(name))
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
                todo.append((req.name, frozenset(req.extras)))
    return names


def third_party_imports(package_dir: Path, own: str) -> set[str]:
    """Top-level names imported anywhere under ``package_dir``, less the standard library and ``own``."""
    names: set[str] = set()
    for path in package_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != own and not n.startswith("_")}


def test_snakemake_report_imports_come_from_declared_dependencies():
    import snakemake.report

    report_dir = Path(snakemake.report.__file__).parent
    modules = third_party_imports(report_dir, "snakemake")
    assert {"pygments", "jinja2", "docutils"} <= modules  # what the report needs, by its own imports
    providers = md.packages_distributions()
    reachable = closure(declared())
    missing = {m: providers.get(m) for m in modules
               if not {canonicalize_name(d) for d in providers.get(m, [])} & reachable}
    assert not missing, f"imported by snakemake's report, not provided by a declared dependency: {missing}"


def test_without_the_reports_extra_pygments_is_not_declared():
    """The check above has teeth: plain ``snakemake`` does not bring pygments."""
    plain = [Requirement(str(r).replace("snakemake[reports]", "snakemake")) for r in declared()]
    if "pygments" in closure(plain):
        pytest.skip("another declared dependency brings pygments anyway")
    assert "pygments" in closure(declared())
