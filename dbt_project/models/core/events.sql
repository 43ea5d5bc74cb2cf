{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['user_id', 'product_id', 'event_type', 'occurred_at'],
    on_schema_change='fail',
    post_hook=["{{ ensure_foreign_keys({'user_id': ref('users'), 'product_id': ref('products')}) }}", "{{ record_progress(['users', 'products']) }}"],
    indexes=[{'columns': ['product_id']}, {'columns': ['load_seq']}, {'columns': ['refreshed_at']}],
) }}
-- One row per (user, product, event type, time) from the generic events files; a re-delivered event
-- collapses into one row, the most recently loaded record winning. Incremental like core.reviews.
-- An event's user and product are those of its file's namespace.
{% set batch = load_batch(['users', 'products']) %}
with batch as (
    select distinct on (namespace, user_key, item_key, event_type, event_ts) *
    from {{ ref('stg_events') }}
    where {{ batch.filter }}
    order by namespace, user_key, item_key, event_type, event_ts, load_seq desc, line_number desc
)

select
    u.user_id,
    p.product_id,
    e.event_type,
    e.event_ts as occurred_at,
    e.value,
    e.quantity,
    e.price::numeric(12, 2) as price,
    e.file_id as source_file_id,
    e.line_number as source_line,
    e.load_seq,
    '{{ run_started_at }}'::timestamptz as refreshed_at
from batch as e
inner join {{ ref('users') }} as u on u.namespace = e.namespace and u.user_key = e.user_key
inner join {{ ref('products') }} as p on p.namespace = e.namespace and p.product_key = e.item_key
