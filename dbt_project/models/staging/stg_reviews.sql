-- One row per (user, item, timestamp): exact re-deliveries collapse, and when the same key arrives
-- again with other values the most recently loaded record wins.
with ranked as (
    select
        r.*,
        row_number() over (
            partition by r.user_key, r.item_key, r.event_ts
            order by r.file_id desc, r.line_number desc
        ) as recency
    from {{ source('raw', 'reviews') }} as r
)

select
    file_id,
    line_number,
    user_key,
    item_key,
    rating,
    event_type,
    event_ts,
    title,
    body,
    helpful_votes,
    verified_purchase
from ranked
where recency = 1
