"""`--param key=value` for the benchmarks: values read as Python literals, else as strings."""

from __future__ import annotations

import ast


def parse_params(items):
    params = {}
    for item in items or []:
        key, _, value = item.partition("=")
        try:
            params[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key] = value
    return params
