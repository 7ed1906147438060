-- v1 -> v2: grants keyed by the token's ID (jti) and revoked rather than deleted
CREATE TABLE focus_grant_v2 (
	token_id     TEXT   PRIMARY KEY,
	lk_room      TEXT   NOT NULL,
	identity     TEXT   NOT NULL,
	room_id      TEXT   NOT NULL,
	user_id      TEXT   NOT NULL,
	device_id    TEXT   NOT NULL,
	-- Unix milliseconds
	issued_at    BIGINT NOT NULL,
	-- the latest expiry of a token carrying this ID (refreshes extend it)
	expires_at   BIGINT NOT NULL,
	-- the grant's end whatever the refreshes (attestation expiry); 0: none
	not_after    BIGINT NOT NULL DEFAULT 0,
	-- 0 while the token is being issued
	activated_at BIGINT NOT NULL DEFAULT 0,
	-- 0 while the grant holds
	revoked_at   BIGINT NOT NULL DEFAULT 0
);

-- Tokens issued before the upgrade carry no ID: their rows keep removing
-- their holders and revoke them per identity.
INSERT INTO focus_grant_v2 (token_id, lk_room, identity, room_id, user_id, device_id, issued_at, expires_at, activated_at)
SELECT 'v1/' || lk_room || '/' || identity, lk_room, identity, room_id, user_id, device_id, issued_at, expires_at, issued_at
FROM focus_grant;

DROP TABLE focus_grant;
ALTER TABLE focus_grant_v2 RENAME TO focus_grant;

CREATE INDEX focus_grant_user_idx ON focus_grant (room_id, user_id);
CREATE INDEX focus_grant_identity_idx ON focus_grant (lk_room, identity);
CREATE INDEX focus_grant_expires_idx ON focus_grant (expires_at);
