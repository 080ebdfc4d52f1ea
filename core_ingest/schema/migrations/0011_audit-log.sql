-- The audit trail: append-only and hash-chained, written inside the database.
--
-- Entries are appended only through audit_append(), one at a time under a transaction-scoped
-- advisory lock, each hash covering the previous entry's hash and this entry's fields. UPDATE,
-- DELETE and TRUNCATE are refused by triggers for every role; whoever can drop the triggers
-- (the owner, a superuser) is still found out: `governance audit verify` recomputes the chain
-- and names the first entry that does not hold, and a rewrite of the whole chain is caught by
-- the chain heads `governance audit seal` signs and exports.
CREATE TABLE audit_log (
    entry_id bigint PRIMARY KEY CHECK (entry_id > 0),
    at timestamptz NOT NULL,
    actor text NOT NULL,
    application text NOT NULL,
    action text NOT NULL,
    object text NOT NULL,
    detail jsonb NOT NULL,
    previous_hash bytea NOT NULL,
    hash bytea NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_action ON audit_log (action, at);

-- What an entry's hash covers, after the previous hash: each field as <length>:<text>, so no
-- field can borrow characters from its neighbour. governance/audit.py computes the same.
CREATE FUNCTION audit_entry_text(
    entry_id bigint, at timestamptz, actor text, application text, action text, object text,
    detail jsonb
) RETURNS text
LANGUAGE sql STABLE STRICT AS $$
    SELECT string_agg(length(f) || ':' || f, '' ORDER BY n)
    FROM unnest(ARRAY[
        entry_id::text,
        to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        actor, application, action, object, detail::text
    ]) WITH ORDINALITY AS t(f, n)
$$;

CREATE FUNCTION audit_append(action text, object text, detail jsonb) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    last_id bigint;
    last_hash bytea;
    new_at timestamptz;
    who text := session_user;
    app text := coalesce(current_setting('application_name', true), '');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('meterpipe.audit_log'));
    SELECT l.entry_id, l.hash INTO last_id, last_hash
    FROM audit_log l ORDER BY l.entry_id DESC LIMIT 1;
    last_id := coalesce(last_id, 0) + 1;
    last_hash := coalesce(last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
    new_at := clock_timestamp();
    INSERT INTO audit_log
    VALUES (last_id, new_at, who, app, action, object, detail, last_hash,
            sha256(last_hash || convert_to(
                audit_entry_text(last_id, new_at, who, app, action, object, detail), 'UTF8')));
    RETURN last_id;
END
$$;

CREATE FUNCTION audit_log_refuse() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'entries are added by audit_append(); nothing is changed or removed';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse();
REVOKE ALL ON audit_log FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_append(text, text, jsonb) FROM PUBLIC;

-- Changes and deletions of stored readings, whoever makes them: one entry per statement (the
-- first row it touches appends it; the core's own corrections are among them, also recorded
-- row by row in reading_corrections). Row triggers reach every partition and chunk.
CREATE FUNCTION audit_readings_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    statement text := txid_current() || '/' || statement_timestamp() || '/' || md5(current_query());
BEGIN
    IF current_setting('meterpipe.audited_statement', true) IS DISTINCT FROM statement THEN
        PERFORM set_config('meterpipe.audited_statement', statement, true);
        PERFORM audit_append('readings.' || lower(TG_OP), 'meter_readings',
                             jsonb_build_object('statement', current_query()));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER meter_readings_audited AFTER UPDATE OR DELETE ON meter_readings
    FOR EACH ROW EXECUTE FUNCTION audit_readings_changed();
CREATE FUNCTION audit_readings_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM audit_append('readings.truncate', 'meter_readings',
                         jsonb_build_object('statement', current_query()));
    RETURN NULL;
END
$$;
CREATE TRIGGER meter_readings_truncate_audited AFTER TRUNCATE ON meter_readings
    FOR EACH STATEMENT EXECUTE FUNCTION audit_readings_truncated();
