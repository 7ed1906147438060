-- v2 -> v3: delegated delayed leave events (MSC4140), one per LiveKit participant
CREATE TABLE focus_delayed_leave (
	lk_room       TEXT   NOT NULL,
	identity      TEXT   NOT NULL,
	delay_id      TEXT   NOT NULL,
	-- milliseconds
	delay_timeout BIGINT NOT NULL,
	-- the user's homeserver, whose Client-Server API is called
	server_name   TEXT   NOT NULL,
	room_id       TEXT   NOT NULL,
	user_id       TEXT   NOT NULL,
	-- Unix milliseconds: when the delegation arrived, and the last known
	-- restart of the delayed event (it fires delay_timeout after that)
	created_at    BIGINT NOT NULL,
	restarted_at  BIGINT NOT NULL,
	-- the node running the job; '' is the only node of a single-node setup
	-- TODO(cluster): set to the node's ID and let a live node adopt the
	-- rows of a dead one.
	node_id       TEXT   NOT NULL DEFAULT '',
	PRIMARY KEY (lk_room, identity)
);

CREATE INDEX focus_delayed_leave_user_idx ON focus_delayed_leave (room_id, user_id);
