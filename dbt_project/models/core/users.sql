-- One row per reviewer. user_id is a stable surrogate: keys are numbered in the order their first
-- landing file was loaded, so loading more files never renumbers existing users. Profile columns
-- come from sources that carry them (MovieLens); NULL elsewhere.
with activity as (
    select
        user_key,
        min(file_id) as first_file_id,
        min(event_ts) as first_review_at,
        max(event_ts) as last_review_at,
        count(*) as review_count
    from {{ ref('stg_reviews') }}
    group by user_key
)

select
    row_number() over (order by a.first_file_id, a.user_key)::bigint as user_id,
    a.user_key,
    a.first_review_at,
    a.last_review_at,
    a.review_count::integer as review_count,
    p.age,
    p.gender,
    p.occupation,
    p.postal_code
from activity as a
left join {{ ref('stg_users') }} as p on p.user_key = a.user_key
