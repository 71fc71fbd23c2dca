"""Experiment configuration: dataclasses, presets and validation.

A *config* describes exactly one run (one seed). It is resolved from a benchmark, a preset and
overrides, validated before anything is written, and hashed to name the run's folder. Presets are
the three speeds of every experiment: ``smoke`` (seconds, CI), ``quick`` (CPU minutes, what the
book shows when no paper-scale runs exist) and ``paper`` (the paper's full protocol, GPU).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from lop_core import mechanism_config
from lop_core.errors import ConfigError
from lop_core.methods import METHODS, method_defaults
from lop_core.models.mlp import INITS
from lop_core.vision import config as vision_config

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu", "silu", "crelu")
OPTIMIZERS = ("sgdw", "adamw")
PRESETS = ("smoke", "quick", "paper")


@dataclass
class PermutedMNISTConfig:
    """One run of online permuted MNIST (reference_code.md §1).

    Attributes:
        preset: which preset the values came from (a label for captions; it is hashed too).
        seed: the run's seed; it decides the initial weights, the permutations, the example order
            and every random choice of the method.
        method: plasticity method (``lop_core.methods.METHODS``).
        method_args: the method's hyperparameters, paper names (filled with its defaults).
        width: hidden units per layer, ``h``.
        depth: number of hidden layers (3 in the paper).
        activation: hidden nonlinearity.
        layer_norm: layer norm after the activation of every hidden layer (post-activation LN).
        skip_connections: post-activation skip connections from the second hidden layer on
            (``lop_core.models.PopulationMLP``).
        optimizer: ``sgdw`` (SGD with decoupled multiplicative decay) or ``adamw``.
        step_size: learning rate alpha.
        momentum: SGDW momentum, or Adam's beta1.
        beta2: Adam's beta2.
        l2_factor: decoupled per-step shrink lambda: theta <- (1 - lambda) theta (§1.6).
        num_tasks: number of permutations.
        examples_per_task: training examples seen per task (60,000 = one epoch of MNIST).
        batch_size: examples per SGD step (30 in the paper).
        probe_size: examples of the new task on which the correlates are measured at task start.
        init: ``kaiming_normal`` (the SWR paper's code) or ``kaiming_uniform`` (Dohare's online
            permuted MNIST, linear gain at the output); ``lop_core.models.mlp.INITS``.
    """

    benchmark: str = "permuted_mnist"
    preset: str = "paper"
    seed: int = 0
    method: str = "base"
    method_args: dict[str, Any] = field(default_factory=dict)
    width: int = 100
    depth: int = 3
    activation: str = "relu"
    layer_norm: bool = False
    skip_connections: bool = False
    optimizer: str = "sgdw"
    step_size: float = 0.05
    momentum: float = 0.0
    beta2: float = 0.999
    l2_factor: float = 0.0
    num_tasks: int = 1000
    examples_per_task: int = 60000
    batch_size: int = 30
    probe_size: int = 1500
    init: str = "kaiming_normal"

    @property
    def steps_per_task(self) -> int:
        return self.examples_per_task // self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


BENCHMARKS = {
    "permuted_mnist": PermutedMNISTConfig,
    "incremental_cifar": vision_config.IncrementalCIFARConfig,
    "continual_mnist": mechanism_config.ContinualMNISTConfig,
    "warm_start": mechanism_config.WarmStartConfig,
}

# Values each preset changes from the dataclass defaults (which are the paper's protocol).
PRESET_VALUES: dict[str, dict[str, dict[str, Any]]] = {
    "permuted_mnist": {
        "smoke": {"num_tasks": 3, "examples_per_task": 1200, "probe_size": 300},
        "quick": {"num_tasks": 50},
        "paper": {},
    },
    "incremental_cifar": vision_config.PRESET_VALUES,
    "continual_mnist": mechanism_config.CONTINUAL_PRESETS,
    "warm_start": mechanism_config.WARM_START_PRESETS,
}

#: Per benchmark, method hyperparameters that differ from the methods' own (permuted-MNIST) defaults.
BENCHMARK_METHOD_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "incremental_cifar": vision_config.METHOD_DEFAULTS,
}


def benchmark_method_defaults(benchmark: str, method: str) -> dict[str, Any]:
    """A fresh copy of the default hyperparameters of ``method`` on ``benchmark``."""
    return method_defaults(method) | BENCHMARK_METHOD_DEFAULTS.get(benchmark, {}).get(method, {})


# Hyperparameters that may differ between the runs of one population (all others must agree).
PER_RUN_FIELDS = ("seed", "step_size", "l2_factor", "momentum", "beta2")
#: Benchmarks that train one model per process: every run of a sweep is its own population (so
#: ``--jobs`` spreads the seeds over devices); several runs given together still train in turn.
ONE_RUN_PER_POPULATION = ("incremental_cifar",)


#: Largest integer a parameter may hold (torch's int64), so that a huge value fails here, not in torch.
MAX_INT = 2**63 - 1
#: Largest hidden width: generous, but a typo is refused before it is allocated.
MAX_WIDTH = 1_000_000


def _coerce(name: str, value: Any, kind: type) -> Any:
    """Turn ``value`` (possibly a string from the command line) into ``kind`` or fail clearly."""
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        if kind is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        try:
            number = float(text) if kind is not str else None
        except ValueError:
            raise ConfigError(f"{name}: expected {kind.__name__}, got {value!r}") from None
        value = number
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if kind is int and (isinstance(value, bool) or not float(value).is_integer()):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if kind in (int, float) and not isinstance(value, (int, float)):
        raise ConfigError(f"{name}: expected {kind.__name__}, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    if kind in (int, float) and not math.isfinite(value):
        raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    if kind is int and abs(value) > MAX_INT:
        raise ConfigError(f"{name}: {value!r} is out of range (at most {MAX_INT:,})")
    return kind(value)


def _field_types(cls: type) -> dict[str, type]:
    types = {"int": int, "float": float, "bool": bool, "str": str}
    return {f.name: types[f.type] for f in dataclasses.fields(cls) if f.type in types}


def resolve(benchmark: str, preset: str = "quick", seed: int = 0, **overrides: Any):
    """Build and validate the config of one run.

    Args:
        benchmark: a key of ``BENCHMARKS``.
        preset: ``smoke``, ``quick`` or ``paper``.
        seed: the run's seed.
        **overrides: any config field, or any hyperparameter of the chosen method (paper names).

    Returns:
        The validated config.

    Raises:
        ConfigError: an unknown name, a wrong type or an out-of-range value, naming the valid
            choices. Nothing has been written when it is raised.
    """
    if benchmark not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {benchmark!r}; choose one of {sorted(BENCHMARKS)}")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
    cls = BENCHMARKS[benchmark]
    types = _field_types(cls)
    values: dict[str, Any] = dict(PRESET_VALUES[benchmark][preset], preset=preset)
    method = str(overrides.pop("method", "base"))
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    method_args = benchmark_method_defaults(benchmark, method)
    given = overrides.pop("method_args", None) or {}
    if not isinstance(given, dict):
        raise ConfigError(f"method_args must map hyperparameter names to values, got {given!r}")
    method_args.update(given)
    for name, value in overrides.items():
        if name in method_args:
            method_args[name] = value
        elif name in types and name not in ("benchmark", "preset"):
            values[name] = value
        else:
            valid = sorted(set(types) - {"benchmark", "preset", "seed", "method"} | set(method_args))
            raise ConfigError(f"unknown parameter {name!r} for {benchmark}/{method}; valid: {valid}")
    defaults = benchmark_method_defaults(benchmark, method)
    for name, value in method_args.items():
        if name not in defaults:
            raise ConfigError(f"unknown {method} parameter {name!r}; valid: {sorted(defaults)}")
        method_args[name] = _coerce(name, value, type(defaults[name]))
    values = {k: _coerce(k, v, types[k]) for k, v in values.items()}
    cfg = cls(seed=_coerce("seed", seed, int), method=method, method_args=method_args, **values)
    validate(cfg)
    return cfg


def default_config(benchmark: str, preset: str, method: str = "base"):
    """The config a preset gives a method before any override (not validated: ``l2`` needs an
    ``l2_factor`` its defaults do not set)."""
    fields = dict(PRESET_VALUES[benchmark][preset], preset=preset)
    return BENCHMARKS[benchmark](
        method=method, method_args=benchmark_method_defaults(benchmark, method), **fields
    )


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg) -> None:
    """Check ranges and choices of a resolved config (see ``resolve``), per benchmark."""
    if cfg.benchmark == "incremental_cifar":
        vision_config.validate(cfg)
        return
    if cfg.benchmark in mechanism_config.VALIDATORS:
        mechanism_config.VALIDATORS[cfg.benchmark](cfg)
        return
    _check(cfg.activation in ACTIVATIONS, f"activation {cfg.activation!r}; choose one of {list(ACTIVATIONS)}")
    _check(cfg.init in INITS, f"init {cfg.init!r}; choose one of {list(INITS)}")
    _check(cfg.optimizer in OPTIMIZERS, f"optimizer {cfg.optimizer!r}; choose one of {list(OPTIMIZERS)}")
    _check(
        1 <= cfg.width <= MAX_WIDTH,
        f"width must be a positive number of units, at most {MAX_WIDTH:,}, got {cfg.width}",
    )
    _check(
        cfg.activation != "crelu" or cfg.width % 2 == 0,
        f"crelu needs an even width (width/2 pre-activations per layer), got {cfg.width}",
    )
    unit_method = getattr(METHODS[cfg.method], "reinitializes_units", False)
    _check(
        not (unit_method and (cfg.activation == "crelu" or cfg.skip_connections)),
        f"{cfg.method} reinitializes whole units, which CReLU (two features per unit) and skip "
        "connections (a unit also reaches later layers directly) do not have; use swr, l2, "
        "shrink_perturb or base with them",
    )
    _check(1 <= cfg.depth <= 32, f"depth must be between 1 and 32 hidden layers, got {cfg.depth}")
    _check(cfg.seed >= 0, f"seed must be >= 0, got {cfg.seed}")
    _check(cfg.step_size > 0, f"step_size must be > 0, got {cfg.step_size}")
    _check(0 <= cfg.l2_factor < 1, f"l2_factor must be in [0, 1), got {cfg.l2_factor}")
    _check(0 <= cfg.momentum < 1, f"momentum must be in [0, 1), got {cfg.momentum}")
    _check(0 <= cfg.beta2 < 1, f"beta2 must be in [0, 1), got {cfg.beta2}")
    _check(cfg.num_tasks >= 1, f"num_tasks must be >= 1, got {cfg.num_tasks}")
    _check(1 <= cfg.batch_size <= 60000, f"batch_size must be in [1, 60000], got {cfg.batch_size}")
    _check(
        cfg.batch_size <= cfg.examples_per_task <= 60000,
        f"examples_per_task must be in [batch_size, 60000], got {cfg.examples_per_task}",
    )
    _check(2 <= cfg.probe_size <= 60000, f"probe_size must be in [2, 60000], got {cfg.probe_size}")
    METHODS[cfg.method].validate(cfg)


#: Fields added after runs were committed: left out of the hash while at these values, so the
#: folders of earlier runs keep their names.
HASH_NEUTRAL = {"skip_connections": False, "init": "kaiming_normal"}
#: The same for method hyperparameters added later, per method.
HASH_NEUTRAL_METHOD_ARGS = {"cbp": {"bias_correction": False}}


def config_hash(cfg) -> str:
    """First 8 hex digits of the SHA-1 of the config's canonical JSON (sorted keys; fields and
    method hyperparameters at their ``HASH_NEUTRAL`` / ``HASH_NEUTRAL_METHOD_ARGS`` value left out)."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in HASH_NEUTRAL or HASH_NEUTRAL[k] != v}
    neutral = HASH_NEUTRAL_METHOD_ARGS.get(getattr(cfg, "method", None), {})
    if neutral and "method_args" in d:
        d["method_args"] = {k: v for k, v in d["method_args"].items() if k not in neutral or neutral[k] != v}
    text = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def run_name(cfg) -> str:
    """Folder name of a run: a readable prefix (a config's own ``run_prefix`` when it has one), the
    seed and the config hash."""
    prefix = cfg.run_prefix if hasattr(cfg, "run_prefix") else f"{cfg.method}-w{cfg.width}"
    return f"{prefix}-s{cfg.seed}-{config_hash(cfg)}"


#: Benchmarks whose trainer mixes methods in one population (``train.Population``: one method
#: object per block of runs that share a ``method_key``).
MIXED_METHOD_BENCHMARKS = ("permuted_mnist",)


def method_key(cfg) -> tuple:
    """What the runs of one method object must share: the method and its text and bool choices."""
    choices = {k: v for k, v in cfg.method_args.items() if isinstance(v, (str, bool))}
    return cfg.method, tuple(sorted(choices.items()))


def population_key(cfg) -> str:
    """Configs with equal keys can train together in one population.

    Per-run fields (seed, step size, decay, momentum) may differ. On permuted MNIST the method and
    all its hyperparameters may differ too (one setting, one population); elsewhere only the
    numeric hyperparameters may.
    """
    per_run = () if cfg.benchmark in ONE_RUN_PER_POPULATION else PER_RUN_FIELDS
    shared = {k: v for k, v in cfg.to_dict().items() if k not in per_run}
    if cfg.benchmark in MIXED_METHOD_BENCHMARKS:
        shared.pop("method")
        shared.pop("method_args")
    else:  # numeric values may differ per run; string/bool choices (utility, pruning, ...) may not
        shared["method_args"] = {
            k: (v if isinstance(v, (str, bool)) else None) for k, v in sorted(shared["method_args"].items())
        }
    return json.dumps(shared, sort_keys=True)


def by_method(cfgs) -> list:
    """``cfgs`` stably reordered so that the runs of each ``method_key`` are next to each other
    (in the order the keys first appear), as a mixed population needs them."""
    first: dict[tuple, int] = {}
    for c in cfgs:
        first.setdefault(method_key(c), len(first))
    return sorted(cfgs, key=lambda c: first[method_key(c)])


def parse_seeds(text: str | int | list) -> list[int]:
    """Seeds from ``3``, ``"0-4"``, ``"0,2,5"``, ``"[0, 1]"`` or a list.

    Raises:
        ConfigError: the text is none of those forms, or a seed is negative.
    """
    if isinstance(text, int):
        seeds = [text]
    elif isinstance(text, (list, tuple)):
        seeds = [_coerce("seeds", s, int) for s in text]
    else:
        body = str(text).strip().strip("[]")
        seeds = []
        for part in filter(None, (p.strip() for p in body.split(","))):
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
                _check(lo <= hi, f"seed range {part!r} is empty")
                seeds.extend(range(lo, hi + 1))
            elif re.fullmatch(r"\d+", part):
                seeds.append(int(part))
            else:
                raise ConfigError(f"seeds: expected e.g. 0-4, 0,2,5 or [0, 1]; got {text!r}")
    _check(len(seeds) > 0, "seeds: at least one seed is needed")
    _check(len(set(seeds)) == len(seeds), f"seeds: {seeds} repeats a seed")
    _check(all(s >= 0 for s in seeds), f"seeds must be >= 0, got {seeds}")
    return seeds


def refuse_reserved(overrides: dict, reserved: dict[str, str], where: str = "") -> None:
    """Refuse overrides of the names that ``reserved`` maps to the option that sets them instead
    (``resolve`` takes the benchmark, preset and seed as its own arguments)."""
    for name, how in reserved.items():
        _check(name not in overrides, f"{where}{name} is not a parameter to set here; use {how}")


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["width=10", "step_size=0.1"]`` -> ``{"width": "10", "step_size": "0.1"}``."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        _check(bool(sep) and bool(name.strip()), f"--set expects name=value, got {item!r}")
        out[name.strip()] = value.strip()
    return out
