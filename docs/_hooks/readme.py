"""mkdocs hook: the home page is README.md, so the two never drift apart."""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

README = Path(__file__).resolve().parents[2] / "README.md"


def on_files(files, config):
    text = README.read_text(encoding="utf-8")
    # README links into docs/ work on GitHub; on the site those pages sit next to the home page.
    text = re.sub(r"\]\(docs/", "](", text)
    existing = files.get_file_from_path("index.md")
    if existing is not None:
        files.remove(existing)
    files.append(File.generated(config, "index.md", content=text))
    return files
