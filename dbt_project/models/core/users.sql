{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key='user_key',
    on_schema_change='fail',
    post_hook=["{{ record_progress([]) }}"],
    indexes=[{'columns': ['load_seq']}],
) }}
-- One row per user key seen in reviews, events or profiles. user_id is a stable surrogate: new keys
-- are numbered after the existing ones in the order of the file that first named them, then by key,
-- which is exactly the numbering a full rebuild gives. Profile columns (MovieLens) come from the
-- newest profile record. The activity columns are rolled up from core.interactions by its post-hook.
{% set batch = load_batch() %}
with mentions as (
    select user_key, load_seq from {{ ref('stg_reviews') }} where {{ batch.filter }}
    union all
    select user_key, load_seq from {{ ref('stg_events') }} where {{ batch.filter }}
    union all
    select user_key, load_seq from {{ ref('stg_users') }} where {{ batch.filter }}
),

keys as (
    select user_key, min(load_seq) as first_seq, max(load_seq) as last_seq
    from mentions
    group by user_key
),

profiles as (
    select distinct on (user_key) user_key, age, gender, occupation, postal_code
    from {{ ref('stg_users') }}
    where {{ batch.filter }}
    order by user_key, load_seq desc, line_number desc
),

{% if is_incremental() %}
existing as (
    select t.* from {{ this }} as t inner join keys using (user_key)
),

numbered_from as (
    select coalesce(max(user_id), 0) as last_id from {{ this }}
)
{% else %}
existing as (
    select
        null::bigint as user_id, null::text as user_key, null::integer as age, null::text as gender,
        null::text as occupation, null::text as postal_code, null::timestamptz as first_activity_at,
        null::timestamptz as last_activity_at, null::integer as review_count, null::integer as product_count
    where false
),

numbered_from as (
    select 0::bigint as last_id
)
{% endif %}

select
    coalesce(
        e.user_id,
        n.last_id + row_number() over (partition by e.user_id is null order by k.first_seq, k.user_key)
    )::bigint as user_id,
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
cross join numbered_from as n
left join existing as e on e.user_key = k.user_key
left join profiles as p on p.user_key = k.user_key
