{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['user_id', 'product_id'],
    on_schema_change='fail',
    indexes=[{'columns': ['product_id']}, {'columns': ['load_seq']}, {'columns': ['refreshed_at']}],
    post_hook=["{{ ensure_foreign_keys({'user_id': ref('users'), 'product_id': ref('products')}) }}", "{{ refresh_activity_stats() }}", "{{ record_progress(['reviews', 'events']) }}"],
) }}
-- The training input: one row per (user, product) with an implicit-feedback weight, the sum over
-- every signal of the pair (var interaction_weights): a view 1, a click 2, a like 2.5, a purchase 3,
-- a review or rating event its stars times 0.6 (5 stars count like a purchase, 1 star less than a view).
-- Incremental: only pairs with a review or event from the landing files of this batch (see
-- macros/load_batch.sql) are recomputed, from all of their signals up to the batch's end.
{%- set w = var('interaction_weights') %}
{%- set batch = load_batch(['reviews', 'events']) %}
with
{% if is_incremental() %}
changed as (
    select user_id, product_id from {{ ref('reviews') }} where load_seq > {{ batch.low }} and load_seq <= {{ batch.high }}
    union
    select user_id, product_id from {{ ref('events') }} where load_seq > {{ batch.low }} and load_seq <= {{ batch.high }}
),
{% endif %}

signals as (
    select
        r.user_id, r.product_id,
        r.rating * {{ w['review_per_star'] }} as weight,
        1 as is_review, r.rating, r.reviewed_at as at, r.load_seq
    from {{ ref('reviews') }} as r
    {% if is_incremental() %}inner join changed using (user_id, product_id){% endif %}
    where r.load_seq <= {{ batch.high }}
    union all
    select
        e.user_id, e.product_id,
        case e.event_type
            when 'view' then {{ w['view'] }}
            when 'click' then {{ w['click'] }}
            when 'like' then {{ w['like'] }}
            when 'purchase' then {{ w['purchase'] }}
            when 'rating' then e.value * {{ w['review_per_star'] }}
        end as weight,
        0 as is_review, null as rating, e.occurred_at as at, e.load_seq
    from {{ ref('events') }} as e
    {% if is_incremental() %}inner join changed using (user_id, product_id){% endif %}
    where e.load_seq <= {{ batch.high }}
)

select
    user_id,
    product_id,
    sum(weight)::double precision as weight,
    count(*)::integer as signal_count,
    sum(is_review)::integer as review_count,
    coalesce(sum(rating), 0)::numeric(12, 1) as rating_sum,
    min(at) as first_at,
    max(at) as last_at,
    max(load_seq) as load_seq,
    '{{ run_started_at }}'::timestamptz as refreshed_at
from signals
group by user_id, product_id
