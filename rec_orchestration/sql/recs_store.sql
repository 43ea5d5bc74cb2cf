-- Private storage of the publications (schema recs_store; readers use the views in recs). Created if
-- missing, never altered: a change to these columns needs a migration of its own (publishing/layout.py).
CREATE TABLE IF NOT EXISTS recs_store.meta (key text PRIMARY KEY, value text NOT NULL);

CREATE TABLE IF NOT EXISTS recs_store.publications (
    publication_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id                text NOT NULL,
    model_name            text NOT NULL,
    model_version         text NOT NULL,
    evaluation            jsonb NOT NULL,
    k                     integer NOT NULL,
    users                 integer NOT NULL,
    users_personalized    integer NOT NULL,
    users_popular         integer NOT NULL,
    row_counts            jsonb NOT NULL,
    started_at            timestamptz NOT NULL,
    published_at          timestamptz NOT NULL,
    retired_at            timestamptz
);

CREATE TABLE IF NOT EXISTS recs_store.live (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    publication_id  bigint NOT NULL REFERENCES recs_store.publications,
    pinned          boolean NOT NULL DEFAULT false,
    changed_at      timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS recs_store.switches (
    switched_at       timestamptz NOT NULL,
    publication_id    bigint NOT NULL REFERENCES recs_store.publications,
    previous_id       bigint REFERENCES recs_store.publications,
    action            text NOT NULL CHECK (action IN ('publish', 'rollback', 'unpin')),
    PRIMARY KEY (switched_at, publication_id)
);
