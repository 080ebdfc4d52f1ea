-- Which VEE ruleset set a batch's quality flags (lineage of every flag).
ALTER TABLE batches ADD COLUMN validation_ruleset text;
