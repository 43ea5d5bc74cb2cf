-- Raw landing tables: one row per source record, loaded by binary COPY in one transaction per file.
-- Idempotent: run before every ingestion.
CREATE SCHEMA IF NOT EXISTS raw;

-- Commit order of loaded files. file_id is taken when a load starts, so two loads running at once
-- can commit out of file_id order; load_seq is taken under a global lock just before commit, so a
-- reader that sees load_seq N has also seen every file below N. The dbt models' incremental
-- watermark and their "latest load wins" rule use it.
CREATE SEQUENCE IF NOT EXISTS raw.load_seq;

-- Ledger: one row per landing file content ever loaded. A content hash seen before is never loaded again.
CREATE TABLE IF NOT EXISTS raw.ingested_files (
    file_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    path           text        NOT NULL,
    content_sha256 text        NOT NULL UNIQUE,
    landing_entry  text,       -- the partition: the file or folder name inside the landing directory
    source_format  text        NOT NULL,
    record_kind    text        NOT NULL,
    -- Whose keys these are: users and products are (namespace, key) in core (sources/namespaces.py).
    namespace      text        NOT NULL CONSTRAINT ingested_files_namespace_check
                               CHECK (namespace ~ '^[a-z][a-z0-9_]{0,39}$'),
    size_bytes     bigint      NOT NULL,
    mtime_ns       bigint,     -- with path and size: lets a re-run skip a known file without hashing it
    rows_read      bigint      NOT NULL DEFAULT 0,
    rows_loaded    bigint      NOT NULL DEFAULT 0,
    rows_rejected  bigint      NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    load_seq       bigint      UNIQUE,  -- set in the load's transaction, just before it commits
    CHECK (rows_read = rows_loaded + rows_rejected)
);

CREATE TABLE IF NOT EXISTS raw.reviews (
    file_id           bigint      NOT NULL REFERENCES raw.ingested_files (file_id),
    line_number       bigint      NOT NULL,
    line_crc          integer,    -- CRC-32 of the raw line; finds duplicate lines within a file
    user_key          text        NOT NULL,
    item_key          text        NOT NULL,
    variant_key       text,
    rating            numeric(2, 1) NOT NULL,
    event_type        text        NOT NULL,
    event_ts          timestamptz NOT NULL,
    title             text,
    body              text,
    helpful_votes     integer,
    verified_purchase boolean,
    PRIMARY KEY (file_id, line_number)
);

CREATE TABLE IF NOT EXISTS raw.products (
    file_id        bigint  NOT NULL REFERENCES raw.ingested_files (file_id),
    line_number    bigint  NOT NULL,
    line_crc       integer,
    item_key       text    NOT NULL,
    title          text,
    description    text,
    main_category  text,
    categories     text[],
    store          text,
    price          numeric(12, 2),
    average_rating numeric(3, 2),
    rating_number  integer,
    details        jsonb,
    PRIMARY KEY (file_id, line_number)
);

-- User attributes (MovieLens u.user / users.dat).
CREATE TABLE IF NOT EXISTS raw.users (
    file_id     bigint NOT NULL REFERENCES raw.ingested_files (file_id),
    line_number bigint NOT NULL,
    line_crc    integer,
    user_key    text   NOT NULL,
    age         integer,
    gender      text,
    occupation  text,
    postal_code text,
    PRIMARY KEY (file_id, line_number)
);

-- Generic interaction events (view / click / like / purchase / rating).
CREATE TABLE IF NOT EXISTS raw.events (
    file_id     bigint      NOT NULL REFERENCES raw.ingested_files (file_id),
    line_number bigint      NOT NULL,
    line_crc    integer,
    user_key    text        NOT NULL,
    item_key    text        NOT NULL,
    event_type  text        NOT NULL,
    value       numeric,
    event_ts    timestamptz NOT NULL,
    quantity    integer,
    price       numeric(12, 2),
    PRIMARY KEY (file_id, line_number)
);

-- Quarantine: every record that could not be loaded, with where it came from and why.
CREATE TABLE IF NOT EXISTS raw.rejected_records (
    file_id     bigint NOT NULL REFERENCES raw.ingested_files (file_id),
    line_number bigint NOT NULL,
    raw_text    text   NOT NULL,
    reason      text   NOT NULL,
    PRIMARY KEY (file_id, line_number)
);

-- Ledgers made before namespaces existed: add the column, each file in the default namespace of its
-- format (Format.family in sources/formats.py; tests/integration/test_namespaces.py holds the two to
-- the same values). Guarded by a catalog lookup, so a current ledger is not even locked.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'raw.ingested_files'::regclass
                                             AND attname = 'namespace' AND NOT attisdropped) THEN
        ALTER TABLE raw.ingested_files ADD COLUMN namespace text;
        UPDATE raw.ingested_files SET namespace = CASE
            WHEN source_format LIKE 'amazon2023\_%' THEN 'amazon2023'
            WHEN source_format LIKE 'amazon2014\_%' THEN 'amazon2014'
            WHEN source_format LIKE 'movielens\_100k\_%' THEN 'movielens_100k'
            WHEN source_format LIKE 'movielens\_dat\_%' THEN 'movielens_dat'
            WHEN source_format LIKE 'movielens\_csv\_%' THEN 'movielens_csv'
            WHEN source_format LIKE 'events\_%' THEN 'events'
            ELSE 'legacy'
        END;
        ALTER TABLE raw.ingested_files ALTER COLUMN namespace SET NOT NULL,
            ADD CONSTRAINT ingested_files_namespace_check CHECK (namespace ~ '^[a-z][a-z0-9_]{0,39}$');
    END IF;
END
$$;

-- The ledger's lookup by path (a re-run skips a known file without hashing it). Guarded by a catalog
-- lookup: CREATE INDEX IF NOT EXISTS would still lock the table, and this runs before every load.
DO $$
BEGIN
    IF to_regclass('raw.ingested_files_path_idx') IS NULL THEN
        CREATE INDEX ingested_files_path_idx ON raw.ingested_files (path);
    END IF;
END
$$;
