{#-
  on-run-start (dbt_project.yml): the build bookkeeping tables, created before any model runs:
  staging.model_progress (per-model progress, macros/model_progress.sql) and staging.test_window (what
  the tests have already checked, macros/test_window.sql and macros/get_where_subquery.sql).
-#}
{% macro create_build_state() %}
    create schema if not exists staging;
    create table if not exists staging.model_progress (
        model    text primary key,
        load_seq bigint not null,        -- the newest landing file the model has processed
        built_at timestamptz not null    -- start of the build that recorded it
    );
    create table if not exists staging.test_window (
        singleton      boolean primary key default true check (singleton),
        tested_through timestamptz not null  -- start of the last complete build whose every test passed
    );
{% endmacro %}
