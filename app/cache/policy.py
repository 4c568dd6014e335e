"""TTL policy per view family and the dependency graph between families (``config/cache.yaml``).

Every family (``app.cache.keys.FAMILIES``) has a ttl (fresh), a grace window after
it (stale-while-revalidate), a max_stale limit since generation (stale-if-error),
the lifetime of its Redis backup copy, the families it is computed from, and
whether the pipeline produces it or it is computed on demand.

The rule the loader enforces: **a derived family never outlives what it is
computed from.** Adaptive tuning may move a family's ttl anywhere in
``[min_ttl, max_ttl]``, so the rule has to hold for every pair of settings the
two families can reach; for each dependency edge it checks

* ``ttl ≤ dep.ttl`` and ``ttl + grace ≤ dep.ttl + grace`` (the configured values),
* ``max_ttl ≤ dep.min_ttl`` and ``max_ttl + grace ≤ dep.min_ttl + dep.grace``
  (the worst case under tuning; implies the two above),
* ``max_stale ≤ dep.max_stale``.

Checking direct edges suffices: ``≤`` is transitive along a path. Per family:
``ttl > 0``, ``grace ≥ 0``, ``min_ttl ≤ ttl ≤ max_ttl``, ``max_stale ≥ max_ttl +
grace`` and ``backup_ttl ≥ max_stale``. Unknown or missing families, dependencies
on unknown families and cycles are refused too. Every refusal is a
``ConfigError`` whose message names the families and values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.backends.keyspace import DEFAULT_NAMESPACE, Keyspace
from app.cache.keys import FAMILIES
from app.errors import ConfigError

POLICY_FILE = Path(__file__).resolve().parent.parent.parent / "config" / "cache.yaml"

Owner = Literal["pipeline", "on_demand"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FamilyConfig(_Strict):
    """One family as written in cache.yaml (seconds)."""

    ttl: int = Field(gt=0)
    grace: int = Field(ge=0)
    max_stale: int = Field(gt=0)
    backup_ttl: int = Field(gt=0)
    depends_on: tuple[str, ...] = ()
    compress: bool = False
    min_ttl: int | None = Field(default=None, gt=0)
    max_ttl: int | None = Field(default=None, gt=0)
    owner: Owner = "pipeline"


class PolicyConfig(_Strict):
    namespace: str = DEFAULT_NAMESPACE
    families: dict[str, FamilyConfig]


@dataclass(frozen=True, slots=True)
class FamilyPolicy:
    """A validated family; times in seconds, ``*_ms`` properties for CacheEntry."""

    name: str
    ttl: int
    grace: int
    max_stale: int
    backup_ttl: int
    min_ttl: int
    max_ttl: int
    depends_on: tuple[str, ...]
    compress: bool
    owner: Owner

    @property
    def ttl_ms(self) -> int:
        return self.ttl * 1000

    @property
    def grace_ms(self) -> int:
        return self.grace * 1000

    @property
    def max_stale_ms(self) -> int:
        return self.max_stale * 1000

    @property
    def adaptive(self) -> bool:
        return self.min_ttl < self.max_ttl

    def clamp_ttl(self, seconds: float) -> int:
        """A ttl proposed by adaptive tuning, held within [min_ttl, max_ttl]."""
        return max(self.min_ttl, min(self.max_ttl, round(seconds)))


class CachePolicy:
    """The validated policy: families in topological order (dependencies first)."""

    def __init__(self, namespace: str, families: Iterable[FamilyPolicy]) -> None:
        self.namespace = namespace
        self.keyspace = Keyspace(namespace)  # every name written in a shared tier
        self._families = {f.name: f for f in families}
        self._dependents: dict[str, list[str]] = {name: [] for name in self._families}
        for family in self._families.values():
            for dependency in family.depends_on:
                self._dependents[dependency].append(family.name)
        self.families: list[str] = _topological(self._families)

    def family(self, name: str) -> FamilyPolicy:
        try:
            return self._families[name]
        except KeyError:
            raise KeyError(f"unknown cache family {name!r}") from None

    def downstream(self, family: str) -> list[str]:
        """``family`` and everything computed from it, transitively, in topological order."""
        return self._closure(family, lambda name: self._dependents[name])

    def upstream(self, family: str) -> list[str]:
        """Everything ``family`` is computed from, transitively, then ``family`` itself."""
        return self._closure(family, lambda name: self.family(name).depends_on)

    def _closure(self, start: str, step: Callable[[str], Iterable[str]]) -> list[str]:
        self.family(start)
        seen, todo = {start}, [start]
        while todo:
            for neighbour in step(todo.pop()):
                if neighbour not in seen:
                    seen.add(neighbour)
                    todo.append(neighbour)
        return [name for name in self.families if name in seen]


def load_policy(path: Path | str = POLICY_FILE) -> CachePolicy:
    """Read and validate ``path``; ConfigError naming the problem if it cannot be used."""
    path = Path(path)
    where = f"invalid cache policy {path.name}"
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"{where}: cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML: {error}") from None
    try:
        config = PolicyConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        location = " → ".join(str(part) for part in first["loc"]) or "top level"
        raise ConfigError(f"{where}: {location}: {first['msg']}") from None
    try:
        return build_policy(config)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def build_policy(config: PolicyConfig) -> CachePolicy:
    """Validate a parsed policy; ValueError with the message (load_policy adds the file)."""
    Keyspace(config.namespace)  # refuses an unusable namespace
    unknown = [name for name in config.families if name not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown family {', '.join(unknown)}; valid: {', '.join(FAMILIES)}")
    missing = [name for name in FAMILIES if name not in config.families]
    if missing:
        raise ValueError(f"no policy for family {', '.join(missing)}")
    families = {name: _resolve(name, config.families[name]) for name in FAMILIES}
    for family in families.values():
        for dependency in family.depends_on:
            if dependency not in families:
                raise ValueError(
                    f"{family.name} depends on unknown family {dependency!r}; "
                    f"valid: {', '.join(FAMILIES)}"
                )
    order = _topological(families)
    for name in order:
        for dependency in families[name].depends_on:
            _check_edge(families[name], families[dependency])
    return CachePolicy(config.namespace, (families[name] for name in order))


def _resolve(name: str, config: FamilyConfig) -> FamilyPolicy:
    min_ttl = config.ttl if config.min_ttl is None else config.min_ttl
    max_ttl = config.ttl if config.max_ttl is None else config.max_ttl
    if not min_ttl <= config.ttl <= max_ttl:
        raise ValueError(
            f"{name} needs min_ttl ≤ ttl ≤ max_ttl, got {min_ttl} s, {config.ttl} s, {max_ttl} s"
        )
    if config.max_stale < max_ttl + config.grace:
        raise ValueError(
            f"{name} max_stale {config.max_stale} s is shorter than max_ttl + grace "
            f"{max_ttl} + {config.grace} = {max_ttl + config.grace} s"
        )
    if config.backup_ttl < config.max_stale:
        raise ValueError(
            f"{name} backup_ttl {config.backup_ttl} s is shorter than max_stale "
            f"{config.max_stale} s: the backup copy would vanish while still usable"
        )
    if len(set(config.depends_on)) != len(config.depends_on):
        raise ValueError(f"{name} lists a dependency twice: {', '.join(config.depends_on)}")
    return FamilyPolicy(
        name=name,
        ttl=config.ttl,
        grace=config.grace,
        max_stale=config.max_stale,
        backup_ttl=config.backup_ttl,
        min_ttl=min_ttl,
        max_ttl=max_ttl,
        depends_on=config.depends_on,
        compress=config.compress,
        owner=config.owner,
    )


def _check_edge(derived: FamilyPolicy, dep: FamilyPolicy) -> None:
    """Raise ValueError if ``derived`` can outlive ``dep`` (see the module docstring)."""
    checks = [  # (label, value, dependency label, dependency value, about tuning)
        ("ttl", derived.ttl, "ttl", dep.ttl, False),
        ("ttl+grace", derived.ttl + derived.grace, "ttl+grace", dep.ttl + dep.grace, False),
        ("max_stale", derived.max_stale, "max_stale", dep.max_stale, False),
        ("max_ttl", derived.max_ttl, "min_ttl", dep.min_ttl, True),
        (
            "max_ttl+grace",
            derived.max_ttl + derived.grace,
            "min_ttl+grace",
            dep.min_ttl + dep.grace,
            True,
        ),
    ]
    for label, value, dep_label, dep_value, tuning in checks:
        if value > dep_value:
            why = " (adaptive tuning may reach both settings)" if tuning else ""
            raise ValueError(
                f"{derived.name} {label} {value} s outlives {dep.name} {dep_label} "
                f"{dep_value} s it is computed from{why}"
            )


def _topological(families: dict[str, FamilyPolicy]) -> list[str]:
    """Dependencies before dependents (depth-first, in FAMILIES order); ValueError on a cycle."""
    order: list[str] = []
    state: dict[str, str] = {}  # "visiting" | "done"

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = [*path[path.index(name) :], name]
            raise ValueError(f"dependency cycle: {' → '.join(cycle)}")
        state[name] = "visiting"
        for dependency in families[name].depends_on:
            visit(dependency, [*path, name])
        state[name] = "done"
        order.append(name)

    for name in sorted(families, key=_rank):
        visit(name, [])
    return order


def _rank(name: str) -> int:
    return FAMILIES.index(name) if name in FAMILIES else len(FAMILIES)
