-- Raw reviews with the commit order and namespace of their landing file. Deduplication happens per batch in
-- core.reviews (latest load wins).
select
    f.load_seq,
    r.file_id,
    r.line_number,
    f.namespace,
    r.user_key,
    r.item_key,
    r.rating,
    r.event_type,
    r.event_ts,
    r.title,
    r.body,
    r.helpful_votes,
    r.verified_purchase
from {{ source('raw', 'reviews') }} as r
inner join raw.ingested_files as f on f.file_id = r.file_id
