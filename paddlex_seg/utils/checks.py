"""Argument checks shared by the model classes and the workflows over them (compress).

Each raises ValueError naming the argument and the value received.
"""
import numpy as np

__all__ = ["check_int", "check_bool", "check_choice"]


def check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; allowed values: "
                         f"{', '.join(map(repr, allowed))}")
