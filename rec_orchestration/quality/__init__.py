"""Data quality: the raw tables' expectation suites (``suites``) and their validation with Great Expectations
against PostgreSQL (``validation``). No Dagster import: the asset checks wrap it."""
