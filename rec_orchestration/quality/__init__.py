"""Data-quality expectation suites for the warehouse tables."""
