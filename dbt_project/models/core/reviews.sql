{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['user_id', 'product_id', 'reviewed_at'],
    on_schema_change='fail',
    post_hook=["{{ ensure_foreign_keys({'user_id': ref('users'), 'product_id': ref('products')}) }}", "{{ record_progress(['users', 'products']) }}"],
    indexes=[{'columns': ['product_id']}, {'columns': ['reviewed_at']}, {'columns': ['load_seq']}, {'columns': ['refreshed_at']}],
) }}
-- One row per (user, product, review time) with surrogate keys and the calendar parts (UTC) that
-- reports group by. A record's user and product are those of its file's namespace. Incremental: a
-- build reads only the landing files committed since the last one.
-- The same review delivered again collapses into one row; when it comes back with other values the
-- most recently loaded record wins (newest file, then last line), within a batch and over earlier ones.
{% set batch = load_batch(['users', 'products']) %}
with batch as (
    select distinct on (namespace, user_key, item_key, event_ts) *
    from {{ ref('stg_reviews') }}
    where {{ batch.filter }}
    order by namespace, user_key, item_key, event_ts, load_seq desc, line_number desc
)

select
    u.user_id,
    p.product_id,
    r.rating::numeric(2, 1) as rating,
    r.event_ts as reviewed_at,
    extract(year from r.event_ts at time zone 'UTC')::smallint as year,
    extract(month from r.event_ts at time zone 'UTC')::smallint as month,
    extract(day from r.event_ts at time zone 'UTC')::smallint as day,
    extract(hour from r.event_ts at time zone 'UTC')::smallint as hour,
    extract(minute from r.event_ts at time zone 'UTC')::smallint as minute,
    r.title,
    r.body,
    r.helpful_votes,
    r.verified_purchase,
    r.file_id as source_file_id,
    r.line_number as source_line,
    r.load_seq,
    '{{ run_started_at }}'::timestamptz as refreshed_at
from batch as r
inner join {{ ref('users') }} as u on u.namespace = r.namespace and u.user_key = r.user_key
inner join {{ ref('products') }} as p on p.namespace = r.namespace and p.product_key = r.item_key
