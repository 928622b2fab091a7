"""`backend="auto"` measures: the decision (fake timings), the probe loop (a fake clock), the
per-machine cache, the wiring into SentenceEncoder, and the token-budget batching of the
default CUDA path (its logic, on the CPU)."""

from __future__ import annotations

import json
import logging
import pathlib
import pickle

import numpy as np
import pytest

from embetter.text import SentenceEncoder
from embetter.text._backends import auto
from embetter.text._backends._batching import token_budget_batches
from embetter.text._backends.auto import Plan

TORCH, PIPE = Plan("torch"), Plan("pipelined", "float32")
BF16, ONNX, OV = Plan("pipelined", "bfloat16"), Plan("onnx", "int8"), Plan("openvino", "float32")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBETTER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# -- the decision: timings + cosines -> plan ---------------------------------------------------
def test_choose_takes_the_fastest_plan_close_enough_to_float32():
    seconds = {TORCH: 2.0, PIPE: 1.9, BF16: 0.3, ONNX: 0.5, OV: 0.8}
    cosines = {TORCH: 1.0, PIPE: 1.0, BF16: 0.97, ONNX: 0.995, OV: 1.0}
    assert auto.choose(TORCH, seconds, cosines) == ONNX  # bf16 is faster but drifts
    assert auto.choose(TORCH, seconds, {**cosines, BF16: 0.999}) == BF16
    assert auto.choose(TORCH, seconds, cosines, min_cosine=0.999) == OV


def test_choose_gives_ties_and_noise_to_the_default():
    assert auto.choose(TORCH, {TORCH: 1.0, ONNX: 0.97}, {ONNX: 1.0}) == TORCH  # within 5 %
    assert auto.choose(TORCH, {TORCH: 1.0, ONNX: 0.94}, {ONNX: 1.0}) == ONNX
    assert auto.choose(TORCH, {TORCH: 1.0, ONNX: 1.0}, {ONNX: 1.0}, margin=0.0) == TORCH
    # a candidate without a cosine (its round did not run) never wins
    assert auto.choose(TORCH, {TORCH: 1.0, ONNX: 0.1}, {}) == TORCH
    # nothing measured for the default: keep the default
    assert auto.choose(TORCH, {ONNX: 0.1}, {ONNX: 1.0}) == TORCH


def test_choose_is_never_slower_than_the_default():
    rng = np.random.default_rng(0)
    plans = [TORCH, PIPE, BF16, ONNX, OV]
    for _ in range(500):
        seconds = dict(zip(plans, rng.uniform(0.1, 3.0, len(plans))))
        cosines = dict(zip(plans, rng.uniform(0.95, 1.0, len(plans))))
        pick = auto.choose(TORCH, seconds, cosines)
        assert seconds[pick] <= seconds[TORCH]
        assert pick == TORCH or cosines[pick] >= auto.MIN_COSINE


def test_candidates_follow_the_machine():
    cpu = auto.candidates("cpu", None, {"avx2"}, {"onnxruntime", "onnx", "openvino"})
    assert cpu == [TORCH, PIPE, ONNX, OV]  # the default first; no bfloat16 without it native
    assert auto.candidates("cpu", 32, {"avx512_bf16"}, set()) == [TORCH, PIPE, BF16]
    assert auto.candidates("cpu", None, set(), {"onnxruntime"}) == [TORCH, PIPE]  # no onnx
    cuda = auto.candidates("cuda", None)
    assert cuda[0] == Plan("pipelined", None, auto.CUDA_TOKEN_BUDGETS[1])
    assert TORCH in cuda and {p.max_tokens for p in cuda} >= set(auto.CUDA_TOKEN_BUDGETS)
    assert all(p.backend in ("torch", "pipelined") for p in cuda)
    assert auto.candidates("cuda", 256)[0] == Plan("pipelined")  # a text count was asked for


def test_plan_round_trips_and_refuses_what_it_cannot_run():
    plan = Plan("pipelined", "float16", 4096)
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    for bad in ({"backend": "tensorrt", "precision": None, "max_tokens": None},
                {"backend": "onnx", "precision": "float16", "max_tokens": None},
                {"backend": "auto", "precision": None, "max_tokens": None},
                {"backend": "pipelined", "precision": None, "max_tokens": -3},
                {"backend": "torch"}, ["torch"]):
        with pytest.raises(ValueError):
            Plan.from_dict(bad)


# -- the probe loop, on a fake clock ------------------------------------------------------------
class FakeMachine:
    """Plans that 'take' a set time per text on a fake clock, with embeddings at a set cosine
    to the reference (unit vectors rotated by a fixed angle)."""

    def __init__(self, per_text: dict, cosine: dict, noise=None, fail=()):
        self.now, self.per_text, self.cosine, self.noise = 0.0, per_text, cosine, noise
        self.fail, self.calls = set(fail), []

    def clock(self):
        return self.now

    def build(self, plan):
        self.now += 1.0  # setup
        if plan in self.fail:
            raise RuntimeError(f"{plan.label} is not installed")

        def run(texts):
            self.calls.append((plan, len(texts)))
            jitter = 1.0 if self.noise is None else self.noise(plan)
            self.now += self.per_text[plan] * len(texts) * jitter
            c = self.cosine.get(plan, 1.0)
            out = np.zeros((len(texts), 2), dtype=np.float32)
            out[:, 0], out[:, 1] = c, np.sqrt(1 - c * c)
            return out

        return run


def test_probe_chooses_measures_and_stays_in_budget():
    machine = FakeMachine({TORCH: 0.02, PIPE: 0.021, ONNX: 0.005, OV: 0.008},
                          {ONNX: 0.995, OV: 1.0})
    pool = [f"text {i}" for i in range(600)]
    plan, report = auto.run_probe(machine.build, [TORCH, PIPE, ONNX, OV], budget_s=8.0,
                                  pool=pool, clock=machine.clock)
    assert plan == ONNX
    assert report["choice"] == ONNX.to_dict() and report["default"] == TORCH.to_dict()
    # sized from the default's speed: 50 texts/s * 8 s / (2 * 4 plans) = 50 texts
    assert report["texts"] == 50
    assert report["seconds"] <= 8.0
    assert report["texts_per_second"]["onnx int8"] == pytest.approx(200.0)
    assert report["cosine_mean"]["onnx int8"] == pytest.approx(0.995, abs=1e-5)
    assert set(report["setup_seconds"]) == {"torch", "pipelined float32", "onnx int8",
                                            "openvino float32"}
    # after the first round only the default and plans that could still win run again
    timed = [p for p, n in machine.calls if n == 50]
    assert timed.count(PIPE) == 1 and timed.count(OV) == 1
    assert timed.count(TORCH) == report["rounds"] == timed.count(ONNX) >= 2


def test_on_a_loaded_machine_the_budget_runs_out_on_the_slow_candidates():
    # Every candidate is slow except onnx; the budget covers about three of the five rounds.
    machine = FakeMachine({TORCH: 0.1, PIPE: 0.15, BF16: 0.15, OV: 0.15, ONNX: 0.01}, {})
    plan, report = auto.run_probe(machine.build, [TORCH, PIPE, BF16, ONNX, OV], budget_s=4.0,
                                  pool=["a"] * 40, clock=machine.clock)
    assert plan == ONNX  # timed early: fastest warm-up first
    assert report["texts"] == auto.MIN_TEXTS
    assert "budget" in report["errors"]["pipelined bfloat16"]


def test_a_candidate_much_slower_in_its_warm_up_is_not_timed():
    machine = FakeMachine({TORCH: 0.02, BF16: 0.05, ONNX: 0.01}, {})
    plan, report = auto.run_probe(machine.build, [TORCH, BF16, ONNX], pool=["a"] * 40,
                                  clock=machine.clock)
    assert plan == ONNX and "2.5x slower" in report["errors"]["pipelined bfloat16"]
    assert BF16 not in [p for p, n in machine.calls if n == report["texts"]]


def test_an_incomplete_probe_is_not_cached(cache_dir):
    machine = FakeMachine({TORCH: 0.1, PIPE: 0.15, ONNX: 0.01}, {})
    args = ("another-model", "cpu", None, machine.build)
    kw = dict(flags=set(), installed={"onnxruntime", "onnx"}, budget_s=1.7,
              clock=machine.clock)
    plan, report = auto.resolve(*args, **kw)
    assert plan == ONNX and "budget" in report["errors"]["pipelined float32"]
    assert not list((cache_dir / "auto").glob("*.json"))  # (the probe's lock file only)
    plan, report = auto.resolve(*args, **{**kw, "budget_s": 60.0})  # a complete probe
    assert report["cached"] is False and len(list((cache_dir / "auto").glob("*.json"))) == 1


def test_probe_skips_plans_that_cannot_run_but_not_the_default():
    machine = FakeMachine({TORCH: 0.02, ONNX: 0.005}, {}, fail={ONNX})
    plan, report = auto.run_probe(machine.build, [TORCH, ONNX], pool=["a"] * 40,
                                  clock=machine.clock)
    assert plan == TORCH and "not installed" in report["errors"]["onnx int8"]
    # a default that cannot run here gives way to the float32 reference
    cuda_default = Plan("pipelined", None, 32768)
    machine = FakeMachine({TORCH: 0.02}, {}, fail={cuda_default})
    plan, report = auto.run_probe(machine.build, [cuda_default, TORCH], pool=["a"] * 40,
                                  clock=machine.clock)
    assert plan == TORCH and report["default"] == TORCH.to_dict()
    broken = FakeMachine({TORCH: 0.02}, {}, fail={TORCH})
    with pytest.raises(RuntimeError, match="not installed"):
        auto.run_probe(broken.build, [TORCH, ONNX], pool=["a"] * 40, clock=broken.clock)


def test_probe_takes_the_best_round_so_a_noisy_neighbour_does_not_decide():
    # Round one of the default (its second call, after the warm-up) is slowed 3x by a
    # neighbour: its best round still counts, and a candidate only 3 % faster than that best
    # does not replace it.
    calls = {TORCH: 0, PIPE: 0}

    def noise(plan):
        calls[plan] += 1
        return 3.0 if plan == TORCH and calls[plan] == 2 else 1.0

    machine = FakeMachine({TORCH: 0.01, PIPE: 0.0097}, {}, noise=noise)
    plan, report = auto.run_probe(machine.build, [TORCH, PIPE], pool=["a"] * 400,
                                  budget_s=20.0, clock=machine.clock)
    assert plan == TORCH and report["rounds"] >= 2
    assert report["texts_per_second"]["torch"] == pytest.approx(100.0)  # the unslowed round


# -- the cache --------------------------------------------------------------------------------
def _key(**kw):
    key = auto.cache_key("cpu", None, "model-abc")
    return {**key, **kw}


def test_cache_round_trip_and_keying(cache_dir):
    key = _key()
    path = auto.cache_file(key)
    assert path.parent == cache_dir / "auto"
    assert auto.read_choice(path, key, [TORCH, ONNX]) is None  # nothing yet
    assert auto.write_choice(path, key, ONNX, {"seconds": 1.5})
    assert auto.read_choice(path, key, [TORCH, ONNX]) == (ONNX, {"seconds": 1.5})
    assert not list(path.parent.glob(".*tmp*"))  # written atomically, nothing left over
    # another CPU, library version, model or batch size: another file, and a key check
    for other in (_key(cpu="Some Other CPU"), _key(model="model-xyz"), _key(batch_size=8),
                  _key(versions={**key["versions"], "onnxruntime": "0.0.1"}),
                  _key(gpu="NVIDIA H200")):
        assert auto.cache_file(other) != path
        assert auto.read_choice(path, other, [TORCH, ONNX]) is None
    # a plan that is no candidate here any more (its runtime was uninstalled)
    assert auto.read_choice(path, key, [TORCH]) is None


@pytest.mark.parametrize("content", [
    "{not json", "", "[1, 2]", '{"key": null}',
    '{"key": KEY, "choice": {"backend": "tensorrt", "precision": null, "max_tokens": null},'
    ' "probe": {}}',
    '{"key": KEY, "choice": {"backend": "onnx", "precision": "int8", "max_tokens": null}}',
])
def test_a_corrupt_cache_file_is_ignored(cache_dir, content):
    key = _key()
    path = auto.cache_file(key)
    path.parent.mkdir(parents=True)
    path.write_text(content.replace("KEY", json.dumps(key)))
    assert auto.read_choice(path, key, [TORCH, ONNX]) is None


def test_machine_key_reads_this_machine():
    key = auto.cache_key("cpu", 32, "fp")
    assert isinstance(key["cpu"], str) and key["cpu"]
    assert key["versions"]["torch"] and "sentence-transformers" in key["versions"]
    assert key["batch_size"] == 32 and key["model"] == "fp" and key["device"] == "cpu"


def test_model_fingerprint_follows_the_model_files(tiny_model_path, tmp_path):
    import shutil

    copy = shutil.copytree(tiny_model_path, tmp_path / "copy")
    first = auto.model_fingerprint(tiny_model_path)
    assert auto.model_fingerprint(tiny_model_path) == first
    assert auto.model_fingerprint(copy) != first  # another path
    config = copy / "config_sentence_transformers.json"
    before = auto.model_fingerprint(copy)
    config.write_text(config.read_text().replace("{", '{"changed": 1, ', 1))
    assert auto.model_fingerprint(copy) != before
    # a loaded model: its module layout and transformer config
    from sentence_transformers import SentenceTransformer

    loaded = SentenceTransformer(tiny_model_path, device="cpu")
    again = SentenceTransformer(tiny_model_path, device="cpu")
    assert auto.model_fingerprint(loaded) == auto.model_fingerprint(again) != first
    from embetter import _st

    _st.transformer(again).config.hidden_dropout_prob = 0.5
    assert auto.model_fingerprint(again) != auto.model_fingerprint(loaded)


def test_resolve_measures_once_then_reads_the_cache(cache_dir, caplog):
    machine = FakeMachine({TORCH: 0.02, PIPE: 0.02, ONNX: 0.005}, {ONNX: 0.995})
    built = []

    def build(plan):
        built.append(plan)
        return machine.build(plan)

    args = ("a-model-name", "cpu", None, build)
    kw = dict(flags=set(), installed={"onnxruntime", "onnx"}, budget_s=8.0,
              clock=machine.clock)
    with caplog.at_level(logging.INFO, logger="embetter"):
        plan, report = auto.resolve(*args, **kw)
    assert plan == ONNX and report["cached"] is False
    assert "measured 3 paths" in caplog.text and "runs onnx int8" in caplog.text
    n_built = len(built)
    plan2, report2 = auto.resolve(*args, **kw)
    assert plan2 == ONNX and report2["cached"] is True and len(built) == n_built
    assert report2["texts_per_second"] == report["texts_per_second"]
    # a corrupt file is measured again and rewritten
    path = pathlib.Path(report["cache_file"])
    path.write_bytes(b"\x00garbage")
    plan3, report3 = auto.resolve(*args, **kw)
    assert report3["cached"] is False and len(built) > n_built
    assert auto.read_choice(path, json.loads(path.read_text())["key"], [TORCH, ONNX])


def test_a_process_waits_for_anothers_probe_of_the_same_model(cache_dir):
    # joblib's workers measured together, against each other's load, and could run
    # different paths in one cross-validation; now one measures, the others read its choice
    import threading

    from filelock import FileLock

    machine = FakeMachine({TORCH: 0.02, PIPE: 0.02, ONNX: 0.005}, {ONNX: 0.995})
    args = ("a-model-name", "cpu", None, machine.build)
    kw = dict(flags=set(), installed={"onnxruntime", "onnx"}, budget_s=8.0,
              clock=machine.clock)
    plan, report = auto.resolve(*args, **kw)  # the other process's probe, kept on disk
    path = pathlib.Path(report["cache_file"])
    kept = path.read_bytes()
    path.unlink()
    other = FileLock(f"{path}.lock")
    other.acquire()  # the other process, still measuring
    built, got = [], {}

    def build(plan):
        built.append(plan)
        return machine.build(plan)

    waiting = threading.Thread(target=lambda: got.update(
        zip(("plan", "report"), auto.resolve(*args[:3], build, **kw))))
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive() and not built  # it waits instead of measuring
    path.write_bytes(kept)  # the other process's choice lands, then its lock opens
    other.release()
    waiting.join(30)
    assert got["plan"] == plan and got["report"]["cached"] is True and not built


def test_a_file_system_without_locks_measures_all_the_same(cache_dir, monkeypatch):
    import filelock

    def refuse(self, *args, **kwargs):  # filelock < 4 on a file system without flock
        raise NotImplementedError("FileSystem does not appear to support flock")

    monkeypatch.setattr(filelock.FileLock, "acquire", refuse)
    machine = FakeMachine({TORCH: 0.02, PIPE: 0.02, ONNX: 0.005}, {ONNX: 0.995})
    plan, report = auto.resolve("a-model-name", "cpu", None, machine.build,
                                flags=set(), installed={"onnxruntime", "onnx"}, budget_s=8.0,
                                clock=machine.clock)
    assert plan == ONNX and report["cached"] is False


def test_a_cpu_with_other_flags_measures_again(cache_dir):
    # one CPU name ("AMD EPYC") covers CPUs with and without bfloat16: a choice made where
    # bfloat16 was no candidate was reused on one that has it, never timed there
    machine = FakeMachine({TORCH: 0.02, PIPE: 0.02, ONNX: 0.005}, {ONNX: 0.995})
    args = ("a-model-name", "cpu", None, machine.build)
    kw = dict(installed={"onnxruntime", "onnx"}, budget_s=8.0, clock=machine.clock)
    plain = auto.resolve(*args, flags=set(), **kw)[1]
    bf16 = auto.resolve(*args, flags={"avx512_bf16"}, **kw)[1]
    assert bf16["cached"] is False and bf16["cache_file"] != plain["cache_file"]
    assert auto.resolve(*args, flags={"avx512_bf16"}, **kw)[1]["cached"] is True


# -- SentenceEncoder(backend="auto") on the tiny model -------------------------------------------
def test_encoder_probe_is_reported_cached_and_not_pickled(tiny_model_path, corpus, cache_dir,
                                                          monkeypatch):
    # a roomy budget, so that a loaded machine still times every candidate (and caches it);
    # the tiny model makes every round short anyway
    monkeypatch.setattr(auto, "BUDGET_S", 30.0)
    enc = SentenceEncoder(tiny_model_path, device="cpu", backend="auto")
    X = enc.transform(corpus[:5])
    assert X.shape == (5, 32) and X.dtype == np.float32
    probe = enc.backend_probe_
    assert probe["cached"] is False and enc.backend_ == probe["choice"]["backend"]
    assert probe["texts_per_second"]["torch"] > 0 and probe["seconds"] > 0
    assert list(cache_dir.glob("auto/*.json")) == [pathlib.Path(probe["cache_file"])]
    again = SentenceEncoder(tiny_model_path, device="cpu", backend="auto")
    np.testing.assert_allclose(again.transform(corpus[:5]), X, atol=1e-5)
    assert again.backend_probe_["cached"] is True and again.backend_ == enc.backend_
    restored = pickle.loads(pickle.dumps(enc))
    assert not hasattr(restored, "backend_") and not hasattr(restored, "backend_probe_")
    assert restored.get_params() == enc.get_params()
    enc.set_params(backend="torch").transform(corpus[:2])  # the report no longer applies
    assert not hasattr(enc, "backend_") and not hasattr(enc, "backend_probe_")


def test_an_explicit_backend_wins_over_auto(tiny_model_path, corpus, cache_dir):
    for backend in (None, "torch", "pipelined"):
        enc = SentenceEncoder(tiny_model_path, device="cpu", backend=backend)
        enc.transform(corpus[:3])
        assert not hasattr(enc, "backend_probe_")
    assert not (cache_dir / "auto").exists()  # nothing was measured


# -- the default path per device, and its token-budget batching ------------------------------
def test_default_plan_per_device(tiny_model_path, monkeypatch):
    from embetter.text._backends.pipelined import CUDA_MAX_TOKENS

    enc = SentenceEncoder(tiny_model_path)
    monkeypatch.setattr(SentenceEncoder, "_device_kind", lambda self: "cpu")
    assert enc._plan() == Plan("torch")
    monkeypatch.setattr(SentenceEncoder, "_device_kind", lambda self: "cuda")
    assert enc._plan() == Plan("pipelined", None, CUDA_MAX_TOKENS)
    assert enc._texts_per_batch(enc._plan()) == CUDA_MAX_TOKENS  # the budget cuts batches
    enc.set_params(batch_size=256)
    assert enc._plan() == Plan("pipelined")  # a text count asked for: a text count given
    assert enc._texts_per_batch(enc._plan()) == 256
    enc.set_params(batch_size=None, backend="torch")
    assert enc._plan() == Plan("torch") and enc._texts_per_batch(enc._plan()) == 32
    enc.set_params(backend="pipelined", precision="float32")
    assert enc._plan() == Plan("pipelined", "float32", CUDA_MAX_TOKENS)


def test_the_cuda_default_falls_back_to_torch_where_the_fast_path_cannot_run(
        tiny_model_path, corpus, monkeypatch):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    model[1].include_prompt = False  # pooling without the prompt's tokens
    monkeypatch.setattr(SentenceEncoder, "_device_kind", lambda self: "cuda")
    enc = SentenceEncoder(model, prompt="query: ")
    assert enc._plan() == Plan("torch")
    ref = SentenceEncoder(model, prompt="query: ", backend="torch").transform(corpus[:4])
    np.testing.assert_allclose(enc.transform(corpus[:4]), ref, atol=1e-6)
    assert enc.set_params(prompt=None)._plan().backend == "pipelined"  # without a prompt it can


def test_token_budget_batches_cover_every_text_under_the_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=1000)
    for budget, cap in ((512, None), (4096, None), (4096, 16), (100, None)):
        batches = token_budget_batches(lengths, budget, cap)
        flat = np.concatenate(batches)
        assert sorted(flat.tolist()) == list(range(len(lengths)))  # each text exactly once
        assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
        for b in batches:
            padded = len(b) * lengths[b].max()
            assert padded <= budget or len(b) == 1  # only a too-long text goes over, alone
            assert cap is None or len(b) <= cap
    # short texts travel in bigger batches than long ones
    batches = token_budget_batches([10] * 100 + [200] * 10, 1000)
    assert len(batches[0]) == 5 and len(batches[-1]) == 100
    assert token_budget_batches([], 100) == []


def test_pipelined_token_budget_restores_the_order(tiny_model_path, corpus):
    long = " ".join(corpus[:12])
    texts = [t + (" " + long if i % 4 == 0 else "") for i, t in enumerate(corpus[:60])]
    ref = SentenceEncoder(tiny_model_path, device="cpu", backend="torch").transform(texts)
    enc = SentenceEncoder(tiny_model_path, device="cpu", backend="pipelined",
                          precision="float32")
    engine = enc._fast_engine(enc._plan())
    for budget in (64, 300, 10_000):
        got = engine.encode(texts, 1 << 20, max_tokens=budget)
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_half_precision_is_kept_only_where_it_holds(tiny_model_path, corpus):
    enc = SentenceEncoder(tiny_model_path, device="cpu", backend="pipelined")
    engine = enc._fast_engine(enc._plan())
    assert engine.precision == "float32" and engine.half_cosine is None  # CPU: not checked
    assert engine.settle_half("bfloat16", corpus[:20]) == "bfloat16"
    assert 0.999 <= engine.half_cosine < 1.0
    assert engine.settle_half("bfloat16", corpus[:20], min_cosine=1.01) == "float32"
    assert engine.precision == "float32"  # settling leaves the engine as it was


@pytest.mark.parametrize("kw, match", [
    (dict(batch_size=0), "batch_size must be None or a positive int"),
    (dict(batch_size="32"), "batch_size must be None or a positive int"),
    (dict(backend="fast"), "backend must be one of None, 'torch'"),
    (dict(precision="float16"), "precision for backend=None must be one of None"),
])
def test_bad_default_parameters_are_named(tiny_model_path, kw, match):
    with pytest.raises(ValueError, match=match):
        SentenceEncoder(tiny_model_path, **kw).transform(["a"])
