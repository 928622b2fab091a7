"""A light, trainable text encoder: TF-IDF over word and character n-grams, then SVD."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn import config_context
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion
from sklearn.preprocessing import normalize
from sklearn.utils.validation import check_is_fitted

from embetter._estimator_checks import Interval, all_or_nothing, refuse_bool_numbers
from embetter._validation import as_texts, check_int
from embetter.base import ReadsTextsOnce, text_input_tags

#: texts transformed at a time (their TF-IDF rows and float64 product are the temporaries)
TRANSFORM_CHUNK = 8192


def _basis_in_order(svd) -> None:
    """The SVD basis in Fortran order, so that `transform`'s `X @ components_.T` reads it in
    place: TruncatedSVD leaves a strided view, which scipy copied (the whole basis: 368 MB
    at 256 x 188,548) on every call, for 10 texts as for 50,000. Same values."""
    if not svd.components_.flags.f_contiguous:
        svd.components_ = np.asfortranarray(svd.components_)


class LiteTextEncoder(ReadsTextsOnce, TransformerMixin, BaseEstimator):
    """Dense text embeddings with no neural model: TF-IDF (words + character n-grams) + SVD.

    Useful without torch models or as a fast baseline. Unlike the pretrained encoders it learns
    its vocabulary and projection in `fit`. Save it with `embetter.utils.save_skops`
    (or joblib, for files you trust).

    Arguments:
        n_components: output dimension (capped at what the fitted texts allow: fewer than
            the texts and their vocabulary, at most the distinct texts and the rank of their
            TF-IDF).
        word_ngram_range: n-gram range of the word TF-IDF.
        char_ngram_range: n-gram range of the character TF-IDF (within word boundaries).
        max_features: vocabulary size cap per TF-IDF.
        normalize: scale outputs to unit length (a text with no term of the vocabulary, or
            an empty one, stays a zero vector).
        random_state: seed of the randomized SVD.

    Usage:

    ```python
    from embetter.text import LiteTextEncoder

    texts = ["the cat sat", "a dog barked", "cats and dogs", "the stock market fell"] * 5
    X = LiteTextEncoder(n_components=3, random_state=0).fit_transform(texts)
    assert X.shape == (20, 3)
    ```
    """

    _parameter_constraints = {
        "n_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "word_ngram_range": "no_validation",  # _check_range says what is expected
        "char_ngram_range": "no_validation",
        "max_features": [None, Interval(numbers.Integral, 1, None, closed="left")],
        "normalize": ["boolean"],
        "random_state": ["random_state"],
    }

    #: TF-IDF reads any str, one holding a lone surrogate (a file name decoded with
    #: surrogateescape) too; a disk cache wrapping this encoder lets them through
    reads_any_str = True

    def __init__(
        self,
        n_components=256,
        word_ngram_range=(1, 2),
        char_ngram_range=(2, 5),
        max_features=100_000,
        normalize=True,
        random_state=None,
    ):
        self.n_components = n_components
        self.word_ngram_range = word_ngram_range
        self.char_ngram_range = char_ngram_range
        self.max_features = max_features
        self.normalize = normalize
        self.random_state = random_state

    def _vectorizer(self, parts) -> FeatureUnion:
        made = {
            "word": lambda: TfidfVectorizer(ngram_range=tuple(self.word_ngram_range),
                                            max_features=self.max_features, sublinear_tf=True),
            "char": lambda: TfidfVectorizer(analyzer="char_wb",
                                            ngram_range=tuple(self.char_ngram_range),
                                            max_features=self.max_features, sublinear_tf=True),
        }
        return FeatureUnion([(part, made[part]()) for part in parts])

    @all_or_nothing
    def fit(self, X, y=None):
        """Learn the vocabulary, IDF weights and the SVD projection from texts."""
        n = check_int(self.n_components, "n_components")  # (its message, as before)
        self._validate_params()
        refuse_bool_numbers(self)
        for name in ("word_ngram_range", "char_ngram_range"):
            _check_range(getattr(self, name), name)
        texts = as_texts(X, utf8=not self.reads_any_str)
        if len(texts) < 2:
            raise ValueError(f"X has {len(texts)} texts; LiteTextEncoder needs at least 2 to fit")
        # the parts give arrays whatever sklearn's global transform_output (pandas cannot
        # hold the sparse TF-IDF); this encoder's own output follows it
        with config_context(transform_output="default"):
            try:
                self.vectorizer_ = self._vectorizer(("word", "char"))
                tfidf = self.vectorizer_.fit_transform(texts)
            except ValueError as e:
                if "empty vocabulary" not in str(e):
                    raise
                # no text holds a word of two letters (single letters, emoji): characters alone
                self.vectorizer_ = self._vectorizer(("char",))
                try:
                    tfidf = self.vectorizer_.fit_transform(texts)
                except ValueError:
                    raise ValueError("X holds no characters to learn from (every text is empty "
                                     "or blank)") from None
            if tfidf.shape[1] < 2:  # (TruncatedSVD's own error names no parameter)
                raise ValueError(
                    f"X gives a vocabulary of {tfidf.shape[1]} term: at least 2 are needed to "
                    "learn a space (raise max_features, or use n-gram ranges the texts are "
                    "long enough for)")
            # TruncatedSVD needs n_components < n_features, and more than the rank is wasted:
            # past it the components are noise of the seed's (repeated texts: distinct ones)
            self.n_components_ = int(max(1, min(n, tfidf.shape[1] - 1, len(texts) - 1,
                                                len(set(texts)))))
            # (every text the same: no variance to explain, whose ratio sklearn divides by)
            with np.errstate(divide="ignore", invalid="ignore"):
                self.svd_ = self._svd(tfidf, self.n_components_)
                values = self.svd_.singular_values_
                rank = int(np.sum(values > 1e-10 * values[0])) if values[0] > 0 else 1
                if rank < self.n_components_:  # (texts the TF-IDF reads alike: "Hi", "hi!")
                    self.n_components_ = max(1, rank)
                    self.svd_ = self._svd(tfidf, self.n_components_)
        _basis_in_order(self.svd_)
        return self

    def _svd(self, tfidf, n: int) -> TruncatedSVD:
        return TruncatedSVD(n, random_state=self.random_state).fit(tfidf)

    def transform(self, X):
        """Encode texts into a float32 array of shape `(n_texts, n_components_)`."""
        check_is_fitted(self, "svd_")
        texts = as_texts(X, utf8=not self.reads_any_str)
        if not texts:
            return np.zeros((0, self.n_components_), dtype=np.float32)
        out = np.empty((len(texts), self.n_components_), dtype=np.float32)
        # in chunks: the TF-IDF rows and the float64 product of a chunk at a time
        with config_context(transform_output="default"):  # (see fit)
            for start in range(0, len(texts), TRANSFORM_CHUNK):
                chunk = texts[start:start + TRANSFORM_CHUNK]
                part = self.svd_.transform(self.vectorizer_.transform(chunk))
                out[start:start + len(chunk)] = normalize(part) if self.normalize else part
        return out

    def __setstate__(self, state):
        super().__setstate__(state)
        svd = self.__dict__.get("svd_")
        if svd is not None:  # (one pickled before the basis was kept in order: at load, so
            _basis_in_order(svd)  # its cache key is the same from its first call on)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "svd_")
        return np.asarray([f"litetextencoder{i}" for i in range(self.n_components_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        text_input_tags(tags)
        return tags


def _check_range(value, name: str) -> None:
    """An n-gram range: a pair of ints (low, high) with 1 <= low <= high."""
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
          and 1 <= value[0] <= value[1])
    if not ok:
        raise ValueError(f"{name} must be a pair of ints (low, high) with 1 <= low <= high, "
                         f"got {value!r}")
