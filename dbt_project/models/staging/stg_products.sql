-- Product metadata records with their file's commit order and namespace, and the attributes sources keep in
-- `details`: brand (Amazon "Brand", else the store), color, and the date first available (Amazon
-- "Date First Available", MovieLens release date). `taxonomy` says how to read `categories`: an
-- Amazon category path (broadest first) or a list of MovieLens genres.
select
    f.load_seq,
    p.file_id,
    p.line_number,
    f.namespace,
    p.item_key,
    p.title,
    p.description,
    p.main_category,
    p.categories,
    case when f.source_format like 'movielens%' then 'genre' else 'amazon' end as taxonomy,
    p.store,
    coalesce(nullif(btrim(p.details ->> 'Brand'), ''), p.store) as brand,
    nullif(btrim(coalesce(p.details ->> 'Color', p.details ->> 'color')), '') as color,
    staging.parse_source_date(coalesce(p.details ->> 'Date First Available', p.details ->> 'release_date'))
        as date_first_available,
    p.price,
    p.average_rating,
    p.rating_number,
    p.details
from {{ source('raw', 'products') }} as p
inner join raw.ingested_files as f on f.file_id = p.file_id
