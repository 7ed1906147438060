-- v1 -> v2: the first occurrence's start, for ordering feeds and lists
-- starts_at is unix ms; 0 until the service fills it in at start (it
-- expands each schedule, which SQL cannot).
ALTER TABLE meet_meeting ADD COLUMN starts_at BIGINT NOT NULL DEFAULT 0;

-- The purge of cancelled meetings reads updated_at (the cancellation).
CREATE INDEX meet_meeting_updated_idx ON meet_meeting (updated_at);
