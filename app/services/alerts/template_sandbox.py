"""The Jinja2 sandbox alert templates render in, with bounds so that a template cannot
exhaust the process rendering it (the server on save, the collector at evaluation).

``ImmutableSandboxedEnvironment`` (no ``__class__``, ``mro``, ``globals``…; the values
cannot be changed), autoescape off (plain text), and: ``range`` at most ``MAX_RANGE``
items; a string or list repeated (``*``) to at most ``MAX_REPEAT`` items; every string,
list or number built while rendering (by ``~``, ``+``, ``*``, a filter or a method) at
most ``MAX_VALUE`` characters, items or digits (``'a' ~ 'a'`` doubled fifty times would
take gigabytes); a filter's number argument at most ``MAX_VALUE``; at most ``MAX_WORK``
units of work per render (``work_budget``: each operation, attribute or item lookup and
loop iteration costs 1 + the sizes of what it takes and gives — two nested loops over
long strings doing costly operations would run for minutes); no ``**`` or ``%``
formatting, no padding methods (``center``, ``ljust``, ``format``…) or filters.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from jinja2 import StrictUndefined, Template, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

MAX_RANGE = 100
MAX_REPEAT = 1_000
MAX_VALUE = 2_000  # characters, items or decimal digits of any value built while rendering
MAX_WORK = 200_000  # per render: each operation costs 1 + the sizes it takes and gives
_LOOP_ITEMS = "virtuoso_loop_items"  # the filter every loop's items pass through
_MAX_BITS = MAX_VALUE * 3  # a product's bits (~0.3 decimal digits each)
_UNSAFE_METHODS = frozenset(
    {"format", "format_map", "center", "ljust", "rjust", "zfill", "expandtabs"}
)
_UNSAFE_FILTERS = ("center", "indent", "wordwrap", "format", "xmlattr", "urlize", "pprint")

# The work spent by the render in progress (``_charge``), None outside one.
_work: ContextVar[list[int] | None] = ContextVar("template_work", default=None)


class _BoundedConcat(CodeGenerator):
    """Compiles ``a ~ b`` to ``environment.bounded_join`` (Jinja joins it unchecked)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_join((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox (immutable: no ``append``, ``clear``, ``update``… on the values) with
    the bounds of this module."""

    code_generator_class = _BoundedConcat
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _charge(left, right)
        if operator in ("**", "%") and (operator == "**" or isinstance(left, str)):
            raise SecurityError(f"the {operator} operator is not allowed in a template")
        if operator == "*" and _repeats_too_much(left, right):
            raise SecurityError(f"a repetition beyond {MAX_REPEAT} items")
        if operator == "*" and _bits(left) + _bits(right) > _MAX_BITS:
            raise SecurityError(f"a number beyond {MAX_VALUE} digits")
        return _bounded(super().call_binop(context, operator, left, right))

    def bounded_join(self, parts: tuple[Any, ...]) -> str:
        """``~``: the parts as text, joined, at most ``MAX_VALUE`` characters."""
        return _bounded("".join(str(part) for part in parts))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _charge(getattr(__obj, "__self__", None), *args, *kwargs.values())
        return _bounded(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _charge()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _charge()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> None:
        """No ``str.format`` (a width can be any size): ``is_safe_attribute`` refuses it."""
        return None

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _UNSAFE_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)


def _repeats_too_much(left: Any, right: Any) -> bool:
    for items, count in ((left, right), (right, left)):
        if isinstance(items, str | list | tuple) and isinstance(count, int):
            return len(items) * count > MAX_REPEAT
    return False


def _bits(value: Any) -> int:
    return value.bit_length() if isinstance(value, int) else 0


def _size(value: Any) -> int:
    sized = isinstance(value, str | bytes | list | tuple | dict | set | frozenset)
    return len(value) if sized else 1


def _charge(*values: Any) -> None:
    """Counts the work of one operation on ``values`` (1 + their sizes) against the
    render's ``MAX_WORK``: SecurityError beyond (loops repeating costly operations)."""
    spent = _work.get()
    if spent is not None:
        spent[0] += 1 + sum(_size(value) for value in values)
        if spent[0] > MAX_WORK:
            raise SecurityError(f"more than {MAX_WORK} units of work (loops doing too much)")


def _bounded(value: Any) -> Any:
    """``value`` (its size charged), or SecurityError when it is a string, collection
    or integer beyond ``MAX_VALUE`` characters, items or (about) digits."""
    if _size(value) > MAX_VALUE or _bits(value) > _MAX_BITS:
        raise SecurityError(f"a value beyond {MAX_VALUE} characters, items or digits")
    _charge(value)
    return value


def _bounded_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a filter) refusing integer arguments beyond ``MAX_VALUE`` (e.g.
    ``slice(99999999)`` makes that many lists) and results beyond the bounds."""

    first = 2 if hasattr(function, "jinja_pass_arg") else 1  # after the context, the value

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        numbers = [a for a in (*args[first:], *kwargs.values()) if isinstance(a, int)]
        if any(abs(n) > MAX_VALUE for n in numbers):
            raise SecurityError(f"a filter argument beyond {MAX_VALUE}")
        _charge(*args[first - 1 :], *kwargs.values())
        return _bounded(function(*args, **kwargs))

    return bounded


def _bounded_range(*args: int) -> range:
    items = range(*args)
    if len(items) > MAX_RANGE:
        raise SecurityError(f"range of more than {MAX_RANGE} items")
    return items


def _environment() -> _Sandbox:
    env = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.globals = {"range": _bounded_range}
    for name in _UNSAFE_FILTERS:
        env.filters.pop(name, None)
    env.filters = {name: _bounded_filter(f) for name, f in env.filters.items()}
    env.filters[_LOOP_ITEMS] = _charged_items
    return env


@contextlib.contextmanager
def work_budget() -> Iterator[None]:
    """While the block runs (one render), its work is counted against ``MAX_WORK``."""
    spent = _work.set([0])
    try:
        yield
    finally:
        _work.reset(spent)


def _charged_items(items: Any) -> Iterator[Any]:
    """A loop's items, each iteration charged (``_charge``)."""
    for item in items:
        _charge()
        yield item


ENV = _environment()


@functools.lru_cache(maxsize=256)
def compiled(source: str) -> Template:
    """``source`` compiled in ``ENV``, each loop's items passed through
    ``_charged_items``. Raises jinja2's TemplateError (syntax)."""
    tree = ENV.parse(source)
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, _LOOP_ITEMS, [], [], None, None, lineno=loop.lineno)
    tree.set_environment(ENV)
    return ENV.from_string(tree)
