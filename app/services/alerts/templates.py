"""Alert message templates: Jinja2 text rendered in a sandbox into an alert's message.

A rule's ``template`` (at most ``MAX_TEMPLATE`` characters) is checked when the rule is
saved (``check_template``): it must parse, use only the variables an alert of that rule
has (it is rendered against a sample of every variable, ``StrictUndefined``: an
unknown name or key is refused), stay inside the sandbox
(``ImmutableSandboxedEnvironment``: no ``__class__``, ``mro``, ``globals``…, and the
values cannot be changed) and inside the bounds below. At evaluation ``render`` gives
the message (at most ``MAX_OUTPUT`` characters, cut with "…") or
raises ``TemplateFailed`` — the engine then falls back to the default message.

Variables: ``symbol`` (e.g. "BTCUSDT"), ``level``, ``title``, ``kind`` (the rule kind),
``price`` (last price), ``message`` (the default message) and ``values`` (the alert's
``values``, e.g. ``values.price``, ``values.threshold``, for a ``conditions`` rule
``values.conditions[0].value`` or by condition name ``values.confluence_5m``).

Bounds (so a template cannot exhaust the collector): autoescape off (plain text),
``range`` at most ``MAX_RANGE`` items, a string or list repeated (``*``) to at most
``MAX_REPEAT`` items, every string, list or number built while rendering (by ``~``,
``+``, ``*``, a filter or a method) at most ``MAX_VALUE`` characters, items or digits
(``'a' ~ 'a'`` doubled fifty times would take gigabytes), no ``**`` or ``%``
formatting, no padding methods (``center``, ``ljust``, ``format``…), loops nested at
most ``MAX_LOOP_DEPTH`` deep, no macros, includes, imports, inheritance or block
``set``/``filter`` (their bodies are built unchecked).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from app.services.alerts.compound import sample_values
from app.services.alerts.conditions import condition_of
from app.services.alerts.messages import LAST, threshold_alert

MAX_TEMPLATE = 1_000
MAX_OUTPUT = 2_000
MAX_RANGE = 100
MAX_REPEAT = 1_000
MAX_LOOP_DEPTH = 2
MAX_VALUE = 2_000  # characters, items or decimal digits of any value built while rendering
_MAX_BITS = MAX_VALUE * 3  # a product's bits (~0.3 decimal digits each)
_UNSAFE_METHODS = frozenset(
    {"format", "format_map", "center", "ljust", "rjust", "zfill", "expandtabs"}
)
_UNSAFE_FILTERS = ("center", "indent", "wordwrap", "format", "xmlattr", "urlize", "pprint")
_REFUSED_NODES = (
    nodes.Macro,
    nodes.CallBlock,
    nodes.Extends,
    nodes.Include,
    nodes.Import,
    nodes.FromImport,
    nodes.AssignBlock,
    nodes.FilterBlock,
)


class TemplateRefused(ValueError):
    """A template that cannot be saved; the message says why."""


class TemplateFailed(Exception):
    """A stored template that did not render (the message says why)."""


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
        return _bounded(super().call(__context, __obj, *args, **kwargs))

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


def _bounded(value: Any) -> Any:
    """``value``, or SecurityError when it is a string, collection or integer beyond
    ``MAX_VALUE`` characters, items or (about) digits."""
    sized = isinstance(value, str | bytes | list | tuple | dict | set | frozenset)
    if (sized and len(value) > MAX_VALUE) or _bits(value) > _MAX_BITS:
        raise SecurityError(f"a value beyond {MAX_VALUE} characters, items or digits")
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
    return env


_ENV = _environment()


def check_template(source: str, sample: Mapping[str, Any]) -> None:
    """Raises TemplateRefused (a ValueError) when ``source`` is longer than
    ``MAX_TEMPLATE``, does not parse, uses a refused construct or fails to render with
    ``sample`` (every variable an alert of the rule has: an unknown one is refused, as
    is a sandbox violation)."""
    if len(source) > MAX_TEMPLATE:
        raise TemplateRefused(f"template: at most {MAX_TEMPLATE} characters ({len(source)})")
    try:
        _check_structure(_ENV.parse(source))
        render(source, sample)
    except TemplateFailed as error:
        raise TemplateRefused(f"template: {error}") from None
    except TemplateError as error:
        raise TemplateRefused(f"template: {_reason(error)}") from None


def render(source: str, context: Mapping[str, Any]) -> str:
    """``source`` rendered with ``context``, at most ``MAX_OUTPUT`` characters (longer
    output is cut and ends with "…"). Raises TemplateFailed with the reason (a blank
    message included: an alert must say something)."""
    text = _generate(source, context)
    if not text.strip():
        raise TemplateFailed("the template gave no text (leave it out for the default message)")
    return text


def _generate(source: str, context: Mapping[str, Any]) -> str:
    try:
        template = _compiled(source)
        out: list[str] = []
        size = 0
        for chunk in template.generate(**context):
            out.append(chunk)
            size += len(chunk)
            if size > MAX_OUTPUT:
                return "".join(out)[: MAX_OUTPUT - 1] + "…"
        return "".join(out)
    except Exception as error:  # a filter fed the wrong type raises anything (AttributeError…)
        raise TemplateFailed(_reason(error)) from None


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> Template:
    return _ENV.from_string(source)


def _check_structure(tree: nodes.Template) -> None:
    """TemplateFailed for a refused construct or loops nested too deep."""
    for node in tree.find_all(_REFUSED_NODES):
        raise TemplateFailed(f"{type(node).__name__.lower()} is not allowed in a template")
    if _loop_depth(tree) > MAX_LOOP_DEPTH:
        raise TemplateFailed(f"loops nested more than {MAX_LOOP_DEPTH} deep")


def _loop_depth(node: nodes.Node) -> int:
    inner = max((_loop_depth(child) for child in node.iter_child_nodes()), default=0)
    return inner + 1 if isinstance(node, nodes.For) else inner


def _reason(error: BaseException) -> str:
    kind = "sandbox violation" if isinstance(error, SecurityError) else type(error).__name__
    line = getattr(error, "lineno", None)
    where = f" (line {line})" if line else ""
    return f"{kind}: {str(error)[:200]}{where}"


def template_context(
    rule: Any, symbol: str, title: str, price: float, message: str, values: Mapping[str, Any]
) -> dict[str, Any]:
    """The variables a template of ``rule`` (an ``AlertRule``) sees for one alert."""
    return {
        "symbol": symbol,
        "level": rule.level,
        "title": title,
        "kind": rule.kind,
        "price": price,
        "message": message,
        "values": dict(values),
    }


def template_sample(rule: Any) -> dict[str, Any]:
    """``template_context`` with a sample of every variable an alert of ``rule`` (a
    ``RuleInput``) carries: its kind's ``values`` keys (``messages.threshold_alert``,
    ``compound.sample_values``, the beta band's ``band``/``previous_band``)."""
    symbol = rule.symbol or "BTCUSDT"
    title = rule.title or f"{symbol} {rule.kind.replace('_', ' ')}"
    return template_context(rule, symbol, title, 1.0, "the default message", _values(rule))


def _values(rule: Any) -> dict[str, Any]:
    if rule.kind == "conditions":
        return sample_values(rule.conditions or [], rule.join or "all")
    if rule.kind == "beta_band_change":
        return {"band": "high", "previous_band": "moderate"}
    condition = condition_of(
        rule.kind,
        rule.threshold if rule.threshold is not None else 1.0,
        rule.hysteresis,
        long_threshold=70.0,
        short_threshold=35.0,
        component=rule.component,
    )
    assert condition is not None
    return threshold_alert(condition, "BTCUSDT", 1.0, condition.threshold, LAST)[0]
