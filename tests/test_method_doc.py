"""docs/method.md is the account of the method that docstrings cite: every `docs/method.md §N` in the
code names a section the document has."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_cited_section_of_the_method_exists():
    sections = set(re.findall(r"^## (\d+)\. ", (ROOT / "docs" / "method.md").read_text(), flags=re.M))
    cited = {}
    for file in [*ROOT.glob("ledex_rl/**/*.py"), *ROOT.glob("actors/*.py"), *ROOT.glob("sandbox/*.py")]:
        for first, last in re.findall(r"docs/method\.md §(\d+)(?:-§(\d+))?", file.read_text()):
            for n in range(int(first), int(last or first) + 1):
                cited.setdefault(str(n), []).append(file.name)
    assert cited, "no docstring cites docs/method.md"
    assert set(cited) <= sections, {n: files for n, files in cited.items() if n not in sections}
