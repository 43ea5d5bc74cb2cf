-- Latest metadata record per product key.
with ranked as (
    select
        p.*,
        row_number() over (partition by p.item_key order by p.file_id desc, p.line_number desc) as recency,
        min(p.file_id) over (partition by p.item_key) as first_file_id
    from {{ source('raw', 'products') }} as p
)

select
    file_id,
    first_file_id,
    item_key,
    title,
    description,
    main_category,
    categories,
    store,
    price,
    average_rating,
    rating_number,
    details
from ranked
where recency = 1
