{#-
  A data test's `where` config may say __untested__: the test then checks only the rows written since
  the last complete build whose every test passed (staging.test_window, advanced by
  advance_test_window in macros/test_window.sql at the end of such a build). Used on the large
  incremental models, so a build tests the rows it wrote rather than every row again; rows that failed
  a test stay in the window, and fail it again, until they are fixed. After a full refresh every row
  is new, so every row is tested. Otherwise dbt's own behaviour.
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
