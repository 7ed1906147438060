-- v0 -> v1: Latest revision

-- Presentation requests; the nonce is single use (state pending -> used).
CREATE TABLE credentials_request (
	id             TEXT PRIMARY KEY,
	nonce          TEXT NOT NULL UNIQUE,
	user_id        TEXT NOT NULL,
	room_id        TEXT NOT NULL,
	purpose        TEXT NOT NULL,
	level          TEXT NOT NULL,
	types          TEXT NOT NULL,
	claim_paths    TEXT NOT NULL,
	created_at     BIGINT NOT NULL,
	expires_at     BIGINT NOT NULL,
	state          TEXT NOT NULL,
	result         TEXT NOT NULL DEFAULT '',
	attestation_ids TEXT NOT NULL DEFAULT ''
);
CREATE INDEX credentials_request_expires_idx ON credentials_request (expires_at);

-- Attestations: what a verified credential proved, claims encrypted at rest.
CREATE TABLE credentials_attestation (
	id              TEXT PRIMARY KEY,
	user_id         TEXT NOT NULL,
	room_id         TEXT NOT NULL,
	federation      TEXT NOT NULL,
	issuer          TEXT NOT NULL,
	cred_type       TEXT NOT NULL,
	format          TEXT NOT NULL,
	holder_bound    BOOLEAN NOT NULL,
	level           TEXT NOT NULL,
	claims          BYTEA NOT NULL,
	credential_hash TEXT NOT NULL,
	status          TEXT NOT NULL,
	verified_at     BIGINT NOT NULL,
	expires_at      BIGINT NOT NULL,
	invalidated_at  BIGINT NOT NULL DEFAULT 0,
	invalid_reason  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX credentials_attestation_user_idx ON credentials_attestation (user_id);

-- Append-only, hash-chained audit log of access decisions.
CREATE TABLE credentials_audit (
	seq             BIGINT PRIMARY KEY,
	ts              BIGINT NOT NULL,
	decision        TEXT NOT NULL,
	user_id         TEXT NOT NULL,
	room_id         TEXT NOT NULL,
	level           TEXT NOT NULL,
	credential_hash TEXT NOT NULL,
	reason          TEXT NOT NULL,
	prev_hash       TEXT NOT NULL,
	hash            TEXT NOT NULL
);

-- only: sqlite until "end only"
CREATE TRIGGER credentials_audit_no_update BEFORE UPDATE ON credentials_audit
BEGIN SELECT RAISE(ABORT, 'credentials_audit is append-only'); END;
CREATE TRIGGER credentials_audit_no_delete BEFORE DELETE ON credentials_audit
BEGIN SELECT RAISE(ABORT, 'credentials_audit is append-only'); END;
-- end only sqlite

-- only: postgres until "end only"
CREATE FUNCTION credentials_audit_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'credentials_audit is append-only'; END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER credentials_audit_append_only BEFORE UPDATE OR DELETE ON credentials_audit
FOR EACH ROW EXECUTE FUNCTION credentials_audit_append_only();
-- end only postgres
