{{ config(post_hook=[
    "alter table {{ this }} add constraint categories_parent_id_fkey foreign key (parent_id) references {{ this }} (category_id)",
]) }}
-- Every category the products name: each prefix of an Amazon category path is a node (its parent
-- the path one shorter), and each MovieLens genre is a top-level node of taxonomy 'genre'.
-- parent_id references category_id (added after the table is in place: a self-reference).
-- category_id is a hash of (taxonomy, path), stable across rebuilds.
with paths as (
    select distinct p.taxonomy, p.categories[1:depth] as path
    from {{ ref('products') }} as p
    cross join lateral generate_series(1, cardinality(p.categories)) as depth
    where p.taxonomy = 'amazon'
    union
    select distinct p.taxonomy, array[genre] as path
    from {{ ref('products') }} as p
    cross join lateral unnest(p.categories) as genre
    where p.taxonomy = 'genre'
)

select
    {{ category_id('taxonomy', 'path') }} as category_id,
    taxonomy,
    path[cardinality(path)] as name,
    path,
    cardinality(path)::smallint as depth,
    case when cardinality(path) > 1 then {{ category_id('taxonomy', 'path[1:cardinality(path) - 1]') }} end
        as parent_id
from paths
