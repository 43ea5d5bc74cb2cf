"""The plain database layer: which server (``servers``), its address (``address``), the embedded server
(``embedded``), a connection pool and query helpers (``warehouse``), SQL helpers (``tables``), roles
(``roles``) and throw-away databases (``scratch``). Nothing here imports Dagster: the CLI, the
benchmarks, ``sources``, ``publishing`` and the Dagster resources all build on it."""
