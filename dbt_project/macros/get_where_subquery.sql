{#-
  A data test's `where` config may say __untested__: the test then checks only the rows written since
  the last complete build whose every test passed (staging.test_window, advanced by
  advance_test_window at the end of such a build). Used on the large incremental models, so a build
  tests the rows it wrote rather than every row again; rows that failed a test stay in the window, and
  fail it again, until they are fixed. After a full refresh every row is new, so every row is tested.
  Otherwise dbt's own behaviour.
-#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where -%}
        {%- set where = where | replace('__untested__',
            "refreshed_at > (select coalesce(max(tested_through), '-infinity') from staging.test_window)") -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}


{#-
  on-run-end: a `dbt build` of the whole project (no selection, or Dagster's `fqn:*`) in which every
  model ran and every test passed moves the test window up to this build's start.
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
