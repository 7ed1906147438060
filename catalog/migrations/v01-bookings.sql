-- v0 -> v1: bookings, the rooms bound to them and the status list index
CREATE TABLE catalog_booking (
	id           TEXT   PRIMARY KEY,
	org          TEXT   NOT NULL,
	state        TEXT   NOT NULL,
	-- the entitlement credential's index in the revocation status list
	status_index BIGINT NOT NULL UNIQUE,
	revoked      BOOLEAN NOT NULL DEFAULT false,
	-- Unix milliseconds
	created_at   BIGINT NOT NULL,
	-- the whole record as JSON (snapshot, window, usage)
	data         TEXT   NOT NULL
);

CREATE INDEX catalog_booking_org_idx ON catalog_booking (org);

CREATE TABLE catalog_binding (
	room_id    TEXT   PRIMARY KEY,
	booking_id TEXT   NOT NULL REFERENCES catalog_booking (id),
	-- rooms with the same meeting key count their participants together
	meeting    TEXT   NOT NULL,
	bound_at   BIGINT NOT NULL,
	bound_by   TEXT   NOT NULL
);

CREATE INDEX catalog_binding_booking_idx ON catalog_binding (booking_id);
