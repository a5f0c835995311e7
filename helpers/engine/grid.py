"""A ``grid`` expanded into named configurations, each checked before anything trains.

A ``grid`` is either a mapping ``parameter -> list of values`` (their cartesian product) or a list of
mappings (explicit configurations); each configuration overrides the report's base parameters.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

# Parameters that shape the whole report rather than one training run, in every section: a grid may not vary them
# (a section adds its own, :attr:`helpers.engine.config.Section.fixed`, and the names of its grids).
FIXED = ("profile", "seed", "data_dir", "output_dir", "classes", "author_name", "author_id", "course", "device",
         "grid", "repeats", "evaluate_test", "val_fraction", "stratified", "train_per_class", "test_per_class",
         "checkpoint_every")


class GridError(ValueError):
    """A ``grid`` (or ``search``) that cannot be expanded; the message names the parameter."""


def value_label(value) -> str:
    """A short text for a parameter value in a configuration's name or a table cell."""
    if value is None:
        return "default"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "-".join(value_label(v) for v in value) if value else "none"
    if isinstance(value, Mapping):
        if "blocks" in value:  # an architecture spec: channels per block, then the dense head
            convs = "/".join("+".join(map(str, b.get("channels", []) if isinstance(b.get("channels"), list)
                                          else [b.get("channels")])) for b in value.get("blocks", []))
            return f"conv {convs}, fc {value_label(value.get('dense', []))}"
        return ", ".join(f"{k} {value_label(v)}" for k, v in value.items())
    return str(value)


def config_name(overrides: Mapping) -> str:
    """``adam + batch_norm`` for text values; ``lr 0.01`` style for numbers, lists and flags."""
    parts = [v if isinstance(v, str) else f"{k} {value_label(v)}" for k, v in overrides.items()]
    return " + ".join(parts) if parts else "base"


def expand_grid(grid, *, varying: Iterable[str], fixed: Iterable[str] = (), name: str = "grid") -> list[dict]:
    """The configurations of ``grid``: a list of dicts with a unique ``name`` and the overridden parameters.

    ``varying`` names the parameters a run may vary; ``fixed`` those the section fixes for the whole report beside
    :data:`FIXED`. Any other name is refused before anything trains, with the reason (fixed for the whole report,
    or unknown) and the allowed names.
    """
    varying = tuple(varying)
    fixed = tuple(dict.fromkeys((*FIXED, *fixed)))

    def check_key(key):
        if key in fixed:
            raise GridError(f"parameter {name}: {key!r} cannot vary between runs (it is fixed for the whole report: "
                            f"{', '.join(k for k in fixed if k not in ('grid', 'search'))}); set it as a parameter "
                            "of its own instead")
        if key not in varying:
            raise GridError(f"parameter {name}: {key!r} is not a parameter of a run; allowed: {', '.join(varying)}")

    if isinstance(grid, Mapping):
        if not grid:
            raise GridError(f"parameter {name}={grid!r}: empty; give at least one parameter and its values")
        for key, values in grid.items():
            check_key(key)
            if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, (list, tuple)) or not values:
                raise GridError(f"parameter {name}: {key!r} needs a non-empty list of values, got {values!r}")
        keys = list(grid)
        configs = [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
    elif isinstance(grid, (list, tuple)) and not isinstance(grid, (str, bytes)):
        if not grid:
            raise GridError(f"parameter {name}=[]: empty; give at least one configuration")
        configs = []
        for i, item in enumerate(grid):
            if not isinstance(item, Mapping):
                raise GridError(f"parameter {name}: item {i + 1} is {item!r}; each item must be a mapping "
                                "of parameter: value")
            for key in item:
                if key != "name":
                    check_key(key)
            configs.append(dict(item))
    else:
        raise GridError(f"parameter {name}={grid!r}: expected a mapping parameter -> list of values, "
                        "or a list of mappings (one per configuration)")
    out = []
    for c in configs:
        overrides = {k: v for k, v in c.items() if k != "name"}
        out.append({"name": str(c.get("name") or config_name(overrides)), **overrides})
    names = [c["name"] for c in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise GridError(f"parameter {name}: configuration(s) {', '.join(map(repr, dupes))} appear more than once; "
                        "each configuration must differ (or carry its own 'name')")
    return out
