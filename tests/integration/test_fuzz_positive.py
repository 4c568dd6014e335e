"""The HTTP API fuzzed from its own ``/openapi.json`` with valid inputs:
every answer documented, no 5xx (``tests/support/fuzz.py`` says what is checked)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from schemathesis.generation.modes import GenerationMode

from tests.support.fuzz import fuzz_every_operation, served_schema


@pytest.fixture(scope="module")
def api_schema() -> Iterator[Any]:
    with served_schema() as schema:
        yield schema


def test_api_answers_as_documented(api_schema: Any, subtests: Any) -> None:
    fuzz_every_operation(api_schema, GenerationMode.POSITIVE, subtests)
