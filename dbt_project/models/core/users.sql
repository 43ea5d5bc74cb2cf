-- One row per reviewer. user_id is a stable surrogate: keys are numbered in the order their first
-- landing file was loaded, so loading more files never renumbers existing users.
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
    row_number() over (order by first_file_id, user_key)::bigint as user_id,
    user_key,
    first_review_at,
    last_review_at,
    review_count::integer as review_count
from activity
