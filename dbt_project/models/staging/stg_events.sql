-- Raw interaction events (view, click, like, purchase, rating) with their file's commit order.
select
    f.load_seq,
    e.file_id,
    e.line_number,
    e.user_key,
    e.item_key,
    e.event_type,
    e.value,
    e.event_ts,
    e.quantity,
    e.price
from {{ source('raw', 'events') }} as e
inner join raw.ingested_files as f on f.file_id = e.file_id
