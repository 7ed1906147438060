package focus

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/credentials"
)

const peerTokenSecret = "peer-token-secret-fed-a-to-fed-b-0123456789"

// levelDecider admits everyone and reports the room at level.
type levelDecider struct{ level credentials.Level }

func (d levelDecider) Decide(context.Context, AccessRequest) (AccessDecision, error) {
	return AccessDecision{Level: d.level}, nil
}

// newPeerHarness is a focus of fed-a peered with fed-b, which serves
// remote.test's users and may relay public and kritis rooms.
func newPeerHarness(t *testing.T, level credentials.Level) *harness {
	t.Helper()
	return newHarnessOpts(t, nil, func(o *Options) {
		o.Access = levelDecider{level: level}
		o.Peering = &Peering{Self: "fed-a", Peers: []PeerRoute{{
			Name: "fed-b", URL: "wss://sfu.fed-b.test", Homeservers: []string{"remote.test"},
			Levels:      []credentials.Level{credentials.LevelPublic, credentials.LevelKritis},
			APIKey:      "gxpeer:fed-a",
			TokenSecret: peerTokenSecret,
			RoomPrefix:  "gxpeer.fed-a.",
		}}}
	})
}

var ritaID = LiveKitIdentity("@rita:remote.test", "DEV1", "member1")

// TestPeerToken: a user of the peer's homeserver gets the peer's URL and a
// subscribe-only token for our room in our namespace there, signed with the
// peer key; the grant is ours, recorded for that peer only, and revoked by
// a removal like any other. Our own users are not affected.
func TestPeerToken(t *testing.T) {
	h := newPeerHarness(t, credentials.LevelKritis)
	h.hs.issue("tok-rita", "@rita:remote.test")
	h.hs.issue("tok-alice", "@alice:local.test")
	resp, out := h.post(t, "/get_token", tokenBody("tok-rita", "remote.test", "@rita:remote.test"))
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	require.Equal(t, "wss://sfu.fed-b.test", out["url"])
	v, err := auth.ParseAPIToken(out["jwt"].(string))
	require.NoError(t, err)
	require.Equal(t, "gxpeer:fed-a", v.APIKey())
	claims, grants, err := v.Verify(peerTokenSecret)
	require.NoError(t, err)
	require.Equal(t, "gxpeer.fed-a."+aliceRoom, grants.Video.Room)
	require.Equal(t, ritaID, grants.Identity)
	require.False(t, grants.Video.GetCanPublish())
	require.False(t, grants.Video.GetCanPublishData())
	require.True(t, grants.Video.GetCanSubscribe())
	require.False(t, grants.Video.RoomAdmin || grants.Video.RoomCreate)
	require.Empty(t, h.rooms.created, "the peer's relay creates the room here when it links")
	jti := claims.ID

	ctx := context.Background()
	_, err = h.svc.CheckPeerGrant(ctx, "fed-b", jti, aliceRoom, ritaID)
	require.NoError(t, err)
	_, err = h.svc.CheckPeerGrant(ctx, "fed-c", jti, aliceRoom, ritaID)
	require.ErrorIs(t, err, ErrGrantUnknown, "another peer cannot use the grant")
	_, err = h.svc.CheckPeerGrant(ctx, "fed-b", jti, "other", ritaID)
	require.ErrorIs(t, err, ErrGrantUnknown)
	until, err := h.svc.RenewPeerGrant(ctx, "fed-b", jti, aliceRoom, ritaID, time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.True(t, until.After(time.Now()))
	ok, err := h.svc.PeerRoomGranted(ctx, "fed-b", aliceRoom)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = h.svc.PeerRoomGranted(ctx, "fed-c", aliceRoom)
	require.NoError(t, err)
	require.False(t, ok)
	ok, err = h.svc.PeerParticipantGranted(ctx, "fed-b", aliceRoom, ritaID)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = h.svc.PeerParticipantGranted(ctx, "fed-b", aliceRoom, aliceDev1)
	require.NoError(t, err)
	require.False(t, ok)

	// Our own user: our SFU, our key.
	resp, out = h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	require.Equal(t, "wss://sfu.test", out["url"])
	require.Equal(t, aliceRoom, decodeJWT(t, out["jwt"].(string)).Video.Room)
	_, err = h.svc.CheckPeerGrant(ctx, "fed-b", jwtClaims(t, out["jwt"].(string))["jti"].(string), aliceRoom, aliceDev1)
	require.ErrorIs(t, err, ErrGrantUnknown, "a grant for our SFU is no peer grant")

	// Removal by our policy: the grant is revoked (the peer's grant checks
	// refuse it) and the participant is removed from our room, which the
	// bridge carries to the peer's relay.
	n, err := h.svc.RemoveUser(ctx, "!room:local.test", "@rita:remote.test", "banned from the room")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, aliceRoom, h.rooms.removed[0].Room)
	require.Equal(t, ritaID, h.rooms.removed[0].Identity)
	_, err = h.svc.CheckPeerGrant(ctx, "fed-b", jti, aliceRoom, ritaID)
	require.ErrorIs(t, err, ErrGrantRevoked)
	ok, err = h.svc.PeerRoomGranted(ctx, "fed-b", aliceRoom)
	require.NoError(t, err)
	require.False(t, ok, "no grant, no relay")
}

// TestPeerTokenLevelNotApproved: a vs-nfd room is not relayed through a
// peer whose levels lack it: its users get our own SFU, subscribe-only, as
// without peering.
func TestPeerTokenLevelNotApproved(t *testing.T) {
	h := newPeerHarness(t, credentials.LevelVSNfD)
	h.hs.issue("tok-rita", "@rita:remote.test")
	resp, out := h.post(t, "/get_token", tokenBody("tok-rita", "remote.test", "@rita:remote.test"))
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	require.Equal(t, "wss://sfu.test", out["url"])
	grants := decodeJWT(t, out["jwt"].(string))
	require.Equal(t, aliceRoom, grants.Video.Room)
	require.False(t, grants.Video.GetCanPublish())
	ok, err := h.svc.PeerRoomGranted(context.Background(), "fed-b", aliceRoom)
	require.NoError(t, err)
	require.False(t, ok)
}

// TestPeerRenewalCappedAtTokenLifetime: the peer deployment chooses the
// "until" of a renewal (it arrives from the peer's control channel); the
// grant's expiry never moves further than one token lifetime from now, so a
// day without renewals ends the peer's right to relay the room. The same cap
// holds for our own SFU's renewals.
func TestPeerRenewalCappedAtTokenLifetime(t *testing.T) {
	h := newPeerHarness(t, credentials.LevelKritis)
	h.hs.issue("tok-rita", "@rita:remote.test")
	resp, out := h.post(t, "/get_token", tokenBody("tok-rita", "remote.test", "@rita:remote.test"))
	require.Equal(t, http.StatusOK, resp.StatusCode, out)
	jti := jwtClaims(t, out["jwt"].(string))["jti"].(string)
	ctx := context.Background()
	now := time.Now()
	h.svc.now = func() time.Time { return now }
	ttl := h.svc.cfg.TokenTTL

	until, err := h.svc.RenewPeerGrant(ctx, "fed-b", jti, aliceRoom, ritaID, now.AddDate(100, 0, 0))
	require.NoError(t, err)
	require.Equal(t, now.Add(ttl), until, "capped at one token lifetime")
	g, ok, err := h.svc.grants.get(ctx, jti)
	require.NoError(t, err)
	require.True(t, ok)
	require.False(t, g.ExpiresAt.After(now.Add(ttl)), "stored expiry %s", g.ExpiresAt)

	// A shorter until is kept as asked.
	until, err = h.svc.RenewPeerGrant(ctx, "fed-b", jti, aliceRoom, ritaID, now.Add(time.Minute))
	require.NoError(t, err)
	require.Equal(t, now.Add(time.Minute), until)

	h.svc.now = func() time.Time { return now.Add(24 * time.Hour) }
	granted, err := h.svc.PeerRoomGranted(ctx, "fed-b", aliceRoom)
	require.NoError(t, err)
	require.False(t, granted, "a day later the renewed grant has expired")
}
