-- v1 -> v2: room access policies in force and the bot's direct-message rooms
CREATE TABLE as_room_policy (
	room_id    TEXT   PRIMARY KEY,
	-- content is the de.gxconf.access content in force; '' means none (public).
	content    TEXT   NOT NULL,
	event_id   TEXT   NOT NULL,
	sender     TEXT   NOT NULL,
	updated_at BIGINT NOT NULL
);

CREATE TABLE as_dm_room (
	user_id TEXT PRIMARY KEY,
	room_id TEXT NOT NULL
);
