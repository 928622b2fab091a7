"""How fast can any path that computes the whole model encode on *this* CPU? (issue 12)

A transformer's encode is almost all matrix multiplication. This script counts the
multiply-adds all-MiniLM-L6-v2 needs for the 1,000 texts of benchmarks/encode_speed.py (half
SST-2, half AG News; their real token counts, attention included), measures the fastest
matrix-multiply rate this CPU reaches on the model's own shapes in float32 (torch, onnxruntime)
and in int8 (onnxruntime's `MatMulInteger`, the kernel of `backend="onnx"`'s int8 path), and
prints the ceiling in texts/s each rate allows, beside the measured default path. No path that
computes the whole model (cosine >= 0.99 to it) beats the best ceiling; `ceiling / default`
bounds the speed-up any such path can reach on this CPU.

    python benchmarks/cpu_ceiling.py            # run it on a quiet machine
"""

from __future__ import annotations

import os
import time

import numpy as np
from encode_common import load_texts  # the same 1,000 texts (half SST-2, half AG News)


def best_rate(fn, macs: float, repeats: int = 7) -> float:
    """Giga multiply-adds per second: the best of `repeats` timed calls."""
    fn()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return macs / best / 1e9


def model_macs(texts, model) -> tuple[float, float]:
    """Multiply-adds of one encode of `texts` (truncated as the model does), mean tokens."""
    cfg = model[0].auto_model.config
    d, ff, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    lengths = np.array([len(ids) for ids in model.tokenizer(
        texts, truncation=True, max_length=model.max_seq_length)["input_ids"]])
    dense = layers * (4 * d * d + 2 * d * ff) * lengths.sum()  # Q, K, V, O and the MLP
    attention = layers * 2 * d * (lengths.astype(float) ** 2).sum()  # QK^T and AV
    return float(dense + attention), float(lengths.mean())


def _ort_matmuls(shapes, op, a_type, b_type, rng):
    """onnxruntime sessions, one per shape, each multiplying an input by a constant weight."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    out_type = TensorProto.INT32 if op == "MatMulInteger" else TensorProto.FLOAT
    runs = []
    for m, k, n in shapes:
        if b_type == TensorProto.INT8:
            values, a = rng.integers(-128, 127, size=k * n), rng.integers(0, 255, (m, k), np.uint8)
        else:
            values, a = rng.standard_normal(k * n), rng.standard_normal((m, k), np.float32)
        graph = helper.make_graph(
            [helper.make_node(op, ["A", "B"], ["Y"])], "mm",
            [helper.make_tensor_value_info("A", a_type, [m, k])],
            [helper.make_tensor_value_info("Y", out_type, [m, n])],
            [helper.make_tensor("B", b_type, [k, n], values.tolist())])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        runs.append((ort.InferenceSession(proto.SerializeToString(),
                                          providers=["CPUExecutionProvider"]), a))
    return lambda: [session.run(None, {"A": a}) for session, a in runs]


def gemm_rates(tokens: int, d: int, ff: int) -> dict:
    import torch
    from onnx import TensorProto

    rng = np.random.default_rng(0)
    shapes = [(tokens, d, d), (tokens, d, ff), (tokens, ff, d)]  # attention proj., MLP in/out
    macs = sum(m * k * n for m, k, n in shapes)
    fp32 = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    return {
        "float32 matmul (torch)": best_rate(lambda: [a @ b for a, b in fp32], macs),
        "float32 MatMul (onnxruntime)": best_rate(
            _ort_matmuls(shapes, "MatMul", TensorProto.FLOAT, TensorProto.FLOAT, rng), macs),
        "int8 MatMulInteger (onnxruntime)": best_rate(
            _ort_matmuls(shapes, "MatMulInteger", TensorProto.UINT8, TensorProto.INT8, rng),
            macs),
    }


def main():
    from embetter.text import SentenceEncoder
    from embetter.text._models import load_sentence_transformer

    texts = load_texts(1000)
    model = load_sentence_transformer("all-MiniLM-L6-v2", "cpu")
    macs, mean_tokens = model_macs(texts, model)
    cfg = model[0].auto_model.config
    rates = gemm_rates(4096, cfg.hidden_size, cfg.intermediate_size)
    encoder = SentenceEncoder()
    encoder.transform(texts[:64])
    start = time.perf_counter()
    encoder.transform(texts)
    default = len(texts) / (time.perf_counter() - start)
    print(f"1,000 texts (SST-2, AG News): {mean_tokens:.1f} tokens each on average, "
          f"{macs / len(texts) / 1e6:.0f} M multiply-adds per text (all-MiniLM-L6-v2)")
    print(f"default SentenceEncoder() measured: {default:.0f} texts/s "
          f"({default * macs / len(texts) / 1e9:.1f} G multiply-adds/s)\n")
    print("| matrix multiply on the model's shapes | G mult-adds/s | ceiling texts/s "
          "| ceiling / default |")
    print("|---|---|---|---|")
    for name, rate in rates.items():
        ceiling = rate * 1e9 / (macs / len(texts))
        print(f"| {name} | {rate:.1f} | {ceiling:.0f} | {ceiling / default:.2f}x |")
    print(f"\nload average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
