package sfu_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/stretchr/testify/require"
)

const peerSecret = "peer-token-secret-of-fed-a-0123456789"

// mintPeer signs a token with fed-a's peer key; video is its room grant.
func mintPeer(t testing.TB, secret, identity, id string, video map[string]any) string {
	t.Helper()
	now := time.Now()
	claims := jwt.MapClaims{
		"iss": sfu.PeerAPIKey("fed-a"), "sub": identity, "jti": id,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"video": video,
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	require.NoError(t, err)
	return tok
}

func subscribeOnly(room string) map[string]any {
	return map[string]any{"roomJoin": true, "room": room, "canPublish": false, "canPublishData": false, "canSubscribe": true}
}

// TestPeerTokens: a peer's token joins only its namespace and only to
// subscribe, its grant is asked of the checker and a revocation refuses it;
// this node's own keys cannot join a peer room nor create one; peer tokens
// do not work on the RoomService.
func TestPeerTokens(t *testing.T) {
	verifyNoLeaks(t)
	fg := newFakeGrants()
	ts := startServerWith(t, nil, func(s *sfu.Server) {
		s.SetGrantChecker(fg)
		s.SetPeering(sfu.Peering{Keys: map[string]string{"fed-a": peerSecret}})
	})
	room := sfu.PeerRoomName("fed-a", "X")
	require.Equal(t, "gxpeer.fed-a.X", room)

	withGrant := func(k string, v any) map[string]any {
		g := subscribeOnly(room)
		g[k] = v
		return g
	}
	publishNil := subscribeOnly(room)
	delete(publishNil, "canPublish")
	cases := []struct {
		name   string
		token  string
		status int
	}{
		{"subscribe only", mintPeer(t, peerSecret, "bob", "tok-ok", subscribeOnly(room)), http.StatusOK},
		{"other peer's namespace", mintPeer(t, peerSecret, "bob", "t1", subscribeOnly(sfu.PeerRoomName("fed-c", "X"))), http.StatusUnauthorized},
		{"outside every namespace", mintPeer(t, peerSecret, "bob", "t2", subscribeOnly("X")), http.StatusUnauthorized},
		{"publish", mintPeer(t, peerSecret, "bob", "t3", withGrant("canPublish", true)), http.StatusUnauthorized},
		{"publish unset", mintPeer(t, peerSecret, "bob", "t4", publishNil), http.StatusUnauthorized},
		{"publish data", mintPeer(t, peerSecret, "bob", "t5", withGrant("canPublishData", true)), http.StatusUnauthorized},
		{"publish sources", mintPeer(t, peerSecret, "bob", "t6", withGrant("canPublishSources", []string{"camera"})), http.StatusUnauthorized},
		{"room admin", mintPeer(t, peerSecret, "bob", "t7", withGrant("roomAdmin", true)), http.StatusUnauthorized},
		{"room create", mintPeer(t, peerSecret, "bob", "t8", withGrant("roomCreate", true)), http.StatusUnauthorized},
		{"room record", mintPeer(t, peerSecret, "bob", "t9", withGrant("roomRecord", true)), http.StatusUnauthorized},
		{"hidden", mintPeer(t, peerSecret, "bob", "t10", withGrant("hidden", true)), http.StatusUnauthorized},
		{"own metadata", mintPeer(t, peerSecret, "bob", "t11", withGrant("canUpdateOwnMetadata", true)), http.StatusUnauthorized},
		{"wrong secret", mintPeer(t, "another-secret-0123456789abcdef0123", "bob", "t12", subscribeOnly(room)), http.StatusUnauthorized},
		{"own key into a peer room", ts.token(t, room, "mallory", nil), http.StatusUnauthorized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.status, validateStatus(t, ts, c.token))
		})
	}

	// A real join with the peer token: the checker is asked with the peer
	// room, the participant may not publish.
	ok := mintPeer(t, peerSecret, "bob", "tok-join", subscribeOnly(room))
	r, err := lksdk.ConnectToRoomWithToken(ts.url, ok, lksdk.NewRoomCallback(), lksdk.WithAutoSubscribe(true))
	require.NoError(t, err)
	require.False(t, r.LocalParticipant.Permissions().GetCanPublish())
	require.False(t, r.LocalParticipant.Permissions().GetCanPublishData())
	r.Disconnect()
	fg.mu.Lock()
	require.Contains(t, fg.checks, "tok-join")
	fg.mu.Unlock()

	// Revoked at the peer: the same token is refused.
	fg.revoke("tok-join")
	require.Equal(t, http.StatusForbidden, validateStatus(t, ts, ok))

	// The RoomService takes no peer token, and refuses peer room names.
	rs := lksdk.NewRoomServiceClient(httpURL(ts), ts.key, ts.secret)
	_, err = rs.CreateRoom(context.Background(), &livekit.CreateRoomRequest{Name: sfu.PeerRoomName("fed-a", "Y")})
	require.ErrorContains(t, err, "reserved peer namespace")
	req, _ := http.NewRequest(http.MethodPost, httpURL(ts)+"/twirp/livekit.RoomService/ListRooms", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+mintPeer(t, peerSecret, "bob", "t13", withGrant("roomList", true)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

// TestPeerTokensNeedGrantCheck: without a GrantChecker, nobody could ask
// the peer, so its tokens are refused.
func TestPeerTokensNeedGrantCheck(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServerWith(t, nil, func(s *sfu.Server) {
		s.SetPeering(sfu.Peering{Keys: map[string]string{"fed-a": peerSecret}})
	})
	tok := mintPeer(t, peerSecret, "bob", "t", subscribeOnly(sfu.PeerRoomName("fed-a", "X")))
	require.Equal(t, http.StatusUnauthorized, validateStatus(t, ts, tok))
}

func TestParsePeerRoom(t *testing.T) {
	for _, c := range []struct {
		in         string
		peer, room string
		ok         bool
	}{
		{"gxpeer.fed-a.X", "fed-a", "X", true},
		{"gxpeer.fed-a.a.b", "fed-a", "a.b", true},
		{"gxpeer.fed-a.", "", "", false},
		{"gxpeer..X", "", "", false},
		{"gxpeer.fed-a", "", "", false},
		{"X", "", "", false},
	} {
		p, r, ok := sfu.ParsePeerRoom(c.in)
		require.Equal(t, []any{c.peer, c.room, c.ok}, []any{p, r, ok}, c.in)
	}
}
