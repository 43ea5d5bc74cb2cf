{#-
  Roll interactions up into the activity columns of core.users and the rating columns of
  core.products. Runs as core.interactions' post-hook, inside its transaction, before its progress is
  recorded. Recomputed: the users and products whose interactions this build changed, and every user
  and product row written since interactions last ran (rows a full refresh reset while interactions
  failed or was not selected get their figures back).
-#}

{#- The ids (id_column) to recompute in `dimension` (see above). -#}
{% macro stats_to_refresh(id_column, dimension) %}
    select {{ id_column }} from {{ this }} where refreshed_at = '{{ run_started_at }}'::timestamptz
    union
    select {{ id_column }} from {{ dimension }}
    where refreshed_at > (select coalesce(max(built_at), '-infinity') from staging.model_progress
                          where model = '{{ this.name }}')
{% endmacro %}

{#- The post-hook itself: one update of core.users, one of core.products. -#}
{% macro refresh_activity_stats() %}
    with touched as (
        {{ stats_to_refresh('user_id', ref('users')) }}
    ), stats as (
        select i.user_id, min(i.first_at) as first_at, max(i.last_at) as last_at,
               sum(i.review_count)::integer as reviews, count(*)::integer as products
        from {{ this }} as i join touched using (user_id)
        group by i.user_id
    )
    update {{ ref('users') }} as u
    set first_activity_at = s.first_at, last_activity_at = s.last_at,
        review_count = s.reviews, product_count = s.products
    from stats as s
    where u.user_id = s.user_id;

    with touched as (
        {{ stats_to_refresh('product_id', ref('products')) }}
    ), stats as (
        select i.product_id, sum(i.review_count)::integer as reviews, sum(i.rating_sum) as rating_sum
        from {{ this }} as i join touched using (product_id)
        group by i.product_id
    ), computed as (
        select product_id, reviews,
               case when reviews > 0 then round(rating_sum / reviews, 2) end as review_average
        from stats
    )
    update {{ ref('products') }} as p
    set review_count = c.reviews,
        review_average = c.review_average,
        average_rating = coalesce(p.source_average_rating, c.review_average),
        rating_count = coalesce(p.source_rating_count, c.reviews),
        rating_bin = {{ rating_bin('coalesce(p.source_average_rating, c.review_average)') }}
    from computed as c
    where p.product_id = c.product_id;
{% endmacro %}
