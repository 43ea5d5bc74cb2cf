-- The lines of core.transactions: one per product of an order.
select
    {{ order_id('user_id', 'occurred_at') }} as order_id,
    product_id,
    coalesce(quantity, 1)::integer as quantity,
    price as unit_price,
    (coalesce(quantity, 1) * price)::numeric(14, 2) as line_total
from {{ ref('events') }}
where event_type = 'purchase'
