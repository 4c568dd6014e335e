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

Bounds (so a template cannot exhaust the collector or the server): loops nested at
most ``MAX_LOOP_DEPTH`` deep and not recursive, no macros, includes, imports,
inheritance or block ``set``/``filter`` (their bodies are built unchecked), and the
sandbox's own (``app.services.alerts.template_sandbox``: sizes, work, operators).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import TemplateError, nodes
from jinja2.sandbox import SecurityError

from app.services.alerts.compound import sample_values
from app.services.alerts.conditions import condition_of
from app.services.alerts.messages import LAST, threshold_alert
from app.services.alerts.template_sandbox import ENV, compiled, work_budget

MAX_TEMPLATE = 1_000
MAX_OUTPUT = 2_000
MAX_LOOP_DEPTH = 2
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


def check_template(source: str, sample: Mapping[str, Any]) -> None:
    """Raises TemplateRefused (a ValueError) when ``source`` is longer than
    ``MAX_TEMPLATE``, does not parse, uses a refused construct or fails to render with
    ``sample`` (every variable an alert of the rule has: an unknown one is refused, as
    is a sandbox violation)."""
    if len(source) > MAX_TEMPLATE:
        raise TemplateRefused(f"template: at most {MAX_TEMPLATE} characters ({len(source)})")
    try:
        _check_structure(ENV.parse(source))
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
    out: list[str] = []
    size = 0
    try:
        with work_budget():
            for chunk in compiled(source).generate(**context):
                out.append(chunk)
                size += len(chunk)
                if size > MAX_OUTPUT:
                    return "".join(out)[: MAX_OUTPUT - 1] + "…"
        return "".join(out)
    except Exception as error:  # a filter fed the wrong type raises anything (AttributeError…)
        raise TemplateFailed(_reason(error)) from None


def _check_structure(tree: nodes.Template) -> None:
    """TemplateFailed for a refused construct or loops nested too deep."""
    for node in tree.find_all(_REFUSED_NODES):
        raise TemplateFailed(f"{type(node).__name__.lower()} is not allowed in a template")
    if _loop_depth(tree) > MAX_LOOP_DEPTH:
        raise TemplateFailed(f"loops nested more than {MAX_LOOP_DEPTH} deep")
    if any(loop.recursive for loop in tree.find_all(nodes.For)):
        raise TemplateFailed("recursive loops are not allowed in a template")


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
