"""Without an optional extra, its module says how to install it. These tests block the
package themselves, so they run whether or not the extra is installed (a module-level skip
for the extra would skip them exactly where they matter)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from embetter.text import SentenceEncoder


def test_without_dask_the_error_says_how_to_install(monkeypatch, corpus):
    module = importlib.import_module("embetter.dask")
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"pip install 'embetter\[dask\]'"):
        module.transform(SentenceEncoder(), corpus)


def test_missing_matplotlib_says_how_to_install_it():
    # a fresh interpreter where `import matplotlib` fails, as without the plot extra
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import embetter.plot as p\n"
        "try:\n"
        "    p.projection([[0.0, 1.0], [1.0, 0.0]])\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "pip install 'embetter[plot]'" in out


@pytest.mark.parametrize("backend, missing", [("onnx", "onnxruntime"),
                                              ("openvino", "openvino")])
def test_a_fast_backend_without_its_runtime_names_the_extra(tiny_model_path, monkeypatch,
                                                             backend, missing):
    # before: a bare "No module named 'onnxruntime'" from inside the export
    import embetter.text._backends as backends

    monkeypatch.setattr(backends, "_installed", lambda module: module != missing)
    with pytest.raises(ImportError, match=rf"{missing}.*pip install 'embetter\[{backend}\]'"):
        SentenceEncoder(tiny_model_path, backend=backend, device="cpu").transform(["hi"])
