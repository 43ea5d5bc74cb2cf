{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['namespace', 'product_key'],
    on_schema_change='fail',
    post_hook=["{{ record_progress([]) }}"],
    indexes=[{'columns': ['load_seq']}],
) }}
-- One row per product, (namespace, product_key), seen in metadata, reviews or events: the same key
-- in two namespaces (two sources) is two products. product_id is a stable surrogate numbered like
-- core.users.user_id. Metadata comes from the newest metadata record; a product that
-- was only reviewed has none until its metadata lands.
-- average_rating / rating_count are the source's own figures when it has them (Amazon's cover all
-- of Amazon, not just the loaded reviews), else computed from the loaded reviews (review_average,
-- review_count); both are rolled up from core.interactions by its post-hook.
-- rating_bin from average_rating: Low below 3.0, Medium from 3.0 to below 4.0, High from 4.0.
{% set batch = load_batch() %}
with keys as (
    {{ keys_in_batch('item_key', [ref('stg_reviews'), ref('stg_events'), ref('stg_products')], batch) }}
),

meta as (
    select distinct on (namespace, item_key) *
    from {{ ref('stg_products') }}
    where {{ batch.filter }}
    order by namespace, item_key, load_seq desc, line_number desc
),

existing as (
    {{ existing_rows('product_key', 'keys', 'item_key') }}
),

merged as (
    select
        coalesce(
            e.product_id,
            {{ next_id_base('product_id') }}
            + row_number() over (partition by e.product_id is null order by k.first_seq, k.namespace, k.item_key)
        )::bigint as product_id,
        k.namespace,
        k.item_key as product_key,
        m.item_key is not null as has_meta,
        m.title, m.description, m.brand, m.store, m.color, m.main_category, m.categories, m.taxonomy,
        m.date_first_available, m.price, m.average_rating, m.rating_number,
        e.title as e_title, e.description as e_description, e.brand as e_brand, e.store as e_store,
        e.color as e_color, e.main_category as e_main_category, e.categories as e_categories,
        e.taxonomy as e_taxonomy, e.date_first_available as e_date_first_available, e.price as e_price,
        e.source_average_rating as e_average_rating, e.source_rating_count as e_rating_number,
        coalesce(e.review_count, 0) as review_count,
        e.review_average,
        k.last_seq
    from keys as k
    left join existing as e on e.namespace = k.namespace and e.product_key = k.item_key
    left join meta as m on m.namespace = k.namespace and m.item_key = k.item_key
),

described as (
    select
        product_id,
        namespace,
        product_key,
        case when has_meta then title else e_title end as title,
        case when has_meta then description else e_description end as description,
        case when has_meta then brand else e_brand end as brand,
        case when has_meta then store else e_store end as store,
        case when has_meta then color else e_color end as color,
        case when has_meta then main_category else e_main_category end as main_category,
        coalesce(case when has_meta then categories else e_categories end, array[]::text[]) as categories,
        case when has_meta then taxonomy else e_taxonomy end as taxonomy,
        case when has_meta then date_first_available else e_date_first_available end as date_first_available,
        case when has_meta then price else e_price end as price,
        case when has_meta then average_rating else e_average_rating end as source_average_rating,
        case when has_meta then rating_number else e_rating_number end as source_rating_count,
        review_count,
        review_average,
        last_seq
    from merged
)

select
    product_id,
    namespace,
    product_key,
    title,
    description,
    brand,
    store,
    color,
    main_category,
    categories,
    taxonomy,
    date_first_available,
    price::numeric(12, 2) as price,
    coalesce(source_average_rating, review_average)::numeric(3, 2) as average_rating,
    coalesce(source_rating_count, review_count)::integer as rating_count,
    {{ rating_bin('coalesce(source_average_rating, review_average)') }} as rating_bin,
    source_average_rating::numeric(3, 2) as source_average_rating,
    source_rating_count::integer as source_rating_count,
    review_count::integer as review_count,
    review_average::numeric(3, 2) as review_average,
    last_seq as load_seq,
    '{{ run_started_at }}'::timestamptz as refreshed_at
from described
