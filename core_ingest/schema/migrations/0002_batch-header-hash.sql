-- Keep the header's digest too: a re-signed batch with another header is not a resend.
ALTER TABLE batches ADD COLUMN header_sha256 bytea;
