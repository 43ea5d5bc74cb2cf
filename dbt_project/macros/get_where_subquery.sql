{#-
  A data test's `where` config may say __this_build__: the test then checks only the rows the current
  build wrote (refreshed_at = the build's start). Used on the large incremental models, whose rows
  were each tested when written and are guarded by PostgreSQL constraints (primary and foreign keys,
  NOT NULL, CHECK) from then on; after a full refresh every row is this build's, so every row is tested.
  Otherwise dbt's own behaviour.
-#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where -%}
        {%- set where = where | replace('__this_build__', "refreshed_at = '" ~ run_started_at ~ "'::timestamptz") -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
