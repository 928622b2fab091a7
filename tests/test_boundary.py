"""embetter meets sentence-transformers and transformers in one module (`embetter/_st.py`), and
reads no other library's private attributes anywhere (issue 25, point 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "embetter"
BOUNDARY = PACKAGE / "_st.py"
#: Libraries only the boundary may import.
BOUNDARY_LIBRARIES = ("sentence_transformers", "transformers")
#: Attributes of those libraries' objects that only the boundary may touch: internals, names that
#: moved between releases, and a deprecated method.
BOUNDARY_ATTRIBUTES = {
    "auto_model", "backend_tokenizer", "transformers_model", "tokenize", "preprocess",
    "get_sentence_embedding_dimension", "get_embedding_dimension", "initial_lr",
    "set_attn_implementation", "create_model_card", "add_model_card_callback",
}


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


#: Private names of other libraries we use on purpose: scikit-learn's parameter validation
#: (`_parameter_constraints` + `_validate_params`, DESIGN.md), checked against the lowest
#: scikit-learn we allow by the version-floor run in .ci/run.
ALLOWED_PRIVATE = {"_validate_params"}


def _our_private_names() -> set[str]:
    """Every `_name` the package defines itself (functions, classes, attributes, variables)."""
    names = set()
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)  # __dict__["_name"] and getattr(obj, "_name")
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[-1])
    return {n for n in names if n.startswith("_")} | ALLOWED_PRIVATE


def _violations(text: str, rel: str, ours: set[str], boundary: bool = False) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(text)):
        modules = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        for module in modules:
            if module.split(".")[0] in BOUNDARY_LIBRARIES and not boundary:
                found.append(f"{rel}:{node.lineno} imports {module}")
        if isinstance(node, ast.Attribute):
            if node.attr in BOUNDARY_ATTRIBUTES and not boundary:
                found.append(f"{rel}:{node.lineno} reads .{node.attr}")
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            if private and node.attr not in ours:
                found.append(f"{rel}:{node.lineno} reads another library's private .{node.attr}")
    return found


def test_only_the_boundary_touches_sentence_transformers_and_private_attributes():
    ours = _our_private_names()
    found = [v for path in _sources()
             for v in _violations(path.read_text(), str(path.relative_to(PACKAGE.parent)), ours,
                                  boundary=path == BOUNDARY)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("snippet, expected", [
    ("from sentence_transformers import SentenceTransformer", "imports sentence_transformers"),
    ("import transformers.trainer", "imports transformers.trainer"),
    ("x = model[0].auto_model", "reads .auto_model"),
    ("model.tokenize(['a'])", "reads .tokenize"),
    ("rows = cache._sql('SELECT 1')", "private ._sql"),
])
def test_the_check_catches_each_kind_of_violation(snippet, expected):
    found = _violations(snippet + "\n", "embetter/mod.py", _our_private_names() - {"_sql"})
    assert any(expected in v for v in found), found
    assert not any("imports" in v or "reads ." in v
                   for v in _violations(snippet + "\n", "embetter/_st.py", set(), boundary=True))


def test_models_are_recognised_by_type(tiny_model_path):
    from embetter import _st
    from embetter.text import SentenceEncoder

    model = _st.load(tiny_model_path, "cpu")
    assert _st.is_sentence_model(model)
    assert not _st.is_sentence_model(tiny_model_path)

    class LooksLikeOne:  # the old duck-typing test accepted any object with these methods
        def encode(self, texts):
            return texts

        def tokenize(self, texts):
            return texts

    assert not _st.is_sentence_model(LooksLikeOne())
    assert not _st.is_sentence_model(SentenceEncoder(tiny_model_path))
    assert _st.embedding_dim(model) == 32
    assert _st.transformer(model) is not None and _st.transformer(model).config.hidden_size == 32
    spec = _st.tokenizer_spec(model)
    assert spec.max_length == 64 and spec.pad_id == 0 and '"WordPiece"' in spec.json


def test_resume_optimizer_keeps_the_new_learning_rate_and_the_old_moments():
    import torch

    from embetter._st import resume_optimizer

    w = torch.nn.Parameter(torch.ones(3))
    old = torch.optim.AdamW([w], lr=0.5)
    w.grad = torch.ones(3)
    old.step()
    state = old.state_dict()
    state["param_groups"][0]["lr"] = 0.0  # as a linear decay leaves it
    new = torch.optim.AdamW([w], lr=2e-5)
    resume_optimizer(new, state)
    assert new.param_groups[0]["lr"] == 2e-5 and "initial_lr" not in new.param_groups[0]
    assert int(new.state[w]["step"]) == 1
    torch.testing.assert_close(new.state[w]["exp_avg"], old.state[w]["exp_avg"])
    other = torch.optim.AdamW([w, torch.nn.Parameter(torch.ones(2))], lr=1.0)
    resume_optimizer(other, state)  # groups of other sizes: start afresh
    assert not other.state
