{#-
  Incremental loading by landing-file commit order (raw.ingested_files.load_seq, see raw_schema.sql).

  Every core model stores, per row, the load_seq of the newest landing file that changed it. A model's
  watermark is the largest load_seq in its table: every file above it is new to the model. The upper
  bound is staging.load_ceiling, written once at the start of a build, so every model of one build
  sees the same files even while more land; a model that failed catches up on the next build.

  load_batch() returns {'low', 'high', 'filter'}: filter is a predicate on a staging relation's
  file_id / load_seq columns selecting exactly the batch. Resolved to literals at run time so that
  PostgreSQL plans a primary-key scan of only the new files' rows.
-#}
{% macro load_batch() %}
    {%- set ceiling_relation = ref('load_ceiling') -%}
    {%- if not execute -%}
        {{ return({'low': 0, 'high': 0, 'filter': 'true'}) }}
    {%- endif -%}
    {%- set high = run_query('select load_seq_ceiling from ' ~ ceiling_relation).columns[0].values()[0] -%}
    {%- if not is_incremental() -%}
        {{ return({'low': 0, 'high': high, 'filter': 'load_seq <= ' ~ high}) }}
    {%- endif -%}
    {%- set low = watermark() -%}
    {%- set files = run_query(
        'select file_id from raw.ingested_files where load_seq > ' ~ low ~ ' and load_seq <= ' ~ high ~ ' order by file_id'
    ).columns[0].values() -%}
    {%- set ids = files | map('int') | join(',') -%}
    {{ return({'low': low, 'high': high, 'filter': "file_id = any('{" ~ ids ~ "}'::bigint[])"}) }}
{% endmacro %}


{#- The largest load_seq in this incremental model's table: every landing file above it is new to it. -#}
{% macro watermark() %}
    {{ return(run_query('select coalesce(max(load_seq), 0) from ' ~ this).columns[0].values()[0]) }}
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
  core.products, for the users and products whose interactions this build changed (all of them
  after a full refresh). Runs as core.interactions' post-hook, inside its transaction.
-#}
{% macro refresh_activity_stats() %}
    with touched as (
        select distinct user_id from {{ this }} where refreshed_at = '{{ run_started_at }}'::timestamptz
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
        select distinct product_id from {{ this }} where refreshed_at = '{{ run_started_at }}'::timestamptz
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
