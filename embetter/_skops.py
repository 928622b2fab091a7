"""Fitted pipelines as skops files: saved as data, loaded only when every type is trusted.

A joblib (pickle) file runs whatever code it names when it is loaded. A skops file stores the
state of each object as data; loading it first lists the types it would create, and refuses
the ones nobody trusted. skops trusts scikit-learn, numpy and Python's builtins itself; this
module adds embetter's own estimators (`TRUSTED`), whose `__setstate__` only rebuilds what
their parameters describe. Torch weights and saved model folders travel as bytes
(`embetter._state_bytes`), read back as data only.
"""

from __future__ import annotations

import importlib
import zipfile

from embetter._atomic import atomic_path, user_path
from embetter._validation import check_bool

#: The classes trusted in a skops file by `load_skops` besides what skops trusts: the public
#: ones, the private state a fitted one holds (a stream's weight average: one float), and
#: paths.
TRUSTED = (
    "embetter.grab.ColumnGrabber",
    "embetter.grab.KeyGrabber",
    "embetter.text.SentenceEncoder",
    "embetter.text.MatryoshkaEncoder",
    "embetter.text.LiteTextEncoder",
    "embetter.text.TextEncoder",
    "embetter.finetune.FeedForwardTuner",
    "embetter.finetune.ContrastiveTuner",
    "embetter.finetune.ContrastiveLearner",
    "embetter.finetune.SbertLearner",
    "embetter.finetune.SbertTuner",
    "embetter.finetune._stream_average.StreamAverage",
    "embetter.model.DifferenceClassifier",
    "embetter.utils.CachedEncoder",
    "pathlib.PosixPath",  # a folder given as a Path (CachedEncoder's path): data
    "pathlib.WindowsPath",
    "torch.device",  # a head's `device` given as torch.device("cuda:0"): a name
    "embetter.external.OpenAIEncoder",
    "embetter.external.AzureOpenAIEncoder",
    "embetter.external.CohereEncoder",
    "embetter.external.OllamaEncoder",
)

class UntrustedTypesError(ValueError):
    """A skops file names types that are not trusted; `types` lists them."""

    def __init__(self, path, types):
        self.types = list(types)
        super().__init__(
            f"{path}: refusing to load types that are not trusted: {', '.join(self.types)}; "
            "load it only if you trust where the file comes from (`--trust` on the command "
            "line, trust=True in Python)"
        )


class UntrustedAddressError(UntrustedTypesError):
    """A skops file holding a hosted-API encoder pointed at an address the file names (the
    API key read from your environment at `transform` would be sent there), or a disk cache
    in a folder it names (the vectors found there would be served as your texts', and your
    texts' vectors written there). `addresses` lists them."""

    def __init__(self, path, addresses):
        self.types, self.addresses = [], list(addresses)
        caches = [a for a in self.addresses if a.startswith("CachedEncoder(")]
        why = []
        if len(caches) < len(self.addresses):
            why.append("your API key from the environment would go to a server it names")
        if caches:
            why.append("a cache folder it names would serve whatever vectors are stored "
                       "there and receive your texts' vectors")
        ValueError.__init__(
            self,
            f"{path}: refusing to load encoders sent to places the file names "
            f"({', '.join(self.addresses)}): {'; '.join(why)}; load it only if you trust "
            "where the file comes from (`--trust` on the command line, trust=True in Python)",
        )


#: The parameters of a hosted-API encoder that name the server its requests (and key) go to.
_ADDRESS_PARAMS = ("base_url", "azure_endpoint")


def _stored_addresses(obj) -> list[str]:
    """The cache folders of the disk caches and the server addresses of the hosted-API
    encoders anywhere in `obj`, as `Encoder(param=address)`: in parameters, in fitted
    attributes (a `DifferenceClassifier`'s `enc_`, a search's `best_estimator_`), in lists,
    tuples, sets and dicts; and a `key_env` of the file's own, which would send another
    environment variable as the key."""
    from embetter._cache import CachedEncoder
    from embetter.external._core import HostedEncoder

    found = []
    for item in _reachable(obj):
        folder = vars(item).get("path") if isinstance(item, CachedEncoder) else None
        if folder is not None:
            found.append(f"CachedEncoder(path={str(folder)!r})")
        elif isinstance(item, HostedEncoder):
            # the stored values only (AzureOpenAIEncoder's `base_url` property falls back to
            # the loader's own AZURE_OPENAI_ENDPOINT, which the file does not name)
            stored = vars(item)
            found += [f"{type(item).__name__}({p}={stored[p]!r})" for p in _ADDRESS_PARAMS
                      if stored.get(p) is not None]
            if "key_env" in stored:
                found.append(f"{type(item).__name__}(key_env={stored['key_env']!r})")
    return found


def _reachable(obj, within=None):
    """Every object reachable from `obj` through instance attributes, lists, tuples, sets and
    dicts (each once); with `within`, not inside objects of those types."""
    import types

    seen, stack = set(), [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, (type, types.ModuleType, str, bytes)):
            continue
        seen.add(id(item))
        yield item
        if within is not None and item is not obj and isinstance(item, within):
            continue
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(getattr(item, "__dict__", None), dict):
            stack.extend(vars(item).values())


def trusted_types() -> list[str]:
    """The type names (as skops writes them) of embetter's trusted classes."""
    names = []
    for public in TRUSTED:
        module, _, name = public.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        names.append(f"{cls.__module__}.{cls.__qualname__}")
    return names


def save_skops(obj, path) -> str:
    """Save a fitted estimator or pipeline to a skops file, atomically.

    Arguments:
        obj: the estimator or pipeline.
        path: the file to write (by convention ending in `.skops`).

    Usage:

    ```python
    from sklearn.pipeline import make_pipeline

    from embetter.grab import ColumnGrabber
    from embetter.text import SentenceEncoder
    from embetter.utils import load_skops, save_skops

    pipe = make_pipeline(ColumnGrabber("text"), SentenceEncoder())
    save_skops(pipe, "encoder.skops")
    assert load_skops("encoder.skops")[1].name == "all-MiniLM-L6-v2"
    ```
    """
    import skops.io as sio

    path = user_path(path)
    with atomic_path(path) as tmp:
        try:
            sio.dump(obj, tmp)
        except OSError:  # the disk, not the object: full, read-only, no permission
            raise
        except Exception as e:
            error = TypeError(
                f"cannot save a {type(obj).__name__} as skops ({type(e).__name__}: "
                f"{str(e)[:200]}); {_unstorable(obj)}")
            # (a RecursionError's traceback is thousands of lines that say no more than this)
            raise error from (None if isinstance(e, RecursionError) else e)
    return path


def _unstorable(obj) -> str:
    """What to do about an object skops could not store: an encoder built on a model object
    names it; anything else gets the general advice."""
    from embetter._st import is_sentence_model
    from embetter.text import SentenceEncoder, TextEncoder

    for item in _reachable(obj, within=(SentenceEncoder, TextEncoder)):
        # (the encoders' name, the SBERT tuner's sent_tfm, TextEncoder's teacher)
        for param in ("name", "sent_tfm", "teacher"):
            model = getattr(item, param, None) if hasattr(item, "get_params") else None
            # (a model2vec StaticModel given to TextEncoder)
            static = (isinstance(item, TextEncoder) and param == "name"
                      and hasattr(model, "save_pretrained"))
            if is_sentence_model(model) or static:
                save = "save_pretrained" if static else "save"
                return (f"the {type(item).__name__} was given a {type(model).__name__} object "
                        f"as {param}, which skops cannot store as data: save that model to a "
                        f"folder (model.{save}(folder)) and pass the folder as {param}, or "
                        "save with joblib")
    return "an object it holds is not one skops can store as data"


def load_skops(path, trust: bool = False):
    """Load a skops file, refusing types that neither skops nor embetter trusts.

    Arguments:
        path: a file written by `save_skops` (or `skops.io.dump`).
        trust: also accept the types that are not trusted, and hosted-API encoders with a
            server address of the file's. Only for files from a source you trust: an unknown
            type can run code when it is rebuilt.

    Raises `UntrustedTypesError` (a `ValueError`) naming the refused types, and its subclass
    `UntrustedAddressError` for a hosted-API encoder whose server address (`base_url`,
    `azure_endpoint`) the file sets: the key would go where the file says. Without an address
    such an encoder loads, and reads its key and address from the environment as usual.
    """
    import skops.io as sio

    check_bool(trust, "trust")  # (a string such as "no", or skops' list of names, is not True)
    path = user_path(path)
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except OSError:
        raise  # (a missing or unreadable file says so itself)
    except Exception as e:  # not a zip, no schema, a schema of another shape
        raise _not_skops(path, e) from e
    ours = set(trusted_types())
    unknown = [t for t in untrusted if t not in ours]
    if unknown and not trust:
        raise UntrustedTypesError(path, unknown)
    try:
        obj = sio.load(path, trusted=untrusted)
    except (zipfile.BadZipFile, KeyError) as e:  # a part the schema names is missing
        raise _not_skops(path, e) from e
    addresses = [] if trust else _stored_addresses(obj)
    if addresses:
        raise UntrustedAddressError(path, addresses)
    return obj


def _not_skops(path, error) -> ValueError:
    return ValueError(f"{str(path)!r} is not a complete file written by save_skops (or "
                      f"skops.io.dump): {type(error).__name__}: {error}")
