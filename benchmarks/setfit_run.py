"""Fit SetFit 1.2 on one few-shot sample and score it (run by benchmarks/sbert.py).

Runs inside SetFit's own virtual environment (`.bench-venvs/setfit`, see benchmarks/sbert.py),
reads a JSON job `{"model", "seed", "train": [[text, label], ...], "test": [[text, label], ...]}`
and prints one JSON line `{"acc", "fit_s", "cpu_s"}`. SetFit's defaults, except batch
size 16 and 1 epoch (as the issue's protocol asks).
"""

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    texts, labels = zip(*job["train"])
    test_texts, test_labels = zip(*job["test"])
    model = SetFitModel.from_pretrained(job["model"], device="cpu")
    with tempfile.TemporaryDirectory(prefix="setfit-") as tmp:  # its checkpoints: not here
        args = TrainingArguments(output_dir=tmp, batch_size=16, num_epochs=1,
                                 seed=job["seed"], show_progress_bar=False, report_to="none")
        trainer = Trainer(model=model, args=args,
                          train_dataset=Dataset.from_dict({"text": list(texts),
                                                           "label": list(labels)}))
        t, cpu = time.perf_counter(), time.process_time()
        trainer.train()
        fit_s, cpu_s = time.perf_counter() - t, time.process_time() - cpu
    predicted = model.predict(list(test_texts), batch_size=64)
    acc = sum(int(p) == int(y) for p, y in zip(predicted, test_labels)) / len(test_labels)
    print(json.dumps({"acc": acc, "fit_s": fit_s, "cpu_s": cpu_s}), flush=True)


if __name__ == "__main__":
    main()
