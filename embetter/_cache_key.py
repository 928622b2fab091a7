"""The disk cache's key for an encoder: what it is by value (`_content_hash`, `_model_folders`)
and a cheap signature of its state that tells when to hash it again (`_state_signature`)."""

from __future__ import annotations

import hashlib
import os
import pickle
import types

import numpy as np
from sklearn.base import BaseEstimator

_PLAIN = (type(None), bool, int, float, complex, str, bytes, np.generic)


def _model_folders(encoder) -> str:
    """Content hashes of the local model folders the encoder's `name` parameters point to: a
    model saved again to the same folder (fine-tuned in place) gives other vectors, and its
    parameters alone would not tell."""
    if not hasattr(encoder, "get_params"):
        return ""
    from pathlib import Path

    from embetter.text._models import folder_fingerprint, resolve_model

    parts = []
    for key, value in sorted(encoder.get_params(deep=True).items()):
        if ((key == "name" or key.endswith("__name")) and isinstance(value, (str, os.PathLike))
                and os.fspath(value).strip()):
            folder = Path(resolve_model(value))
            if folder.is_dir():
                parts.append(folder_fingerprint(folder)[:16])
    return "".join(parts)


def _content_hash(encoder) -> str:
    """What the encoder is, by value: joblib's hash of its pickle (weights included), plus
    the code of the functions in it (a pickle names a function, so an edited `prep` would
    keep its key); an encoder pickle cannot write (a lambda inside) is hashed with its
    functions written as their code."""
    encoder = _without_volatile(encoder)
    digest = _digest(encoder, frozenset({id(encoder)}))
    code = _function_code(encoder)
    return digest + (hashlib.blake2b(code, digest_size=8).hexdigest() if code else "")


def _digest(obj, seen) -> str:
    """joblib's hash of `obj`; where pickle cannot write it (a lambda inside), the hash of
    its pickle with functions written as their code (`seen`: the ids being hashed further
    out, see `_value_bytes`)."""
    import joblib

    try:
        return joblib.hash(obj)
    except (pickle.PicklingError, AttributeError, TypeError):
        sink = hashlib.blake2b(digest_size=16)
        _CodePickler(_Writer(sink.update), seen).dump(obj)
        return sink.hexdigest()


#: attributes that hold a memory address (scikit-learn's text vectorizers keep
#: `id(stop_words)`): another in every process, so an encoder's identity leaves them out
_VOLATILE = frozenset({"_stop_words_id"})


def _without_volatile(obj, _seen=frozenset()):
    """`obj` as its identity is hashed: estimators at any depth (attributes, pipeline steps,
    the owners of bound methods) without their `_VOLATILE` attributes, their arrays as a
    pickle or skops file gives them back (a strided view contiguous, a RandomState as its
    state), as stand-ins made for the hash only; `obj` itself where nothing inside holds one
    (its hash, and so its cache rows, stay as they were)."""
    if isinstance(obj, _PLAIN) or id(obj) in _seen:
        return obj
    if isinstance(obj, np.ndarray):  # a strided view comes back from a pickle contiguous
        return obj if obj.flags.c_contiguous or obj.flags.f_contiguous else obj.copy()
    if isinstance(obj, np.random.RandomState):  # its draws (not its unused seed sequence,
        return ("RandomState", *obj.get_state(legacy=True))  # another after a skops load)
    seen = _seen | {id(obj)}
    if isinstance(obj, (list, tuple)):
        items = [_without_volatile(v, seen) for v in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return type(obj)(items) if isinstance(obj, list) or type(obj) is tuple else obj
    if isinstance(obj, dict):
        items = {k: _without_volatile(v, seen) for k, v in obj.items()}
        return obj if all(items[k] is v for k, v in obj.items()) else items
    if isinstance(obj, types.MethodType):  # FunctionTransformer(vectorizer.transform)
        owner = _without_volatile(obj.__self__, seen)
        return obj if owner is obj.__self__ else types.MethodType(obj.__func__, owner)
    if isinstance(obj, BaseEstimator):
        state = vars(obj)
        # (settings that change no vector, `_cache_ignores`, are kept as None: the stand-in
        # still answers get_params)
        ignored = set(getattr(obj, "_cache_ignores", ()))
        kept = {k: None if k in ignored else _without_volatile(v, seen)
                for k, v in state.items() if k not in _VOLATILE}
        context = _context(obj)
        if (context is None and len(kept) == len(state)
                and all(kept[k] is v for k, v in state.items())):
            return obj
        stand_in = object.__new__(type(obj))
        stand_in.__dict__.update(kept)
        if context is not None:
            stand_in.__dict__["_cache_context"] = context
        return stand_in
    return obj


def _context(obj):
    """What an estimator reads from around it that changes its vectors (a hosted encoder's
    address from the environment: `_cache_context()`), or None."""
    read = getattr(obj, "_cache_context", None)
    return read() if callable(read) else None


class _Writer:
    """A file-like `write` for a pickler (into a hash)."""

    def __init__(self, write):
        self.write = write


class _CodePickler(pickle.Pickler):
    """A pickler into a hash that writes each function as its code (no import path needed)."""

    def __init__(self, sink, seen=frozenset()):
        super().__init__(sink, protocol=4)
        self._seen = seen  # what is being hashed further out (see `_value_bytes`)

    def reducer_override(self, obj):
        if isinstance(obj, types.FunctionType):
            return (str, (_code_bytes(obj, self._seen).hex(),))
        return NotImplemented


def _code_bytes(fn, _seen=frozenset()) -> bytes:
    """A function's code, constants and defaults, the same in every process (a nested code
    object's repr holds its address; a set's order varies with the hash seed), and the values
    a closure captured (`scaled(2)` and `scaled(100)` share their code) and its keyword-only
    defaults, where it has them."""
    out = _code_object_bytes(fn.__code__) + _stable_repr(fn.__defaults__).encode()
    inner = _seen | {id(fn)}
    if fn.__kwdefaults__:
        out += b"\x01" + b"".join(_value_bytes(k) + _value_bytes(v, inner)
                                   for k, v in sorted(fn.__kwdefaults__.items()))
    for cell in fn.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:  # a cell not filled yet
            out += b"\x02"
            continue
        out += b"\x03" + _value_bytes(value, inner)
    return out


def _value_bytes(value, _seen=frozenset()) -> bytes:
    """A captured value by content: a function as its code, anything else by joblib's hash
    (without `_VOLATILE` attributes), or, where pickle cannot write it, the code pickler's;
    a value neither can write (a module, a lock) by its type only, as before captured values
    counted. `_seen`: the ids of the functions and values being hashed (a value that holds
    the encoder that holds it ends there)."""
    if id(value) in _seen:
        return b"<cycle>"
    if isinstance(value, types.FunctionType):
        return _code_bytes(value, _seen)
    try:
        return _digest(_without_volatile(value), _seen | {id(value)}).encode()
    except (pickle.PicklingError, AttributeError, TypeError, RecursionError):
        return repr(type(value)).encode()


def _code_object_bytes(code) -> bytes:
    parts = [code.co_code, repr(code.co_names).encode()]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            parts.append(_code_object_bytes(const))
        else:
            parts.append(_stable_repr(const).encode())
    return b"\x00".join(parts)


def _stable_repr(value) -> str:
    if isinstance(value, (set, frozenset)):
        return "{" + ",".join(sorted(_stable_repr(v) for v in value)) + "}"
    if isinstance(value, tuple):
        return "(" + ",".join(_stable_repr(v) for v in value) + ")"
    return repr(value)


def _function_code(obj) -> bytes:
    """The code, constants and defaults of every plain function among an estimator's
    (nested) parameters, as bytes."""
    if not hasattr(obj, "get_params"):
        return b""
    parts = []
    for _key, value in sorted(obj.get_params(deep=True).items()):
        values = value.values() if isinstance(value, dict) else [value]
        parts += [_code_bytes(fn) for fn in values if isinstance(fn, types.FunctionType)]
    return b"".join(parts)


def _state_signature(obj):
    """A cheap summary of an estimator's state that changes whenever `fit`, `partial_fit` or
    `set_params` changes the state, at any depth (a step of a pipeline in a union in a
    pipeline): plain values by value, other objects by identity, estimators (and small
    containers) recursively through their attributes, tuples by their items, and a torch
    model given as a parameter by a signature of its weights (a caller's model trains in
    place). Returns `(signature, held)`: `held` lists the objects compared by identity;
    keep it as long as the signature, so that none is freed and its id given to a new object
    (a refit's new array at the old one's address would look unchanged)."""
    held: list = []
    return _signature(obj, frozenset(), held), held


def _signature(obj, seen, held, given=False):
    """(`given`: `obj` is an estimator's parameter, which its caller may change in place)"""
    if isinstance(obj, _PLAIN):
        return obj
    held.append(obj)
    if id(obj) in seen:  # a cycle
        return ("id", id(obj))
    if isinstance(obj, np.ndarray):
        return ("array", id(obj), obj.shape, obj.dtype.str)
    seen = seen | {id(obj)}
    if isinstance(obj, (list, tuple)):
        if len(obj) > 64:  # e.g. every text seen: its identity and length stand for it
            return ("seq", id(obj), len(obj))
        items = tuple(_signature(v, seen, held) for v in obj)
        # a tuple by its items: one made again with the same ones (an encoder's record of
        # what it loaded) is the same state, not a new one at every call
        return ("tuple", items) if type(obj) is tuple else ("seq", id(obj), items)
    if isinstance(obj, dict):
        if len(obj) > 64:
            return ("map", id(obj), len(obj))
        return ("map", id(obj), tuple((k, _signature(v, seen, held))
                                      for k, v in obj.items() if isinstance(k, str)))
    if isinstance(obj, BaseEstimator):  # (a parameter: neither `_private` nor `fitted_`)
        return ("est", id(obj), _context(obj), tuple(
            (k, _signature(v, seen, held, not k.startswith("_") and not k.endswith("_")))
            for k, v in sorted(vars(obj).items())))
    if given and callable(getattr(obj, "named_parameters", None)):
        # a caller's torch model, which it may train or edit in place (a model loaded or
        # trained here changes with the state around it): a signature of its weights, a
        # few ms for MiniLM, so not for every model on every cached transform
        from embetter.text._model_copies import weights_signature

        return ("module", id(obj), weights_signature(obj))
    return ("id", id(obj))
