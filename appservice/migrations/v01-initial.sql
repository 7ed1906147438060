-- v0 -> v1: transactions seen and MatrixRTC call memberships
CREATE TABLE as_txn (
	txn_id      TEXT   PRIMARY KEY,
	received_at BIGINT NOT NULL
);

CREATE INDEX as_txn_received_idx ON as_txn (received_at);

CREATE TABLE as_call_member (
	room_id    TEXT   NOT NULL,
	kind       TEXT   NOT NULL,
	member_key TEXT   NOT NULL,
	user_id    TEXT   NOT NULL,
	device_id  TEXT   NOT NULL,
	member_id  TEXT   NOT NULL,
	slot_id    TEXT   NOT NULL,
	focus_url  TEXT   NOT NULL,
	expires_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL,
	PRIMARY KEY (room_id, kind, member_key)
);

CREATE INDEX as_call_member_user_idx ON as_call_member (room_id, user_id);
