"""How a `SentenceEncoder` runs: which backend and batching (`backend="auto"` measured here,
on first use), the engine of a fast backend, and the encoding call itself."""

from __future__ import annotations

import threading

import numpy as np

from embetter._guest import reopen_after_fork
from embetter._st import default_prompt, embedding_dim, is_sentence_model
from embetter.text._model_copies import weights_signature

#: Texts per batch when `batch_size` is None and no token budget applies.
DEFAULT_BATCH_SIZE = 32

#: held while `backend="auto"` measures (one measurement at a time in the process)
_MEASURING = threading.RLock()
#: held while a model is loaded or a fast engine built, so that threads asking together
#: wait for the first one's instead of building their own (re-entrant: a build loads)
BUILDING = threading.RLock()
reopen_after_fork(_MEASURING, BUILDING)


class EncodePaths:
    """The run-time half of `SentenceEncoder`: it reads the estimator's parameters (`name`,
    `device`, `backend`, `precision`, `batch_size`, `prompt`) and its `model_`."""

    def _device_kind(self) -> str:
        from embetter._torch import device_name

        return device_name(self.device).split(":")[0]

    def _plan(self):
        """The `Plan` that runs (backend, precision, batching); `backend="auto"` is measured
        here on first use (or read from its cache) and remembered."""
        from embetter.text._backends.auto import Plan, default_plan

        if self.backend != "auto":  # set_params away from "auto": its report no longer applies
            self.__dict__.pop("backend_", None)
            self.__dict__.pop("backend_probe_", None)
        if self.backend in ("torch", "onnx", "openvino"):
            if self.backend == "torch" and self.precision == "float32":
                self._check_torch_float32()
            return Plan(self.backend, self.precision)
        if self.backend == "pipelined":
            plan = default_plan(self._device_kind(), self.batch_size)
            return Plan("pipelined", self.precision, plan.max_tokens)
        # the default and "auto" choose a path themselves: one this model and prompt cannot
        # take (a prompt the pooling leaves out, say; auto measures without the prompt, at
        # the full width) gives way to sentence-transformers' own
        auto = self.backend == "auto"
        plan = self._auto_plan() if auto else default_plan(self._device_kind(), self.batch_size)
        if plan.backend != "torch" and not self._runs(plan):
            plan = Plan("torch")
        if auto:
            self.__dict__["backend_"] = plan.backend  # what runs
        return plan

    def _check_torch_float32(self) -> None:
        """`precision="float32"` on `backend="torch"`: sentence-transformers runs a model in
        the dtype of its weights, so a half-precision model is refused, not run in half."""
        from embetter.text._backends.pipelined import float32_weights, weights_dtype

        if not float32_weights(self.model_):
            raise ValueError(
                f"precision='float32' with backend='torch': the model's weights are "
                f"{weights_dtype(self.model_)}, and sentence-transformers runs them as they "
                "are; backend='pipelined' runs a float32 copy (precision='float32'), or "
                "load the model in float32"
            )

    def _auto_plan(self):
        """`backend="auto"`: the path measured on this machine (once; remembered)."""
        # the model and device, not its mode or folder state: a choice measured once holds
        key = (self._model_key()[:2], self.batch_size)
        cached = self.__dict__.get("_auto")
        if cached is not None and cached[0] == key:
            return cached[1]
        # one measurement at a time in the process: threads that ask together wait for the
        # first one's choice (from memory or the disk cache) instead of racing their own
        # timings against each other and picking different paths
        with _MEASURING:
            cached = self.__dict__.get("_auto")
            if cached is not None and cached[0] == key:
                return cached[1]
            plan, report = self._measure()
            self.__dict__["_auto"] = (key, plan)
            self.__dict__["backend_"] = plan.backend
            self.__dict__["backend_probe_"] = report
        return plan

    def _runs(self, plan) -> bool:
        """Whether the default's fast path runs this model (a fast tokenizer; a prompt only
        where the pooling keeps its tokens); if not, the default is sentence-transformers'."""
        from embetter.text._backends._export import ExportDrift

        # (the engine's key: a caller's model that trained on is exported, and checked, again)
        key = (self._engine_key(plan), plan, self.prompt)
        known = self.__dict__.get("_fast_ok")
        if known is None or known[0] != key:
            try:
                engine = self._fast_engine(plan)
                prompt = engine.default_prompt if self.prompt is None else self.prompt
                ok = not (prompt and engine.needs_prompt_length)
            except (ValueError, ExportDrift):  # a model whose export drifts runs as it is
                ok = False
            known = self.__dict__["_fast_ok"] = (key, ok)
        return known[1]

    def _measure(self):
        """`backend="auto"`: time the candidate paths here (or read the cached choice)."""
        from embetter.text._backends import cpu_flags, installed_runtimes
        from embetter.text._backends.auto import resolve

        kind, gpu = self._device_kind(), None
        if kind == "cuda":
            import torch

            from embetter._torch import device_name

            gpu = torch.cuda.get_device_name(torch.device(device_name(self.device)))
        engines = {}

        def build(plan):
            if plan.backend != "torch":
                engines[plan] = self._fast_engine(plan, keep=False)
            # (the choice is cached for the model, whatever an encoder's prompt and width)
            return lambda texts: self._encode(plan, texts, engines.get(plan), progress=False,
                                              probe=True)

        plan, report = resolve(self.name, kind, self.batch_size, build, gpu=gpu,
                               flags=cpu_flags(), installed=installed_runtimes())
        if plan in engines:  # keep the engine the probe built (an ONNX session, say)
            self.__dict__["_engine"] = (self._engine_key(plan), engines[plan])
        return plan, report

    def _engine_key(self, plan):
        from embetter.text._backends.pipelined import may_copy

        key = (self._model_key(), plan.backend, plan.precision)
        if is_sentence_model(self.name):
            # an engine tokenises to the model's length when built: a caller's model given
            # another max_seq_length gets a new one
            key += (getattr(self.name, "max_seq_length", None),)
            if plan.backend in ("onnx", "openvino"):
                # an export is a snapshot: a caller's model that trained on (or was given
                # another default prompt) is exported again
                key += (weights_signature(self.name), default_prompt(self.name))
            elif plan.backend == "pipelined" and may_copy(self.name, plan.precision,
                                                          self._device_kind() == "cuda"):
                # the engine runs a float32 copy of a half-precision model: a caller's model
                # that trained on gets a new one (an engine of the model itself follows it)
                key += (weights_signature(self.name),)
        return key

    def _model_cut(self, plan, engine=None):
        """The model's own `truncate_dim` (saved in its config, or set on a caller's model):
        its `encode` cuts to it, the fast engines compute the full width. `engine`: the one
        running `plan` (the auto probe's own, which `_fast_engine` does not keep)."""
        if is_sentence_model(self.name):
            return getattr(self.name, "truncate_dim", None)
        if plan.backend == "torch":
            return getattr(self.model_, "truncate_dim", None)
        return (engine or self._fast_engine(plan)).truncate_dim

    def _fast_engine(self, plan, keep: bool = True):
        """The engine of a fast backend (not `"torch"`), built on first use."""
        key = self._engine_key(plan)
        cached = self.__dict__.get("_engine")
        if cached is not None and cached[0] == key:
            return cached[1]
        from embetter.text._backends import make_engine

        with BUILDING:  # threads that ask together: one builds, the others then find it
            cached = self.__dict__.get("_engine")
            if cached is not None and cached[0] == key:
                return cached[1]
            engine = make_engine(plan.backend, plan.precision, self.name, lambda: self.model_)
            if keep:
                self.__dict__["_engine"] = (key, engine)
        return engine

    def _texts_per_batch(self, plan) -> int:
        if self.batch_size is not None:
            return int(self.batch_size)
        # With a token budget the budget cuts batches; the count is only a (loose) cap.
        return int(plan.max_tokens) if plan.max_tokens else DEFAULT_BATCH_SIZE

    def _encode(self, plan, texts, engine=None, progress=None, probe=False) -> np.ndarray:
        """Run `plan` on a non-empty list of texts: float32 `(n, dim)`, cut to the width
        asked for (`truncate_dim`, else the model's own truncation). `probe`: as auto's probe
        runs it, for any encoder of the model (no prompt of the encoder's, the full width)."""
        progress = bool(self.show_progress_bar) if progress is None else progress
        batch = self._texts_per_batch(plan)
        prompt = None if probe else self.prompt
        if not probe:  # an explicit truncation overrides the model's own (wider too)
            asked = self._output_dim_param()[0]
        else:  # (the fast engines compute the full width; the model's encode is told it)
            asked = (embedding_dim(self.model_, untruncated=True) if plan.backend == "torch"
                     else None)
        if plan.backend == "torch":
            emb = self.model_.encode(texts, batch_size=batch, show_progress_bar=progress,
                                     convert_to_numpy=True, normalize_embeddings=False,
                                     prompt=prompt, truncate_dim=asked)
            return np.asarray(emb, dtype=np.float32)
        engine = engine or self._fast_engine(plan)
        extra = {"max_tokens": plan.max_tokens} if plan.max_tokens else {}
        emb = engine.encode(texts, batch, prompt, progress, **extra)
        if probe:
            return emb
        cut = asked if asked is not None else self._model_cut(plan, engine)
        return emb if cut is None else np.ascontiguousarray(emb[:, :int(cut)])
