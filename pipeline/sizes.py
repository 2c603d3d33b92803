"""Byte sizes and step sizes as users write them (``'64 MB'``, ``'1.5 GiB'``, ``5000``), parsed once at
the boundary into canonical values. A leaf (imports only :mod:`pipeline.errors`).

Units are SI (``kB``/``MB``/``GB``/``TB`` = 10³ⁿ) or binary (``KiB``/``MiB``/``GiB``/``TiB`` = 2¹⁰ⁿ),
case-insensitive; a bare number is bytes.
"""

from __future__ import annotations

import re

from .errors import ConfigError

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20,
          "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*")
#: Sizes and counts beyond this are refused as typos (and would overflow the int64 arithmetic of sizing).
MAX_SIZE = 2**53


def parse_step_size(text: str | int) -> int | str:
    """An event count (int) or a memory size normalised to uproot's spelling (``'100 MB'`` -> ``'100000000 B'``).

    Raises ConfigError for anything else, a count below 1, a fractional count or a size above MAX_SIZE."""
    if isinstance(text, int):
        value: int | str = text
    else:
        m = _SIZE.fullmatch(str(text).lower())
        if not m:
            raise ConfigError(f"--step-size {text!r}: give an event count (e.g. 5000) or a size (e.g. '100 MB')")
        if m.group(2) is None:
            if "." in m.group(1):
                raise ConfigError(f"--step-size {text!r}: an event count must be a whole number")
            value = int(m.group(1))
        else:
            value = f"{int(float(m.group(1)) * _UNITS[m.group(2)])} B"
    if isinstance(value, int) and value < 1:
        raise ConfigError("--step-size must be at least 1 event")
    if (value if isinstance(value, int) else int(value[:-2])) > MAX_SIZE:
        raise ConfigError(f"--step-size {text!r} is too large")
    return value


def parse_size(text: str | int, option: str) -> int:
    """A byte size such as ``'64 MB'``, ``'1.5 GiB'`` or a plain number of bytes, as an int.

    ``option`` names the setting in the error message (ConfigError: unparsable, < 1 or > MAX_SIZE)."""
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE.fullmatch(str(text).lower())
        if not m:
            raise ConfigError(f"{option} {text!r}: give a size such as '64 MB' or '1 GiB'")
        value = int(float(m.group(1)) * _UNITS[m.group(2) or ""])
    if value < 1:
        raise ConfigError(f"{option} must be a positive size")
    if value > MAX_SIZE:
        raise ConfigError(f"{option} {text!r} is too large")
    return value


def parse_optional_size(text: str | int | None, option: str) -> int | None:
    """:func:`parse_size`, with ``None`` or ``'none'`` (any case) meaning no cap."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "none"):
        return None
    return parse_size(text, option)


def step_bytes(step: int | str | None) -> int | None:
    """The byte count of a canonical step size (``'100000000 B'``); ints (event counts) and None pass through."""
    if step is None or isinstance(step, int):
        return step
    return parse_size(step, "--step-size")
