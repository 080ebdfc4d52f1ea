-- Every version of the data dictionary the database has been described by, in full, so
-- `governance catalog diff` can say what changed between two of them and `governance
-- versions` when each came into force. `migrate` adds a row whenever the release's
-- dictionary differs from every recorded one (a changed description needs no migration).
CREATE TABLE dictionary_versions (
    digest text PRIMARY KEY,
    release text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    content jsonb NOT NULL
);
