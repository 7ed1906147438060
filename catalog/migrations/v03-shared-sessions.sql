-- v2 -> v3: open sessions and admitted participants not connected yet, shared by every replica
CREATE TABLE catalog_session (
	-- the LiveKit room the session runs in
	lk_room    TEXT   PRIMARY KEY,
	booking_id TEXT   NOT NULL REFERENCES catalog_booking (id),
	meeting    TEXT   NOT NULL,
	-- Unix milliseconds: opened, last seen with a participant, usage accounted until
	opened_at  BIGINT NOT NULL,
	last_seen  BIGINT NOT NULL,
	sampled_at BIGINT NOT NULL
);

CREATE INDEX catalog_session_booking_idx ON catalog_session (booking_id, meeting);

CREATE TABLE catalog_pending (
	lk_room     TEXT   NOT NULL,
	identity    TEXT   NOT NULL,
	-- Unix milliseconds
	admitted_at BIGINT NOT NULL,
	PRIMARY KEY (lk_room, identity)
);
