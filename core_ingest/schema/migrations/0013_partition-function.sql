-- Daily partitions (native partitioning) made by a function that runs with its owner's
-- rights, so the core needs no DDL right of its own at serve time: the `ingest` role executes
-- it (`governance access init`), and it can create nothing but a day of a time-partitioned
-- table. Under TimescaleDB it is never called: chunks are TimescaleDB's.
CREATE FUNCTION ensure_daily_partition(parent text, day date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    name text := parent || '_p' || to_char(day, 'YYYYMMDD');
BEGIN
    IF parent NOT IN (${partitioned_tables}) THEN
        RAISE EXCEPTION '% is not a time-partitioned table', parent
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(name));
    EXECUTE format('CREATE TABLE IF NOT EXISTS public.%I PARTITION OF public.%I'
                   ' FOR VALUES FROM (%L) TO (%L)',
                   name, parent, day::text || ' 00:00:00+00', (day + 1)::text || ' 00:00:00+00');
END
$$;
REVOKE ALL ON FUNCTION ensure_daily_partition(text, date) FROM PUBLIC;
