"""Clear errors for parameters that embetter 0.9.1 took and this version does not."""

from __future__ import annotations


class RemovedParams:
    """Mixin: a 0.9.1 parameter name in the constructor call raises a TypeError that says what
    replaces it, instead of Python's bare "unexpected keyword argument".

    The check lives in `__new__`, so `__init__` keeps scikit-learn's explicit signature
    (`get_params`, `clone`); pickling and `clone` never pass these names.
    """

    # parameter name -> what to use instead
    _removed_params: dict[str, str] = {}

    def __new__(cls, *args, **kwargs):
        for name in kwargs:
            hint = cls._removed_params.get(name)
            if hint is not None:
                raise TypeError(
                    f"{cls.__name__}() got {name}=, a parameter of embetter 0.9.1 that this "
                    f"version does not take: {hint}"
                )
        return super().__new__(cls)
