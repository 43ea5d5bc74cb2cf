"""Benchmarks: each measures one stage against the peer a user would otherwise reach for, in the same
run on the same machine (a ratio measured side by side holds where an absolute time on a shared machine
does not), and prints a report whose last line holds its headline figures (``--json``: the figures as
JSON on stdout, the report on stderr). ``ingest`` (loader vs ``psql \\copy`` and ``DataFrame.to_sql``),
``warehouse`` (``dbt build``: full vs incremental after +1%), ``read_path`` (a user's top 10 through
``rec_reader`` and readers during a publication swap, vs a plain table swapped by RENAME),
``model_quality`` (every model on the MovieLens protocol, published figures quoted apart),
``similarity`` (item cosine top-n vs scikit-learn), ``gnn_speed`` (LightGCN epoch vs
``torch_geometric``) and ``gnn_device`` (LightGCN on CUDA vs CPU); ``common`` holds what they share.
Run them from the repository root as modules, e.g. ``.venv/bin/python -m bench.ingest --help``; the
database benches make a throw-away database (``rec_orchestration.db.scratch``) and drop it at the end.
Benchmarks are not tests: the test suite asserts no timings.
"""
