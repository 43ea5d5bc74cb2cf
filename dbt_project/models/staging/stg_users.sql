-- Latest attribute record per user key (MovieLens u.user / users.dat); users of other sources have none.
with ranked as (
    select
        u.*,
        row_number() over (partition by u.user_key order by u.file_id desc, u.line_number desc) as recency
    from {{ source('raw', 'users') }} as u
)

select
    file_id,
    user_key,
    age,
    gender,
    occupation,
    postal_code
from ranked
where recency = 1
