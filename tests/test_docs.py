"""The documentation site builds in strict mode (broken links, pages missing from the nav and bad Markdown
extensions fail it), and the README stays a front page, not a lab notebook."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_mkdocs_builds_in_strict_mode(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "site" / "design" / "index.html").is_file()


def test_readme_is_at_most_300_lines_and_its_links_resolve():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.count("\n") <= 300
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert targets, "the README should link to the docs"
    missing = [t for t in targets if not t.startswith(("http://", "https://")) and not (REPO / t).exists()]
    assert not missing, f"README links to missing files: {missing}"
