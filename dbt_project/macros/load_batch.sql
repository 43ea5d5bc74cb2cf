{#-
  Incremental loading by landing-file commit order (raw.ingested_files.load_seq, see raw_schema.sql).

  Every incremental core model records how far it has got in staging.model_progress: the load_seq of
  the newest landing file it has processed, written by its post-hook in the same transaction as its
  rows. A build processes, per model, the files above that and up to the smallest of
    - staging.load_ceiling: the newest committed file when the build started (a table written first,
      so every model of one build sees the same files even while more land), and
    - the progress of the models it reads (users and products for reviews and events; reviews and
      events for interactions): a model never runs ahead of its inputs, whether an input failed, was
      left out of a selection, or had nothing to do.
  A model that failed or was not selected catches up on its next build.

  load_batch(parents) returns {'low', 'high', 'filter'}: filter is a predicate on a staging relation's
  file_id / load_seq columns selecting exactly the batch, resolved to literals at run time so that
  PostgreSQL plans a primary-key scan of only the new files' rows. Every core row also keeps the
  load_seq of the newest file that changed it (lineage, and the fallback watermark of a table whose
  progress row is missing).
-#}
{% macro load_batch(parents=[]) %}
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


{#- The upper end of this build's batch for a model reading `parents` (see load_batch). -#}
{% macro batch_high(parents=[]) %}
    {%- set ceiling_relation = ref('load_ceiling') -%}
    {%- if not execute -%}{{ return(0) }}{%- endif -%}
    {%- set ceiling = run_query('select load_seq_ceiling from ' ~ ceiling_relation).columns[0].values()[0] -%}
    {%- set state = namespace(high=ceiling | int) -%}
    {%- for parent in parents -%}
        {%- set state.high = [state.high, model_progress(parent) or 0] | min -%}
    {%- endfor -%}
    {{ return(state.high) }}
{% endmacro %}


{#- How far a model has got (load_seq), or none before its first build. -#}
{% macro model_progress(model_name) %}
    {%- if not execute -%}{{ return(none) }}{%- endif -%}
    {%- set found = run_query("select load_seq from staging.model_progress where model = '" ~ model_name ~ "'") -%}
    {{ return(found.columns[0].values()[0] | int if found.rows | length > 0 else none) }}
{% endmacro %}


{#- Post-hook of every incremental model: record the batch it processed, in its own transaction. -#}
{% macro record_progress(parents=[]) %}
    insert into staging.model_progress (model, load_seq, built_at)
    values ('{{ this.name }}', {{ batch_high(parents) }}, '{{ run_started_at }}'::timestamptz)
    on conflict (model) do update set load_seq = excluded.load_seq, built_at = excluded.built_at
{% endmacro %}


{#-
  For the dimension models (users, products): the keys the batch's `relations` name, with the first
  and last load_seq naming each, and the rows of this table for those keys (none on a full refresh,
  with the model's contract columns). New keys are numbered after next_id_base().
-#}
{% macro keys_in_batch(key_column, relations, batch) %}
    select {{ key_column }}, min(load_seq) as first_seq, max(load_seq) as last_seq
    from (
        {%- for relation in relations %}
        select {{ key_column }}, load_seq from {{ relation }} where {{ batch.filter }}
        {%- if not loop.last %} union all{% endif %}
        {%- endfor %}
    ) as mentions
    group by {{ key_column }}
{% endmacro %}

{% macro existing_rows(key_column, keys_relation, keys_key_column) %}
    {%- if is_incremental() %}
    select t.* from {{ this }} as t inner join {{ keys_relation }} as k on k.{{ keys_key_column }} = t.{{ key_column }}
    {%- else %}
    select
        {%- for name, column in model.columns.items() %}
        null::{{ column.data_type }} as {{ name }}{{ ',' if not loop.last }}
        {%- endfor %}
    where false
    {%- endif %}
{% endmacro %}

{% macro next_id_base(id_column) -%}
    {%- if is_incremental() -%}(select coalesce(max({{ id_column }}), 0) from {{ this }}){%- else -%}0{%- endif -%}
{%- endmacro %}


{#- Build bookkeeping, created before any model runs (on-run-start). -#}
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


{#- Low below 3.0 stars, Medium from 3.0 to below 4.0, High from 4.0; NULL when unrated. -#}
{% macro rating_bin(average_rating) -%}
    case
        when {{ average_rating }} is null then null
        when {{ average_rating }} < 3.0 then 'Low'
        when {{ average_rating }} < 4.0 then 'Medium'
        else 'High'
    end
{%- endmacro %}


{#- Dates as sources write them ("March 7, 2019", "2019-03-07"); anything else is NULL, never an error. -#}
{% macro create_parse_date_function() %}
    create schema if not exists staging;
    create or replace function staging.parse_source_date(value text) returns date
    language plpgsql immutable parallel safe as $fn$
    begin
        if value ~ '^\d{4}-\d{2}-\d{2}$' then
            return value::date;
        elsif value ~* '^[a-z]+ \d{1,2}, \d{4}$' then
            return to_date(value, 'FMMonth FMDD, YYYY');
        end if;
        return null;
    exception when others then
        return null;
    end
    $fn$;
{% endmacro %}


{#-
  Roll interactions up into the activity columns of core.users and the rating columns of
  core.products. Runs as core.interactions' post-hook, inside its transaction, before its progress is
  recorded. Recomputed: the users and products whose interactions this build changed, and every user
  and product row written since interactions last ran (rows a full refresh reset while interactions
  failed or was not selected get their figures back).
-#}
{% macro stats_to_refresh(id_column, dimension) %}
    select {{ id_column }} from {{ this }} where refreshed_at = '{{ run_started_at }}'::timestamptz
    union
    select {{ id_column }} from {{ dimension }}
    where refreshed_at > (select coalesce(max(built_at), '-infinity') from staging.model_progress
                          where model = '{{ this.name }}')
{% endmacro %}

{% macro refresh_activity_stats() %}
    with touched as (
        {{ stats_to_refresh('user_id', ref('users')) }}
    ), stats as (
        select i.user_id, min(i.first_at) as first_at, max(i.last_at) as last_at,
               sum(i.review_count)::integer as reviews, count(*)::integer as products
        from {{ this }} as i join touched using (user_id)
        group by i.user_id
    )
    update {{ ref('users') }} as u
    set first_activity_at = s.first_at, last_activity_at = s.last_at,
        review_count = s.reviews, product_count = s.products
    from stats as s
    where u.user_id = s.user_id;

    with touched as (
        {{ stats_to_refresh('product_id', ref('products')) }}
    ), stats as (
        select i.product_id, sum(i.review_count)::integer as reviews, sum(i.rating_sum) as rating_sum
        from {{ this }} as i join touched using (product_id)
        group by i.product_id
    ), computed as (
        select product_id, reviews,
               case when reviews > 0 then round(rating_sum / reviews, 2) end as review_average
        from stats
    )
    update {{ ref('products') }} as p
    set review_count = c.reviews,
        review_average = c.review_average,
        average_rating = coalesce(p.source_average_rating, c.review_average),
        rating_count = coalesce(p.source_rating_count, c.reviews),
        rating_bin = {{ rating_bin('coalesce(p.source_average_rating, c.review_average)') }}
    from computed as c
    where p.product_id = c.product_id;
{% endmacro %}


{#- Stable ids from natural keys (64-bit hashes: a collision fails the primary key, loudly). -#}
{% macro category_id(taxonomy, path) -%}
    hashtextextended({{ taxonomy }} || ':' || ({{ path }})::text, 0)
{%- endmacro %}

{% macro order_id(user_id, ordered_at) -%}
    'O' || {{ user_id }}::text || '-' || to_char({{ ordered_at }} at time zone 'UTC', 'YYYYMMDD"T"HH24MISSUS')
{%- endmacro %}
