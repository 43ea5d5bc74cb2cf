{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['namespace', 'user_key'],
    on_schema_change='fail',
    post_hook=["{{ record_progress([]) }}"],
    indexes=[{'columns': ['load_seq']}],
) }}
-- One row per user, (namespace, user_key), seen in reviews, events or profiles: the same key in two
-- namespaces (two sources) is two users. user_id is a stable surrogate: new keys are numbered after
-- the existing ones in the order of the file that first named them, then by namespace and key, which
-- is exactly the numbering a full rebuild gives. Profile columns (MovieLens) come from the newest
-- profile record. The activity columns are rolled up from core.interactions by its post-hook.
{% set batch = load_batch() %}
with keys as (
    {{ keys_in_batch('user_key', [ref('stg_reviews'), ref('stg_events'), ref('stg_users')], batch) }}
),

profiles as (
    select distinct on (namespace, user_key) namespace, user_key, age, gender, occupation, postal_code
    from {{ ref('stg_users') }}
    where {{ batch.filter }}
    order by namespace, user_key, load_seq desc, line_number desc
),

existing as (
    {{ existing_rows('user_key', 'keys', 'user_key') }}
)

select
    coalesce(
        e.user_id,
        {{ next_id_base('user_id') }}
        + row_number() over (partition by e.user_id is null order by k.first_seq, k.namespace, k.user_key)
    )::bigint as user_id,
    k.namespace,
    k.user_key,
    case when p.user_key is not null then p.age else e.age end as age,
    case when p.user_key is not null then p.gender else e.gender end as gender,
    case when p.user_key is not null then p.occupation else e.occupation end as occupation,
    case when p.user_key is not null then p.postal_code else e.postal_code end as postal_code,
    e.first_activity_at,
    e.last_activity_at,
    coalesce(e.review_count, 0) as review_count,
    coalesce(e.product_count, 0) as product_count,
    k.last_seq as load_seq,
    '{{ run_started_at }}'::timestamptz as refreshed_at
from keys as k
left join existing as e on e.namespace = k.namespace and e.user_key = k.user_key
left join profiles as p on p.namespace = k.namespace and p.user_key = k.user_key
