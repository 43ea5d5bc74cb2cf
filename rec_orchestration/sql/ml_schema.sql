-- The model stage's history tables in schema ml (readable by rec_analyst, never by rec_reader).
CREATE SCHEMA IF NOT EXISTS ml;

-- Every evaluated model version's metrics at k on the shared held-out split.
CREATE TABLE IF NOT EXISTS ml.model_evaluations (
    model_name     text NOT NULL,
    model_version  text NOT NULL,
    k              integer NOT NULL,
    precision_at_k double precision NOT NULL,
    recall_at_k    double precision NOT NULL,
    ndcg_at_k      double precision NOT NULL,
    map            double precision NOT NULL,
    coverage       double precision NOT NULL,
    users          integer NOT NULL,
    fit_seconds    double precision NOT NULL,
    data_version   text NOT NULL,
    split          jsonb NOT NULL,
    params         jsonb NOT NULL,
    evaluated_at   timestamptz NOT NULL,
    PRIMARY KEY (model_name, model_version, k)
);

-- The champion each run chose, the popularity baseline it was compared with (baseline_name: the stronger on
-- the holdout, popularity or popularity_plain; its version and nDCG), whether it beat it, and the refit that
-- was deployed. baseline_name defaults to popularity, the only baseline before there were two, so rows
-- written without it (older warehouses, older tools) say what they meant.
CREATE TABLE IF NOT EXISTS ml.model_champions (
    run_id              text PRIMARY KEY,
    chosen_at           timestamptz NOT NULL,
    model_name          text NOT NULL,
    model_version       text NOT NULL,
    k                   integer NOT NULL,
    ndcg_at_k           double precision NOT NULL,
    baseline_version    text NOT NULL,
    baseline_ndcg_at_k  double precision NOT NULL,
    required_lift       double precision NOT NULL,
    beats_baseline      boolean NOT NULL,
    deployed_version    text,
    baseline_name       text NOT NULL DEFAULT 'popularity'
);

-- Warehouses made before there were two baselines gain baseline_name (last, as above; their rows were all
-- compared with popularity). Checked first, so a run where the column exists takes no lock on the table.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'ml.model_champions'::regclass
                   AND attname = 'baseline_name' AND NOT attisdropped) THEN
        ALTER TABLE ml.model_champions ADD COLUMN IF NOT EXISTS baseline_name text NOT NULL DEFAULT 'popularity';
    END IF;
END
$$;

-- The scoring shards (assets/scoring.py): one row per shard of a shard count, saying what its table
-- ml.scored_users_<shard>_of_<shard_count> was scored on (basis) and with which reason thresholds. A shard
-- replaces its table and its row in one transaction; publishing takes only shards of one basis.
CREATE TABLE IF NOT EXISTS ml.scoring_shards (
    shard_count     integer NOT NULL,
    shard           integer NOT NULL,
    basis           text NOT NULL,
    run_id          text NOT NULL,
    user_count      bigint NOT NULL,
    row_count       bigint NOT NULL,
    min_support     integer NOT NULL,
    min_similarity  double precision NOT NULL,
    scored_at       timestamptz NOT NULL,
    PRIMARY KEY (shard_count, shard)
);

-- What every user's rows depend on (shards.py: the champion's version, the serving settings, the shard count,
-- the scoring code), how many users the latest scoring rescored, and when every user last was: while the
-- serving key stays, a shard rescores only the users whose history digest (ml.scored_users_<shard>_of_<n>
-- _histories) changed. Added to warehouses made before; a NULL serving key rescores every user.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'ml.scoring_shards'::regclass
                   AND attname = 'serving_key' AND NOT attisdropped) THEN
        ALTER TABLE ml.scoring_shards ADD COLUMN IF NOT EXISTS serving_key text,
                                      ADD COLUMN IF NOT EXISTS rescored_users bigint,
                                      ADD COLUMN IF NOT EXISTS scored_fully_at timestamptz;
    END IF;
END
$$;

-- A hash of the ml.item_similarity rows the strong neighbour pairs a shard keeps in
-- ml.scored_users_<shard>_of_<n>_reasons were reckoned from: a shard rescoring changed users reuses them while
-- the rows it reads hash the same.
-- Added to warehouses made before; NULL reckons the evidence again.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'ml.scoring_shards'::regclass
                   AND attname = 'reasons_basis' AND NOT attisdropped) THEN
        ALTER TABLE ml.scoring_shards ADD COLUMN IF NOT EXISTS reasons_basis text;
    END IF;
END
$$;

-- What ml.item_similarity was computed from (assets/similarity.py): a hash of the interactions, the
-- products' texts, the LightGCN version, the neighbours kept and the similarity code. One row, replaced
-- with the table in one transaction; a step whose inputs hash the same keeps the table as it is.
CREATE TABLE IF NOT EXISTS ml.item_similarity_basis (
    only_row     boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    basis        text NOT NULL,
    run_id       text NOT NULL,
    row_count    bigint NOT NULL,
    computed_at  timestamptz NOT NULL
);

-- The interactions the table was computed from and the settings it was computed with (the similarity code and
-- the neighbours kept): while they grew little and the table is young, a step keeps it (assets/similarity.py).
-- Added to warehouses made before; NULL recomputes.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'ml.item_similarity_basis'::regclass
                   AND attname = 'n_interactions' AND NOT attisdropped) THEN
        ALTER TABLE ml.item_similarity_basis ADD COLUMN IF NOT EXISTS n_interactions bigint,
                                             ADD COLUMN IF NOT EXISTS settings text;
    END IF;
END
$$;

-- Each refresh's decision for its models (ml/training_round): keep the fits the last evaluation compared
-- (kept; versions: model name -> the version kept) while the interactions grew little since and the fits are
-- young, or fit every model on today's interactions (versions {}); and why, in figures.
CREATE TABLE IF NOT EXISTS ml.training_rounds (
    run_id          text PRIMARY KEY,
    decided_at      timestamptz NOT NULL,
    kept            boolean NOT NULL,
    n_interactions  bigint NOT NULL,
    versions        jsonb NOT NULL,
    why             text NOT NULL
);
