{#-
  on-run-end (dbt_project.yml): a `dbt build` of the whole project (no selection, or Dagster's
  `fqn:*`, and no --exclude) in which every model ran and every test passed (every result 'success'
  or 'pass'), with at least one test, moves the test window (staging.test_window, created by
  create_build_state in macros/build_state.sql) up to this build's start. Tests whose `where` is
  __untested__ then check only rows written after it (macros/get_where_subquery.sql). Anything else
  leaves the window where it is (the hook runs `select 1`).
-#}
{% macro advance_test_window(results) %}
    {%- if execute and flags.WHICH == 'build' -%}
        {%- set selected = invocation_args_dict.get('select') or [] -%}
        {%- set whole = (selected | list) in [[], ['fqn:*']] and not invocation_args_dict.get('exclude') -%}
        {%- set state = namespace(clean=true, tests=0) -%}
        {%- for result in results -%}
            {%- if result.status not in ['success', 'pass'] -%}{%- set state.clean = false -%}{%- endif -%}
            {%- if result.node.resource_type == 'test' -%}{%- set state.tests = state.tests + 1 -%}{%- endif -%}
        {%- endfor -%}
        {%- if whole and state.clean and state.tests > 0 -%}
            insert into staging.test_window (singleton, tested_through)
            values (true, '{{ run_started_at }}'::timestamptz)
            on conflict (singleton) do update set tested_through = excluded.tested_through
        {%- else -%}
            select 1
        {%- endif -%}
    {%- else -%}
        select 1
    {%- endif -%}
{% endmacro %}

