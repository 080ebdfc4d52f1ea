-- Interval ends on the grid; the device clock's offset kept beside them.
ALTER TABLE meter_readings ADD COLUMN clock_offset_s smallint NOT NULL DEFAULT 0;
ALTER TABLE reading_quarantine ADD COLUMN clock_offset_s smallint NOT NULL DEFAULT 0;
