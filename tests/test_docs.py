"""Every python code block in README.md, docs/*.md and public docstrings runs."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import embetter

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^(?P<indent> *)```python\n(?P<code>.*?)^(?P=indent)```", re.S | re.M)


def code_blocks(text: str) -> list[str]:
    out = []
    for m in BLOCK.finditer(text):
        indent = len(m.group("indent"))
        out.append("\n".join(line[indent:] for line in m.group("code").splitlines()))
    return out


def public_objects():
    for info in pkgutil.walk_packages(embetter.__path__, prefix="embetter."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") and obj is not module:
                continue
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj
                if inspect.isclass(obj):
                    for meth_name, meth in vars(obj).items():
                        if not meth_name.startswith("_") and inspect.isfunction(meth):
                            yield f"{module.__name__}.{name}.{meth_name}", meth


DOCSTRING_BLOCKS = sorted(
    (f"{qual}[{i}]", block)
    for qual, obj in {q: o for q, o in public_objects()}.items()
    for i, block in enumerate(code_blocks(inspect.getdoc(obj) or ""))
)
MARKDOWN_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
MARKDOWN_BLOCKS = [
    (f"{path.relative_to(ROOT)}", blocks)
    for path in MARKDOWN_FILES
    if (blocks := code_blocks(path.read_text()))
]


def test_docstrings_have_usage():
    assert len(DOCSTRING_BLOCKS) >= 8


@pytest.mark.parametrize("name, code", DOCSTRING_BLOCKS, ids=[n for n, _ in DOCSTRING_BLOCKS])
def test_docstring_usage_runs(name, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, name, "exec"), {"__name__": "__docs__"})


@pytest.mark.parametrize("name, blocks", MARKDOWN_BLOCKS, ids=[n for n, _ in MARKDOWN_BLOCKS])
def test_markdown_code_runs(name, blocks, tmp_path, monkeypatch):
    # the blocks of one page share a namespace, as they would in a notebook
    monkeypatch.chdir(ROOT)
    namespace = {"__name__": "__docs__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{name}[{i}]", "exec"), namespace)
