"""Fit SetFit 1.2 on one few-shot sample and score it (run by benchmarks/sbert.py).

Runs inside SetFit's own virtual environment (`.bench-venvs/setfit`, see benchmarks/sbert.py),
reads a JSON job `{"model", "seed", "train": [[text, label], ...], "test": [[text, label], ...]}`
(optionally `"max_steps"`) and prints one JSON line `{"acc", "fit_s", "cpu_s", "steps",
"full_steps"}`. SetFit's defaults, except batch size 16 and 1 epoch (as the issue's protocol
asks). `full_steps` is what its default sampling (every pair, the rarer kind oversampled to
match the other) trains on; with `max_steps` the run stops there, so the caller can
extrapolate its time (its accuracy is then not SetFit's at its defaults).
"""

import json
import math
import os
import sys
import tempfile
import time
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def setfit_steps(labels, batch_size=16) -> int:
    """The steps SetFit 1.2's default sampling trains: every pair of texts (each text with
    itself too), the rarer of positive and negative pairs oversampled to match the other."""
    counts = Counter(labels)
    positive = sum(n * (n + 1) // 2 for n in counts.values())
    negative = (len(labels) ** 2 - sum(n * n for n in counts.values())) // 2
    return math.ceil(2 * max(positive, negative) / batch_size)


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    texts, labels = zip(*job["train"])
    test_texts, test_labels = zip(*job["test"])
    full_steps = setfit_steps(labels)
    cap = int(job.get("max_steps") or -1)
    max_steps = cap if 0 < cap < full_steps else -1  # SetFit would train `cap` steps anyway
    model = SetFitModel.from_pretrained(job["model"], device="cpu")
    with tempfile.TemporaryDirectory(prefix="setfit-") as tmp:  # its checkpoints: not here
        args = TrainingArguments(output_dir=tmp, batch_size=16, num_epochs=1,
                                 seed=job["seed"], show_progress_bar=False, report_to="none",
                                 max_steps=max_steps)
        trainer = Trainer(model=model, args=args,
                          train_dataset=Dataset.from_dict({"text": list(texts),
                                                           "label": list(labels)}))
        t, cpu = time.perf_counter(), time.process_time()
        trainer.train()
        fit_s, cpu_s = time.perf_counter() - t, time.process_time() - cpu
    predicted = model.predict(list(test_texts), batch_size=64)
    acc = sum(int(p) == int(y) for p, y in zip(predicted, test_labels)) / len(test_labels)
    steps = full_steps if max_steps < 0 else min(max_steps, full_steps)
    print(json.dumps({"acc": acc, "fit_s": fit_s, "cpu_s": cpu_s, "steps": steps,
                      "full_steps": full_steps}), flush=True)


if __name__ == "__main__":
    main()
