"""A caller's `SentenceTransformer`: whether it can run as it is, the copies and views that
keep the caller's object as it was (its weights, device and mode), and the keys and
signatures that tell when it changed between two encodes."""

from __future__ import annotations

import contextlib
import hashlib

from embetter.text._models import folder_key


def runs_as_is(model, device) -> bool:
    """Whether the caller's model can encode as it is: on the asked device and in eval mode.

    Moving it to another device or switching it from training to eval mode (which
    `SentenceTransformer.encode` does) would change the user's object: those cases run a copy
    (`eval_view`).
    """
    return not _moves(model, device) and not getattr(model, "training", False)


def _moves(model, device) -> bool:
    """Whether running the caller's model on `device` means moving it ("cpu:0" is the CPU)."""
    import torch

    from embetter._torch import device_name

    target = None if device is None else torch.device(device_name(device))
    current = getattr(model, "device", None)
    here = None if current is None else torch.device(current)
    return target is not None and (here is None or not _same_device(here, target))


def _same_device(a, b) -> bool:
    """Whether two torch devices are one ("cpu:0" is the CPU; "cuda" the current GPU)."""
    import torch

    def index(d):
        if d.index is not None:
            return d.index
        return torch.cuda.current_device() if d.type == "cuda" else 0

    return a.type == b.type and index(a) == index(b)


def model_state_key(name, device) -> tuple:
    """What an encoder's loaded model depends on, to know when to load or copy it again: a
    caller's model object and whether it can run as it is (switched to training mode or moved,
    it runs through a private copy instead); or a name, with the sizes and times of a local
    folder's files (a folder saved again holds another model)."""
    from embetter._st import is_sentence_model

    if is_sentence_model(name):  # (where it is now too: an engine is built for one device)
        return (id(name), device, runs_as_is(name, device), str(name.device),
                model_structure(name))
    resolved, state = folder_key(name)
    return (resolved, device, state)


def model_structure(model) -> tuple:
    """A caller's model's modules and its tokenizer's vocabulary (the tokenizer object and
    its size): a module appended or a token added between two encodes gives a new copy and
    engine (a copy or a fast engine holds the modules and the tokenizer as they were)."""
    tokenizer = getattr(model, "tokenizer", None)
    try:
        size = len(tokenizer)
    except TypeError:  # (a `tokenizers.Tokenizer`, a static model's, has no len)
        size = getattr(tokenizer, "get_vocab_size", lambda: None)()
    return tuple(id(module) for module in model), id(tokenizer), size


def weights_signature(model) -> str:
    """A cheap signature of a caller's model's current weights and buffers (a few ms for
    all-MiniLM-L6-v2): their names, shapes and dtypes, where each tensor lives and torch's
    count of the in-place changes to it (an optimizer step, an edit of one token's row), and
    every 1009th value. An exported copy (ONNX, OpenVINO) of the model is exported again,
    and a cache keyed on it read afresh, when it moves. An edit through `.data` (which torch
    does not count) of values between two sampled ones goes unseen. (A checksum of every
    byte cost 30-40 ms on every call.)"""
    import itertools

    import torch

    h = hashlib.blake2b(digest_size=16)
    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        # (torch's version counter is not public API: read where it is there; a tensor made
        # under inference_mode counts nothing, and changes only under it: its sample stands)
        strided = t.layout == torch.strided
        marks = None
        if strided:
            marks = (t.data_ptr(), None if t.is_inference() else getattr(t, "_version", 0))
        h.update(f"{name}{tuple(t.shape)}{t.dtype}{marks};".encode())
        if strided and t.numel():
            values = t.detach()
            if values.is_contiguous():
                sample = values.reshape(-1)[::1009]
            else:  # (by position: reshape would copy the whole tensor first; same values)
                picks = torch.arange(0, values.numel(), 1009, device=values.device)
                sample = values[torch.unravel_index(picks, values.shape)]
            sample = sample.cpu().clone(memory_format=torch.contiguous_format)  # (stride 1)
            h.update(sample.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


#: What a caller's model's `encode` reads besides its weights (a private copy follows them).
ENCODE_SETTINGS = ("max_seq_length", "prompts", "default_prompt_name", "truncate_dim")


def sync_weights(copy, model) -> None:
    """Give a private copy the caller's model's current weights (and buffers) and encode
    settings (`ENCODE_SETTINGS`), in place: a model that trains on, or is given another
    length or prompt, between two encodes is encoded as it is now."""
    import copy as copying

    import torch

    if not shares_weights(copy, model):  # (an eval view's are the caller's own tensors)
        with torch.no_grad():
            copy.load_state_dict(model.state_dict())
    for name in ENCODE_SETTINGS:
        value = getattr(model, name, None)
        if value != getattr(copy, name, None):
            # (a static model's max_seq_length cannot be set: it has none to follow)
            with contextlib.suppress(AttributeError):
                setattr(copy, name, copying.deepcopy(value))


def moved_copy(model, device):
    """A deep copy of the caller's `SentenceTransformer`, moved to `device` (`None`: where it
    is): the caller's object keeps its weights, device and mode."""
    import copy

    from embetter._torch import device_name

    model = copy.deepcopy(model)
    if device is not None:
        model.to(device_name(device))
    return model


def private_copy(model, device):
    """A copy of the caller's model, on `device` and in eval mode, for an encoder to run."""
    return moved_copy(model, device).eval()


def eval_view(model, device):
    """What a `SentenceEncoder` runs for a caller's model that cannot run as it is: where
    only its mode is in the way (a model in training mode, as sentence-transformers loads
    one, on the asked device), a copy of its modules in eval mode that shares its parameter
    and buffer tensors, so that it always encodes the caller's current weights without
    copying them; where the model must move to another device, a private copy. (Nothing
    may convert a view in place: `.float()` or `.to()` would convert the caller's tensors.)"""
    import copy
    import itertools

    if _moves(model, device):
        return private_copy(model, device)
    own = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo=own).eval()


def shares_weights(copy, model) -> bool:
    """Whether `copy` holds `model`'s own parameter and buffer tensors (an `eval_view` whose
    model has not been given new tensors since)."""
    import itertools

    def tensors(m):
        return itertools.chain(m.named_parameters(), m.named_buffers())

    pairs = itertools.zip_longest(tensors(copy), tensors(model), fillvalue=(None, None))
    return all(a[0] == b[0] and a[1] is b[1] for a, b in pairs)
