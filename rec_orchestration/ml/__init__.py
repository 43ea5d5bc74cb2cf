"""Model, metric and split code with no Dagster import: unit-testable and reusable outside the pipeline."""
