-- One row per product: every product with metadata plus any product that was reviewed without it.
-- product_id is stable like users.user_id (numbered by first landing file, then key).
-- average_rating / rating_count are the source's own figures when it has them (Amazon's cover all of
-- Amazon, not just the loaded reviews), else computed from the loaded reviews.
-- rating_bin: Low below 3.0 stars, Medium from 3.0 to below 4.0, High from 4.0; NULL when unrated.
with review_stats as (
    select
        item_key,
        min(file_id) as first_file_id,
        avg(rating) as average_rating,
        count(*) as rating_count
    from {{ ref('stg_reviews') }}
    group by item_key
),

meta as (
    select * from {{ ref('stg_products') }}
),

keyed as (
    select
        coalesce(m.item_key, s.item_key) as product_key,
        least(m.first_file_id, s.first_file_id) as first_file_id,
        m.title,
        m.description,
        m.main_category,
        m.categories,
        m.store,
        m.price,
        round(coalesce(m.average_rating, s.average_rating), 2) as average_rating,
        coalesce(m.rating_number, s.rating_count)::integer as rating_count
    from meta as m
    full outer join review_stats as s on s.item_key = m.item_key
)

select
    row_number() over (order by first_file_id, product_key)::bigint as product_id,
    product_key,
    title,
    description,
    main_category,
    coalesce(categories, array[]::text[]) as categories,
    store,
    price::numeric(12, 2) as price,
    average_rating::numeric(3, 2) as average_rating,
    rating_count,
    case
        when average_rating is null then null
        when average_rating < 3.0 then 'Low'
        when average_rating < 4.0 then 'Medium'
        else 'High'
    end as rating_bin
from keyed
