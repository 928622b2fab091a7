"""Where `backend="auto"` keeps its choices: one small JSON file per machine, library
versions, model and batching, under `$EMBETTER_CACHE_DIR/auto/`, written atomically."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from pathlib import Path

log = logging.getLogger("embetter")

#: Bump when the probe or the candidates change, so older choices are measured again.
AUTO_VERSION = "1"
#: Python modules whose versions change the speed of some path.
LIBRARIES = ("torch", "sentence-transformers", "transformers", "onnxruntime", "onnx", "openvino")


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows."""
    from embetter.text._backends import cpuinfo

    return cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def model_fingerprint(name) -> str:
    """A cheap fingerprint of a model: its resolved name or path plus a hash of its
    configuration (every file under 1 MiB by content, larger ones, the weights, by size), or,
    for a loaded `SentenceTransformer`, its module layout and transformer config."""
    from embetter.text._models import resolve_model

    h = hashlib.blake2b(digest_size=12)
    if isinstance(name, (str, os.PathLike)):
        resolved = Path(resolve_model(name))
        h.update(str(resolved).encode())
        if resolved.is_dir():
            for file in sorted(p for p in resolved.rglob("*") if p.is_file()):
                size = file.stat().st_size
                h.update(f"{file.relative_to(resolved)}:{size}".encode())
                if size < (1 << 20):
                    h.update(file.read_bytes())
        return h.hexdigest()
    h.update(repr(name).encode())
    from embetter import _st

    config = getattr(_st.transformer(name), "config", None)
    if config is not None:
        h.update(config.to_json_string().encode())
    return h.hexdigest()


def cache_key(kind: str, batch_size, fingerprint: str, gpu: str | None = None,
              flags=frozenset(), plans=()) -> dict:
    """What the choice depends on: this machine (its CPU's name and instruction-set `flags`:
    one name covers CPUs with and without bfloat16 or VNNI), the libraries, the model, the
    batching, and the candidate `plans` (a choice made among others is measured again)."""
    import torch

    from embetter import __version__ as embetter_version

    return {
        "auto_version": AUTO_VERSION,
        "device": kind,
        "cpu": cpu_model(),
        "cpu_flags": hashlib.blake2b(" ".join(sorted(flags)).encode(),
                                     digest_size=8).hexdigest(),
        "candidates": [plan.label for plan in plans],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "versions": library_versions(),
        "model": fingerprint,
        # (an int: numpy's, as GridSearchCV hands it, is no JSON)
        "batch_size": None if batch_size is None else int(batch_size),
        # (what the probe measures and may save changes with embetter's own code too)
        "embetter": embetter_version,
    }


def cache_file(key: dict) -> Path:
    from embetter.text._models import cache_root

    digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=12)
    return cache_root() / "auto" / f"{digest.hexdigest()}.json"


def load(path: Path, key: dict) -> dict | None:
    """The saved record for `key`, or None when missing, unreadable, corrupt or made for
    another key."""
    try:
        data = json.loads(Path(path).read_text())
        return data if isinstance(data, dict) and data.get("key") == key else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.debug("backend='auto': ignoring the unreadable choice cache %s: %s", path, e)
        return None


def save(path: Path, data: dict) -> bool:
    """Write `data` atomically; False (and a warning) when the cache is not writable."""
    from embetter._atomic import atomic_path

    try:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=True))
    except (OSError, ValueError) as e:  # (ValueError: the path is a folder, say)
        log.warning("backend='auto' could not save its choice to %s (%s): it will measure "
                    "again in the next process", path, e)
        return False
    return True
