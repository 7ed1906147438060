package focus

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
)

// getToken asks for alice's token in !room:local.test with device dev and
// returns it with its JWT ID.
func (h *harness) getToken(t *testing.T, dev string) (string, string) {
	t.Helper()
	body := tokenBody("tok-alice", "local.test", "@alice:local.test")
	body["member"].(map[string]any)["claimed_device_id"] = dev
	resp, out := h.post(t, "/get_token", body)
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	jwt := out["jwt"].(string)
	jti, _ := jwtClaims(t, jwt)["jti"].(string)
	return jwt, jti
}

var (
	aliceRoom = LiveKitRoomAlias("!room:local.test", "m.call#ROOM")
	aliceDev1 = LiveKitIdentity("@alice:local.test", "DEV1", "member1")
)

// Every token carries a unique ID (≥128 bits) naming its grant; the grant
// admits only its own room and identity.
func TestTokensCarryGrantID(t *testing.T) {
	h := newHarness(t, nil)
	h.hs.issue("tok-alice", "@alice:local.test")
	before := time.Now().Truncate(time.Millisecond)
	_, id1 := h.getToken(t, "DEV1")
	_, id2 := h.getToken(t, "DEV1")
	require.GreaterOrEqual(t, len(id1), 22, "at least 128 bits in base64url")
	require.NotEqual(t, id1, id2)

	ctx := context.Background()
	issued, err := h.svc.CheckGrant(ctx, id1, aliceRoom, aliceDev1, time.Now())
	require.NoError(t, err)
	require.False(t, issued.Before(before), "the grant's issue time, to the millisecond")
	for name, c := range map[string][3]string{
		"unknown id":     {"nope", aliceRoom, aliceDev1},
		"other room":     {id1, "other", aliceDev1},
		"other identity": {id1, aliceRoom, "someone"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := h.svc.CheckGrant(ctx, c[0], c[1], c[2], time.Now())
			require.ErrorIs(t, err, ErrGrantUnknown)
		})
	}
}

// A removal revokes every grant of the user in the room, connected or not;
// a token issued afterwards (a re-joined user, even in the same second) is
// not affected.
func TestRemoveUserRevokesUnusedTokens(t *testing.T) {
	for _, reason := range []string{"left the room", "removed from the room", "banned from the room"} {
		t.Run(reason, func(t *testing.T) {
			h := newHarness(t, nil)
			h.hs.issue("tok-alice", "@alice:local.test")
			_, connected := h.getToken(t, "DEV1")
			_, unused := h.getToken(t, "DEV2")
			h.rooms.absent[LiveKitIdentity("@alice:local.test", "DEV2", "member1")] = true
			ctx := context.Background()

			n, err := h.svc.RemoveUser(ctx, "!room:local.test", "@alice:local.test", reason)
			require.NoError(t, err)
			require.Equal(t, 1, n, "the connected participant is removed")
			_, err = h.svc.CheckGrant(ctx, connected, aliceRoom, aliceDev1, time.Now())
			require.ErrorIs(t, err, ErrGrantRevoked)
			_, err = h.svc.CheckGrant(ctx, unused, aliceRoom, LiveKitIdentity("@alice:local.test", "DEV2", "member1"), time.Now())
			require.ErrorIs(t, err, ErrGrantRevoked, "a token never used is revoked too")
			_, err = h.svc.RenewGrant(ctx, connected, aliceRoom, aliceDev1, time.Now().Add(time.Hour))
			require.ErrorIs(t, err, ErrGrantRevoked, "no refresh after the removal")
			// A token without ID for the same identity, issued in the second of
			// the removal or before, is refused too.
			_, err = h.svc.CheckGrant(ctx, "", aliceRoom, aliceDev1, time.Now())
			require.ErrorIs(t, err, ErrGrantRevoked)

			n, err = h.svc.RemoveUser(ctx, "!room:local.test", "@alice:local.test", reason)
			require.NoError(t, err)
			require.Zero(t, n, "nothing left to remove")
			require.Len(t, h.rooms.removed, 1)

			// Back in the room at once: the new token works.
			_, fresh := h.getToken(t, "DEV1")
			_, err = h.svc.CheckGrant(ctx, fresh, aliceRoom, aliceDev1, time.Now())
			require.NoError(t, err)
		})
	}
}

// A leave processed between the membership check and the grant's activation
// revokes the grant: the token is not handed out.
func TestLeaveWhileIssuingRevokes(t *testing.T) {
	h := newHarness(t, nil)
	h.hs.issue("tok-alice", "@alice:local.test")
	h.svc.afterMembershipCheck = func() {
		_, err := h.svc.RemoveUser(context.Background(), "!room:local.test", "@alice:local.test", "left the room")
		require.NoError(t, err)
	}
	resp, out := h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.Equal(t, http.StatusForbidden, resp.StatusCode, out)
	require.Equal(t, "M_FORBIDDEN", out["errcode"])
	require.Empty(t, out["jwt"])
	active, err := h.svc.grants.roomsForUser(context.Background(), "@alice:local.test")
	require.NoError(t, err)
	require.Empty(t, active, "no active grant is left")

	h.svc.afterMembershipCheck = nil
	_, id := h.getToken(t, "DEV1")
	_, err = h.svc.CheckGrant(context.Background(), id, aliceRoom, aliceDev1, time.Now())
	require.NoError(t, err)
}

// Revocations are in the database: a restarted focus still refuses the
// tokens.
func TestRevocationSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := "file:" + filepath.Join(t.TempDir(), "focus.db") + "?_txlock=immediate"
	open := func() (*Service, *dbutil.Database) {
		db, err := dbutil.NewWithDialect(path, "sqlite3-fk-wal")
		require.NoError(t, err)
		cfg := DefaultConfig()
		cfg.SFU = SFUConfig{URL: "wss://sfu.test", APIKey: testKey, APISecret: testSecret}
		svc, err := New(ctx, Options{Config: cfg, LocalDomain: "local.test", DB: db, Rooms: &fakeRooms{absent: map[string]bool{}},
			Members: fakeMembers{}, Log: zerolog.New(zerolog.NewTestWriter(t)), Registerer: prometheus.NewRegistry()})
		require.NoError(t, err)
		return svc, db
	}
	svc, db := open()
	now := time.Now()
	require.NoError(t, svc.grants.reserve(ctx, Grant{TokenID: "jti-1", LiveKitRoom: "lk", Identity: "id", RoomID: "!r",
		UserID: "@u:local.test", DeviceID: "D", IssuedAt: now, ExpiresAt: now.Add(time.Hour)}))
	require.NoError(t, svc.grants.activate(ctx, "jti-1", now.Add(time.Hour), time.Time{}, now, ""))
	_, err := svc.CheckGrant(ctx, "jti-1", "lk", "id", now)
	require.NoError(t, err)
	_, err = svc.RemoveUser(ctx, "!r", "@u:local.test", "banned from the room")
	require.NoError(t, err)
	require.NoError(t, db.Close())

	svc, db = open()
	defer db.Close()
	_, err = svc.CheckGrant(ctx, "jti-1", "lk", "id", now)
	require.ErrorIs(t, err, ErrGrantRevoked)
	_, err = svc.CheckGrant(ctx, "", "lk", "id", now)
	require.ErrorIs(t, err, ErrGrantRevoked, "per identity too")
}

// A grant ends with the attestation: a refresh is capped at it and fails
// after it, and the token is refused at join after it.
func TestGrantEndsWithAttestation(t *testing.T) {
	h := newHarness(t, nil)
	h.hs.issue("tok-alice", "@alice:local.test")
	notAfter := time.Now().Add(2 * time.Minute).Truncate(time.Millisecond)
	h.svc.access = deciderFunc(func(context.Context, AccessRequest) (AccessDecision, error) {
		return AccessDecision{NotAfter: notAfter}, nil
	})
	_, id := h.getToken(t, "DEV1")
	ctx := context.Background()
	exp, err := h.svc.RenewGrant(ctx, id, aliceRoom, aliceDev1, time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.True(t, exp.Equal(notAfter), "capped at the attestation's expiry: %s", exp)
	exp, err = h.svc.RenewGrant(ctx, id, aliceRoom, aliceDev1, time.Now().Add(time.Minute))
	require.NoError(t, err)
	require.True(t, exp.Before(notAfter))

	h.svc.now = func() time.Time { return notAfter.Add(time.Second) }
	_, err = h.svc.RenewGrant(ctx, id, aliceRoom, aliceDev1, notAfter.Add(time.Hour))
	require.ErrorIs(t, err, ErrGrantExpired)
	_, err = h.svc.CheckGrant(ctx, id, aliceRoom, aliceDev1, time.Now())
	require.ErrorIs(t, err, ErrGrantExpired)
}

// Credential revocation or expiry (RecheckUser) revokes the grants of users
// who are not connected as well.
func TestRecheckUserRevokesGrants(t *testing.T) {
	h := newHarness(t, nil)
	h.hs.issue("tok-alice", "@alice:local.test")
	_, id := h.getToken(t, "DEV1")
	h.rooms.absent[aliceDev1] = true // holds the token, not connected
	h.svc.access = deciderFunc(func(context.Context, AccessRequest) (AccessDecision, error) {
		return AccessDecision{}, &DeniedError{Reason: "credential revoked"}
	})
	rooms, err := h.svc.RecheckUser(context.Background(), "@alice:local.test", "their credential was revoked")
	require.NoError(t, err)
	require.Empty(t, rooms, "nobody was connected")
	_, err = h.svc.CheckGrant(context.Background(), id, aliceRoom, aliceDev1, time.Now())
	require.ErrorIs(t, err, ErrGrantRevoked)
}

// Tokens without ID are refused if their identity's grant was revoked in or
// after the second of their iat (whole-second JWT times).
func TestTokenWithoutIDRevokedPerIdentity(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	revokedAt := time.UnixMilli(1_700_000_000_500)
	h.svc.now = func() time.Time { return revokedAt }
	require.NoError(t, h.svc.grants.reserve(ctx, Grant{TokenID: "j", LiveKitRoom: "lk", Identity: "id", RoomID: "!r",
		UserID: "@u", IssuedAt: revokedAt.Add(-time.Minute), ExpiresAt: revokedAt.Add(time.Hour)}))
	_, err := h.svc.RemoveUser(ctx, "!r", "@u", "left the room")
	require.NoError(t, err)
	for _, c := range []struct {
		name string
		iat  time.Time
		ok   bool
	}{
		{"earlier second", time.Unix(1_699_999_999, 0), false},
		{"same second", time.Unix(1_700_000_000, 0), false},
		{"next second", time.Unix(1_700_000_001, 0), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := h.svc.CheckGrant(ctx, "", "lk", "id", c.iat)
			if c.ok {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, ErrGrantRevoked)
			}
		})
	}
	_, err = h.svc.CheckGrant(ctx, "", "lk", "other", time.Unix(1_699_999_999, 0))
	require.NoError(t, err, "other identities are unaffected")
}
