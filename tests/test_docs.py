"""Links into docs/method.md from code, configs and docs name sections that exist."""
from __future__ import annotations

import re

SCANNED = ("masqclip", "config", "docs", "workflow", "benchmarks", "README.md")
LINK = re.compile(r"method\.md#([a-z0-9-]+)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_method_links_name_existing_sections(repo_dir):
    method = repo_dir / "docs" / "method.md"
    anchors = {github_anchor(line.lstrip("#")) for line in method.read_text().splitlines() if line.startswith("#")}
    assert {"stage-a-the-teacher", "stage-b-progressive-distillation", "stage-c-masq-tuning", "inference",
            "the-papers-numbers", "the-miniature"} <= anchors
    links = {}
    for top in SCANNED:
        root = repo_dir / top
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file() and path.suffix in (".py", ".md", ".yaml", ".smk", ".json", ""):
                for anchor in LINK.findall(path.read_text(errors="ignore")):
                    links.setdefault(anchor, []).append(str(path.relative_to(repo_dir)))
    assert len(links) >= 4  # the stage pages are linked from the code that implements them
    for anchor in re.findall(r"\]\(#([a-z0-9-]+)\)", method.read_text()):  # the page's own contents list
        links.setdefault(anchor, []).append("docs/method.md")
    missing = {a: files for a, files in links.items() if a not in anchors}
    assert not missing, f"links to sections docs/method.md does not have: {missing}"
