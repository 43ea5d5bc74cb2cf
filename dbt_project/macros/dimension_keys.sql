{#-
  Keys and surrogate ids of the dimension models (users, products), built batch by batch.
  A natural key is (namespace, key): a source's user "1" and another source's user "1" are two users
  unless their files share a namespace (raw.ingested_files.namespace, rec_orchestration/sources/namespaces.py).
  New keys are numbered after next_id_base() in the order of the file that first named them (first_seq),
  then by namespace and key.
-#}

{#-
  The keys (namespace, key_column) the batch's `relations` name (staging relations, filtered by
  batch.filter from load_batch), with the first and last load_seq naming each.
-#}
{% macro keys_in_batch(key_column, relations, batch) %}
    select namespace, {{ key_column }}, min(load_seq) as first_seq, max(load_seq) as last_seq
    from (
        {%- for relation in relations %}
        select namespace, {{ key_column }}, load_seq from {{ relation }} where {{ batch.filter }}
        {%- if not loop.last %} union all{% endif %}
        {%- endfor %}
    ) as mentions
    group by namespace, {{ key_column }}
{% endmacro %}

{#-
  The rows of this table for the keys in `keys_relation` (joined on namespace and key_column =
  keys_key_column); none on a full refresh, with the model's contract columns.
-#}
{% macro existing_rows(key_column, keys_relation, keys_key_column) %}
    {%- if is_incremental() %}
    select t.* from {{ this }} as t
    inner join {{ keys_relation }} as k
        on k.namespace = t.namespace and k.{{ keys_key_column }} = t.{{ key_column }}
    {%- else %}
    select
        {%- for name, column in model.columns.items() %}
        null::{{ column.data_type }} as {{ name }}{{ ',' if not loop.last }}
        {%- endfor %}
    where false
    {%- endif %}
{% endmacro %}

{#- The base new ids are numbered from: the table's largest id (0 when empty), 0 on a full refresh. -#}
{% macro next_id_base(id_column) -%}
    {%- if is_incremental() -%}(select coalesce(max({{ id_column }}), 0) from {{ this }}){%- else -%}0{%- endif -%}
{%- endmacro %}
