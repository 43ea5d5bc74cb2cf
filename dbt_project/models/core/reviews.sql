{{ config(indexes=[
    {'columns': ['product_id']},
    {'columns': ['reviewed_at']},
]) }}
-- One row per (user, product, timestamp) with surrogate keys and the calendar parts (UTC) that
-- reports group by.
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
    r.verified_purchase
from {{ ref('stg_reviews') }} as r
inner join {{ ref('users') }} as u on u.user_key = r.user_key
inner join {{ ref('products') }} as p on p.product_key = r.item_key
