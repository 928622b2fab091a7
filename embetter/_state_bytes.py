"""Fitted state as plain bytes, for pickle and skops files alike.

Torch weights travel as the bytes of `torch.save` and are read back with
`torch.load(weights_only=True)`, which creates tensors and plain containers, never objects.
A sentence model (fine-tuned by `SbertTuner`, or a static model trained on fit texts)
travels as the files of its saved folder, which `check_model_files` checks before the
library that owns the model reads them.
"""

from __future__ import annotations

import io
import json

#: Files of a saved sentence model that are data (weights as safetensors, JSON configs,
#: tokenizer vocabularies). Pickled weights (`.bin`, `.pt`) and code (`.py`) are refused.
_MODEL_FILE_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".md")


def torch_state_to_bytes(state) -> bytes:
    """A (CPU) state dict as bytes: data for skops and pickle alike."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def torch_state_from_bytes(blob):
    """The state dict back from `torch_state_to_bytes`; only tensors and containers load."""
    if not isinstance(blob, (bytes, bytearray)):
        return blob  # a pickle written before the state was stored as bytes
    import torch

    return torch.load(io.BytesIO(bytes(blob)), map_location="cpu", weights_only=True)


def check_model_files(files: dict) -> dict:
    """Refuse the files of a saved sentence model that could run code when it is loaded.

    Only data files are accepted (see `_MODEL_FILE_SUFFIXES`), and `modules.json` may only
    name sentence-transformers' own module classes.
    """
    for rel in files:
        # no way out of the folder, no empty part, no "." ("./modules.json" is modules.json
        # on disk, but escaped the check of the file by that name below)
        parts = rel.replace("\\", "/").split("/")
        if (_leads_out(rel) or "" in parts or "." in parts
                or not rel.endswith(_MODEL_FILE_SUFFIXES)):
            raise ValueError(f"refusing the model file {rel!r}: only data files are accepted")
    modules = files.get("modules.json")
    if modules is not None:
        for module in json.loads(modules):
            kind = str(module.get("type", ""))
            if not kind.startswith("sentence_transformers."):
                raise ValueError(f"refusing the model module type {kind!r} in modules.json")
            where = str(module.get("path", ""))
            # sentence-transformers joins it to the folder ("" is the folder itself)
            if _leads_out(where):
                raise ValueError(f"refusing the model module path {where!r} in modules.json: "
                                 "it leads out of the model's folder")
    return files


def _leads_out(rel: str) -> bool:
    """Whether a relative path inside a folder leads out of it: a parent step, a root, or a
    drive (`C:/x`, `C:x` on Windows)."""
    return (".." in rel.replace("\\", "/").split("/") or ":" in rel
            or rel.startswith(("/", "\\")))


def folder_to_bytes(save) -> dict[str, bytes]:
    """Every file `save(folder)` writes, keyed by relative path: a saved model as plain bytes,
    which pickles and skops files hold where they could not hold the model's own objects."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="embetter-pickle-") as tmp:
        save(tmp)
        root = Path(tmp)
        return {str(p.relative_to(root)): p.read_bytes()
                for p in sorted(root.rglob("*")) if p.is_file()}


def folder_from_bytes(files: dict, load):
    """`load(folder)` on a folder holding `files` (from `folder_to_bytes`); only data files
    are written back, never code (`check_model_files`)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="embetter-unpickle-") as tmp:
        for rel, data in check_model_files(files).items():
            target = Path(tmp, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return load(tmp)
