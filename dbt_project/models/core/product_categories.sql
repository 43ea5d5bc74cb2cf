-- Products and their categories (many-to-many): an Amazon product belongs to the leaf of its path
-- (the ancestors follow from categories.parent_id); a movie belongs to each of its genres.
select distinct
    p.product_id,
    {{ category_id('p.taxonomy', 'p.categories') }} as category_id
from {{ ref('products') }} as p
where p.taxonomy = 'amazon' and cardinality(p.categories) > 0
union
select distinct
    p.product_id,
    {{ category_id('p.taxonomy', 'array[genre]') }} as category_id
from {{ ref('products') }} as p
cross join lateral unnest(p.categories) as genre
where p.taxonomy = 'genre'
