{#-
  Per-model progress of the incremental core models, in staging.model_progress (one row per model:
  the load_seq of the newest landing file it has processed, and built_at, the start of the build that
  recorded it; the table is created by create_build_state, macros/build_state.sql). load_batch
  (macros/load_batch.sql) reads it as the model's watermark and as the bound its dependents may not
  overtake; refresh_activity_stats (macros/activity_stats.sql) reads built_at.
-#}

{#- How far a model has got (load_seq), or none before its first build. -#}
{% macro model_progress(model_name) %}
    {%- if not execute -%}{{ return(none) }}{%- endif -%}
    {%- set found = run_query("select load_seq from staging.model_progress where model = '" ~ model_name ~ "'") -%}
    {{ return(found.columns[0].values()[0] | int if found.rows | length > 0 else none) }}
{% endmacro %}


{#-
  Post-hook of every incremental model: record the batch it processed (up to batch_high(parents), the
  same bound load_batch gave it). Post-hooks run inside the model's transaction, so its rows and its
  progress commit together or not at all.
-#}
{% macro record_progress(parents=[]) %}
    insert into staging.model_progress (model, load_seq, built_at)
    values ('{{ this.name }}', {{ batch_high(parents) }}, '{{ run_started_at }}'::timestamptz)
    on conflict (model) do update set load_seq = excluded.load_seq, built_at = excluded.built_at
{% endmacro %}
