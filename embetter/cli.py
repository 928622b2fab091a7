"""Command line: `embetter demo` (more commands arrive with the CLI issue)."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    import numpy as np

    from embetter.text import SentenceEncoder

    texts = [
        "The cat sleeps on the sofa.",
        "A kitten naps on the couch.",
        "Interest rates rose again this quarter.",
        "The central bank lifted borrowing costs.",
    ]
    X = SentenceEncoder(normalize_embeddings=True, show_progress_bar=True).transform(texts)
    sims = X @ X.T
    print(f"Encoded {len(texts)} texts into {X.shape[1]} dimensions. Cosine similarities:")
    for i, text in enumerate(texts):
        print(f"  {text:<42} " + " ".join(f"{s:5.2f}" for s in sims[i]))
    nearest = np.argsort(-sims, axis=1)[:, 1]
    for i, j in enumerate(nearest):
        print(f"  nearest to {texts[i]!r}: {texts[j]!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embetter", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="encode a few texts with the bundled model")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
