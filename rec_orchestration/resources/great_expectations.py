"""Great Expectations as a Dagster resource, and a validation's outcome as asset-check metadata.

The validation itself (GX 1.x driven directly, since dagster-ge does not support it) is
:mod:`rec_orchestration.quality.validation`, which imports no Dagster.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from rec_orchestration.quality.validation import ExpectationOutcome, TableValidation, validate_table

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation


def _cell(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _sample_cell(outcome: ExpectationOutcome) -> str:
    if outcome.error:
        return "error: " + outcome.error
    if not outcome.sample:
        return ""
    return "; ".join(
        ", ".join(f"{key}={item[key]}" for key in item) if isinstance(item, dict) else str(item)
        for item in outcome.sample
    )


def to_check_metadata(validation: TableValidation) -> dict[str, dg.MetadataValue]:
    """Dagster asset-check metadata: a markdown summary table, counts and the full results as JSON."""
    lines = [
        "| expectation | column | success | observed value | unexpected count | sample of offending rows |",
        "|---|---|---|---|---|---|",
    ]
    for outcome in validation.results:
        lines.append(
            "| " + " | ".join([
                _cell(outcome.expectation),
                _cell(outcome.column),
                "✅" if outcome.success else "❌",
                _cell(outcome.observed_value),
                _cell(outcome.unexpected_count),
                _cell(_sample_cell(outcome), limit=300),
            ]) + " |"
        )
    return {
        "suite": dg.MetadataValue.text(validation.suite_name),
        "table": dg.MetadataValue.text(validation.table),
        "row_count": dg.MetadataValue.int(validation.row_count),
        "expectations_total": dg.MetadataValue.int(len(validation.results)),
        "expectations_failed": dg.MetadataValue.int(len(validation.failed)),
        "summary": dg.MetadataValue.md("\n".join(lines)),
        "results": dg.MetadataValue.json(validation.to_dict()),
    }


class GreatExpectationsResource(dg.ConfigurableResource):
    """Validates warehouse tables with Great Expectations (see :func:`validate_table`)."""

    sample_size: int = Field(default=5, description="Most offending rows reported per expectation.")

    def validate(
        self,
        warehouse_url_sqlalchemy: str,
        schema: str,
        table: str,
        expectations: Sequence["Expectation"],
        suite_name: str,
    ) -> TableValidation:
        return validate_table(
            warehouse_url_sqlalchemy, schema, table, expectations, suite_name, sample_size=self.sample_size
        )
