-- Orders, from the purchase events of sources that have them: the purchases one user made at one
-- instant form one order. order_id is derived from (user, time), so it is stable across rebuilds.
-- status is 'completed' for every order: the events format records completed purchases only.
-- total_price is NULL when a line has no price.
select
    {{ order_id('user_id', 'occurred_at') }} as order_id,
    user_id,
    occurred_at as ordered_at,
    count(*)::integer as line_count,
    sum(coalesce(quantity, 1))::integer as item_count,
    case when bool_and(price is not null) then sum(coalesce(quantity, 1) * price) end::numeric(14, 2) as total_price,
    'completed'::text as status
from {{ ref('events') }}
where event_type = 'purchase'
group by user_id, occurred_at
