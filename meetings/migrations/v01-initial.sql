-- v0 -> v1: meetings, their participants, sent reminders, users' settings
CREATE TABLE meet_meeting (
	id         TEXT    PRIMARY KEY,
	room_id    TEXT    NOT NULL UNIQUE,
	organiser  TEXT    NOT NULL,
	-- data is the Meeting as JSON.
	data       TEXT    NOT NULL,
	cancelled  BOOLEAN NOT NULL,
	-- ends_at is the end of the last occurrence (unix ms).
	ends_at    BIGINT  NOT NULL,
	updated_at BIGINT  NOT NULL
);

CREATE INDEX meet_meeting_organiser_idx ON meet_meeting (organiser);
CREATE INDEX meet_meeting_ends_idx ON meet_meeting (ends_at);

CREATE TABLE meet_participant (
	meeting_id TEXT NOT NULL REFERENCES meet_meeting (id) ON DELETE CASCADE,
	user_id    TEXT NOT NULL,
	PRIMARY KEY (meeting_id, user_id)
);

CREATE INDEX meet_participant_user_idx ON meet_participant (user_id);

-- A row is written before a reminder is sent, so a restart never sends it
-- twice.
CREATE TABLE meet_reminder (
	meeting_id TEXT   NOT NULL,
	occurrence BIGINT NOT NULL,
	sent_at    BIGINT NOT NULL,
	PRIMARY KEY (meeting_id, occurrence)
);

CREATE TABLE meet_user (
	user_id         TEXT PRIMARY KEY,
	timezone        TEXT NOT NULL,
	-- feed_token_hash is the hex SHA-256 of the user's webcal token.
	feed_token_hash TEXT NOT NULL
);

CREATE INDEX meet_user_feed_idx ON meet_user (feed_token_hash);
