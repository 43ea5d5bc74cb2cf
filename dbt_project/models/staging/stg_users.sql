-- User attribute records (MovieLens u.user / users.dat) with their file's commit order and namespace.
select
    f.load_seq,
    u.file_id,
    u.line_number,
    f.namespace,
    u.user_key,
    u.age,
    u.gender,
    u.occupation,
    u.postal_code
from {{ source('raw', 'users') }} as u
inner join raw.ingested_files as f on f.file_id = u.file_id
