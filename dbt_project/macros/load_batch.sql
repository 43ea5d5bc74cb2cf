{#-
  Which landing files one build of an incremental core model processes: its batch, bounded by load_seq
  (raw.ingested_files.load_seq, the commit order of landing files, see rec_orchestration/sql/raw_schema.sql).

  A model's batch is the files above its watermark and up to the smallest of
    - staging.load_ceiling: the newest committed file when the build started (a table built first,
      so every model of one build sees the same files even while more land), and
    - the progress of the models it reads (users and products for reviews and events; reviews and
      events for interactions): a model never runs ahead of its inputs, whether an input failed, was
      left out of a selection, or had nothing to do.
  The watermark is the model's row in staging.model_progress (macros/model_progress.sql), written by
  its post-hook in the same transaction as its rows, so a model that failed or was not selected
  catches up on its next build. Every core row also keeps the load_seq of the newest file that
  changed it (lineage, and the fallback watermark of a table whose progress row is missing).

  load_batch(parents) returns {'low', 'high', 'filter'}: filter is a predicate on a staging relation's
  file_id / load_seq columns selecting exactly the batch, resolved to literals at run time so that
  PostgreSQL plans a primary-key scan of only the new files' rows. On a full refresh the batch is
  every file up to high (low 0, filter 'load_seq <= high').
-#}
{% macro load_batch(parents=[]) %}
    {#- ceiling_relation is not used below, yet this line is needed. dbt renders a model once at parse
        time (execute false) and records in its depends_on only the ref() calls made then; batch_high,
        which reads load_ceiling, is only reached once execute is true. This ref, before the execute
        check, makes every model calling load_batch depend on load_ceiling, so the ceiling is built
        before it, and lets batch_high's ref pass at run time (dbt refuses a ref it did not record at
        parse time: "dbt was unable to infer all dependencies"). The record_progress post-hook records
        the same ref today; this keeps load_batch correct without it. -#}
    {%- set ceiling_relation = ref('load_ceiling') -%}
    {%- if not execute -%}
        {{ return({'low': 0, 'high': 0, 'filter': 'true'}) }}
    {%- endif -%}
    {%- set high = batch_high(parents) -%}
    {%- if not is_incremental() -%}
        {{ return({'low': 0, 'high': high, 'filter': 'load_seq <= ' ~ high}) }}
    {%- endif -%}
    {%- set low = model_progress(this.name) -%}
    {%- if low is none -%}
        {%- set low = run_query('select coalesce(max(load_seq), 0) from ' ~ this).columns[0].values()[0] | int -%}
    {%- endif -%}
    {%- set files = run_query(
        'select file_id from raw.ingested_files where load_seq > ' ~ low ~ ' and load_seq <= ' ~ high
        ~ ' order by file_id'
    ).columns[0].values() -%}
    {%- set ids = files | map('int') | join(',') -%}
    {{ return({'low': low, 'high': high, 'filter': "file_id = any('{" ~ ids ~ "}'::bigint[])"}) }}
{% endmacro %}


{#-
  The upper end (load_seq) of this build's batch for a model reading `parents` (see load_batch): the
  build's ceiling, lowered to the progress of each parent (0 for a parent never built).
-#}
{% macro batch_high(parents=[]) %}
    {#- ref before the execute check: records load_ceiling at parse time when called from a post-hook
        (record_progress). -#}
    {%- set ceiling_relation = ref('load_ceiling') -%}
    {%- if not execute -%}{{ return(0) }}{%- endif -%}
    {%- set ceiling = run_query('select load_seq_ceiling from ' ~ ceiling_relation).columns[0].values()[0] -%}
    {%- set state = namespace(high=ceiling | int) -%}
    {%- for parent in parents -%}
        {%- set state.high = [state.high, model_progress(parent) or 0] | min -%}
    {%- endfor -%}
    {{ return(state.high) }}
{% endmacro %}
