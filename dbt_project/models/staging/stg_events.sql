-- Raw interaction events (view, click, like, purchase, rating) with their file's commit order and
-- namespace (users and products are keyed by namespace and key in core).
select
    f.load_seq,
    e.file_id,
    e.line_number,
    f.namespace,
    e.user_key,
    e.item_key,
    e.event_type,
    e.value,
    e.event_ts,
    e.quantity,
    e.price
from {{ source('raw', 'events') }} as e
inner join raw.ingested_files as f on f.file_id = e.file_id
