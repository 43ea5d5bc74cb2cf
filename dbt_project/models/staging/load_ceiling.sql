{{ config(materialized='table') }}
-- The newest landing file this build processes: written once, first, so every model of the build
-- works on the same files even while more are landing (see macros/load_batch.sql).
-- depends_on: {{ source('raw', 'reviews') }}, {{ source('raw', 'products') }}
-- depends_on: {{ source('raw', 'users') }}, {{ source('raw', 'events') }}
select coalesce(max(load_seq), 0)::bigint as load_seq_ceiling, now() as computed_at
from raw.ingested_files
