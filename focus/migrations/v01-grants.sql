-- v0 -> v1: LiveKit tokens handed out, to remove participants later
CREATE TABLE focus_grant (
	lk_room    TEXT   NOT NULL,
	identity   TEXT   NOT NULL,
	room_id    TEXT   NOT NULL,
	user_id    TEXT   NOT NULL,
	device_id  TEXT   NOT NULL,
	issued_at  BIGINT NOT NULL,
	expires_at BIGINT NOT NULL,
	PRIMARY KEY (lk_room, identity)
);

CREATE INDEX focus_grant_user_idx ON focus_grant (room_id, user_id);
CREATE INDEX focus_grant_issued_idx ON focus_grant (issued_at);
