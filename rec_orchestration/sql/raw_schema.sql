-- Raw landing tables: one row per source record, loaded by binary COPY in one transaction per file.
-- Idempotent: run before every ingestion.
CREATE SCHEMA IF NOT EXISTS raw;

-- Ledger: one row per landing file content ever loaded. A content hash seen before is never loaded again.
CREATE TABLE IF NOT EXISTS raw.ingested_files (
    file_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    path           text        NOT NULL,
    content_sha256 text        NOT NULL UNIQUE,
    source_format  text        NOT NULL,
    record_kind    text        NOT NULL CHECK (record_kind IN ('reviews', 'products')),
    size_bytes     bigint      NOT NULL,
    rows_read      bigint      NOT NULL DEFAULT 0,
    rows_loaded    bigint      NOT NULL DEFAULT 0,
    rows_rejected  bigint      NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    CHECK (rows_read = rows_loaded + rows_rejected)
);

CREATE TABLE IF NOT EXISTS raw.reviews (
    file_id           bigint      NOT NULL REFERENCES raw.ingested_files (file_id),
    line_number       bigint      NOT NULL,
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

-- Quarantine: every record that could not be loaded, with where it came from and why.
CREATE TABLE IF NOT EXISTS raw.rejected_records (
    file_id     bigint NOT NULL REFERENCES raw.ingested_files (file_id),
    line_number bigint NOT NULL,
    raw_text    text   NOT NULL,
    reason      text   NOT NULL,
    PRIMARY KEY (file_id, line_number)
);
