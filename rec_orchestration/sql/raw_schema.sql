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

-- Databases made by an earlier version of this file. Guarded by catalog lookups: ALTER TABLE takes an
-- ACCESS EXCLUSIVE lock even when IF NOT EXISTS makes it a no-op, and this runs before every load.
DO $$
DECLARE
    added record;
BEGIN
    FOR added IN SELECT * FROM (VALUES ('ingested_files', 'landing_entry', 'text'),
                                       ('ingested_files', 'mtime_ns', 'bigint'),
                                       ('reviews', 'line_crc', 'integer'),
                                       ('products', 'line_crc', 'integer'),
                                       ('ingested_files', 'load_seq', 'bigint UNIQUE')) AS c (tbl, col, typ)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                       WHERE table_schema = 'raw' AND table_name = added.tbl AND column_name = added.col) THEN
            EXECUTE format('ALTER TABLE raw.%I ADD COLUMN %I %s', added.tbl, added.col, added.typ);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ingested_files_record_kind_check'
               AND conrelid = 'raw.ingested_files'::regclass) THEN
        ALTER TABLE raw.ingested_files DROP CONSTRAINT ingested_files_record_kind_check;
    END IF;
    -- Files loaded before load_seq existed are numbered in file_id order, under the loaders' lock.
    IF EXISTS (SELECT 1 FROM raw.ingested_files WHERE load_seq IS NULL) THEN
        PERFORM pg_advisory_xact_lock(hashtext('rec_orchestration.load_seq'));
        UPDATE raw.ingested_files AS f SET load_seq = o.seq
        FROM (SELECT file_id,
                     row_number() OVER (ORDER BY file_id)
                     + (SELECT coalesce(max(load_seq), 0) FROM raw.ingested_files) AS seq
              FROM raw.ingested_files WHERE load_seq IS NULL) AS o
        WHERE f.file_id = o.file_id;
        PERFORM setval('raw.load_seq', (SELECT max(load_seq) FROM raw.ingested_files));
    END IF;
    IF to_regclass('raw.ingested_files_path_idx') IS NULL THEN
        CREATE INDEX ingested_files_path_idx ON raw.ingested_files (path);
    END IF;
END
$$;
