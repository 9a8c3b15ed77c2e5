"""Magnitude-only modules (the paper's ``Wdecompose_target_modules``, section 5.6): only ``m`` trains there.

    W' = m * W0 / ||W0||_row

which is DoRA with a zero direction update. A :class:`~dora_plugins.config.DoraConfig` therefore targets them
like its DoRA modules, at rank 1 (through ``rank_pattern``) with zero factors: the saved adapter is a plain
PEFT DoRA adapter, and stock PEFT, which reads ``B = 0``, computes the same function from it. Our layer
never reads those factors (:mod:`dora_plugins.peft_layer`).

Module names follow PEFT's ``target_modules``: a list of names matches a module whose name is one of them or
ends in ``.`` + one of them; a string is a regular expression that must match the whole name.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from .errors import ConfigError

Modules = list[str] | str
INITS = (True, False, "gaussian")  # inits of the factors alone: they leave W0 as it is and work at rank 1


def check_modules(value) -> Modules:
    """``value`` as a list of module names or a regex string; a ``ConfigError`` for anything else."""
    if isinstance(value, str):
        if not value:
            raise ConfigError("magnitude_only_modules='' matches no module; leave it unset (None) for none.")
        try:
            re.compile(value)
        except re.error as exc:
            raise ConfigError(f"magnitude_only_modules={value!r} is not a valid regular expression ({exc}).") from None
        return value
    if isinstance(value, Collection) and value and all(isinstance(name, str) and name for name in value):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    raise ConfigError(
        f"magnitude_only_modules must be a list of module names (e.g. ['o_proj', 'gate_proj']) or a regex string, "
        f"got {value!r}."
    )


def check_init(init_lora_weights) -> None:
    """PEFT initialises every targeted module the same way: refuse the inits that break a magnitude-only one."""
    if init_lora_weights not in INITS:
        raise ConfigError(
            f"init_lora_weights={init_lora_weights!r} cannot be used with magnitude_only_modules: PEFT applies it to "
            "the magnitude-only modules too, where PiSSA, OLoRA, CorDA, LoftQ and LoRA-GA would change W0, "
            "'orthogonal' needs an even rank (they have rank 1), and data-driven inits set factors that are fixed "
            f"zeros there. Use one of {', '.join(map(repr, INITS))}."
        )


def matches(modules: Modules, name: str) -> bool:
    """Whether the module called ``name`` is one of ``modules``, as PEFT matches ``target_modules``."""
    if isinstance(modules, str):
        return re.fullmatch(modules, name) is not None
    return any(name == m or name.endswith("." + m) for m in modules)


def rank_keys(modules: Modules) -> list[str]:
    """``rank_pattern`` keys that PEFT (``(.*\\.)?(KEY)$``) matches to exactly these modules and no others."""
    if isinstance(modules, str):
        return [f"^(?:{modules})"]  # '^' fails after the optional prefix: the whole name must match
    return [re.escape(m) for m in modules]


def expand(targets, rank_pattern: dict, modules: Modules) -> tuple[Modules, dict]:
    """``target_modules`` and ``rank_pattern`` that also target ``modules``, at rank 1.

    ``targets`` are the DoRA modules. A config built again from its own fields (a saved config, or
    ``dataclasses.replace``) already holds the magnitude-only modules, with their rank-1 keys: they are taken out
    first, so expanding twice gives the same config.
    """
    keys = rank_keys(modules)
    if all(rank_pattern.get(key) == 1 for key in keys):
        targets = dora_modules(targets, modules)
    _check_disjoint(targets, modules)
    ranks = {key: 1 for key in keys} | {key: rank for key, rank in rank_pattern.items() if key not in keys}
    return _union(targets, modules), ranks  # our keys first: PEFT takes the first key that matches


def check_module(targets: Modules, modules: Modules, name: str) -> None:
    """Raise a ``ConfigError`` when the module ``name`` is both a DoRA and a magnitude-only module.

    Lists are checked by :func:`expand`; where a regex is involved only the model's module names can tell.
    """
    if matches(targets, name) and matches(modules, name):
        raise ConfigError(
            f"Module '{name}' matches both target_modules={targets!r} (DoRA) and magnitude_only_modules="
            f"{modules!r}. A module is one or the other: change the patterns so that they do not overlap."
        )


def _check_disjoint(targets, modules: Modules) -> None:
    if targets is None or targets == "all-linear":
        raise ConfigError(
            f"magnitude_only_modules needs the DoRA modules listed explicitly, got target_modules={targets!r}. "
            "List them, e.g. target_modules=['q_proj', 'k_proj', 'v_proj'] (or [] for magnitude-only everywhere)."
        )
    if isinstance(targets, str) or isinstance(modules, str):
        return  # regexes: checked module by module when the adapter is created (check_module)
    both = sorted({t for t in targets for m in modules if t == m or t.endswith("." + m) or m.endswith("." + t)})
    if both:
        raise ConfigError(
            f"{both} {'is' if len(both) == 1 else 'are'} in both target_modules (DoRA) and magnitude_only_modules. "
            f"A module is one or the other: remove {both} from target_modules (now {sorted(targets)})."
        )


def _union(targets, modules: Modules) -> Modules:
    if not isinstance(targets, str) and not isinstance(modules, str):
        return [*targets, *(m for m in modules if m not in targets)]
    if not targets:
        return modules
    return f"(?:{_as_regex(targets)})|(?:{_as_regex(modules)})"


def dora_modules(targets, modules: Modules):
    """The DoRA modules of an expanded ``target_modules``: ``targets`` without what :func:`expand` added to it
    (unchanged when it does not hold them)."""
    if isinstance(targets, str):
        if targets == modules:
            return []
        suffix = f")|(?:{_as_regex(modules)})"
        return targets[3 : -len(suffix)] if targets.startswith("(?:") and targets.endswith(suffix) else targets
    if isinstance(modules, str) or not set(modules) <= set(targets):
        return targets
    return [t for t in targets if t not in modules]


def _as_regex(modules: Modules) -> str:
    if isinstance(modules, str):
        return modules
    return r"(?:.*\.)?(?:" + "|".join(re.escape(m) for m in modules) + ")"
