package sfu_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/stretchr/testify/require"
	"github.com/twitchtv/twirp"
)

// TestPerformRpc: RoomService.PerformRpc over Twirp calls a method
// registered by a server-sdk-go client and returns its answer; the
// client's errors, an unknown method, an oversized payload, a participant
// that never answers and a caller without roomAdmin are answered as
// livekit-server answers them.
func TestPerformRpc(t *testing.T) {
	ts := startServer(t, nil)
	const room = "rpc"
	alice := ts.join(t, room, "alice", nil)
	require.NoError(t, alice.room.RegisterRpcMethod("greet", func(d lksdk.RpcInvocationData) (string, error) {
		if d.Payload == "fail" {
			detail := "no greeting today"
			return "", lksdk.NewRpcError(lksdk.RpcApplicationError, "refused", &detail)
		}
		return "hello " + d.Payload, nil
	}))
	joinedRaw(t, ts, room, "mute", nil) // never answers: it has no data channel

	client := func(g *auth.VideoGrant) livekit.RoomService {
		bearer := "Bearer " + ts.adminToken(t, g)
		return livekit.NewRoomServiceProtobufClient(httpURL(ts), http.DefaultClient, twirp.WithClientHooks(&twirp.ClientHooks{
			RequestPrepared: func(ctx context.Context, r *http.Request) (context.Context, error) {
				r.Header.Set("Authorization", bearer)
				return ctx, nil
			},
		}))
	}
	rs := client(&auth.VideoGrant{RoomAdmin: true, Room: room})
	ctx := context.Background()
	code := func(err error) (twirp.ErrorCode, string) {
		t.Helper()
		var te twirp.Error
		require.ErrorAs(t, err, &te)
		return te.Code(), te.Msg()
	}

	res, err := rs.PerformRpc(ctx, &livekit.PerformRpcRequest{Room: room, DestinationIdentity: "alice", Method: "greet", Payload: "world"})
	require.NoError(t, err)
	require.Equal(t, "hello world", res.GetPayload())

	_, err = rs.PerformRpc(ctx, &livekit.PerformRpcRequest{Room: room, DestinationIdentity: "alice", Method: "greet", Payload: "fail"})
	c, msg := code(err)
	require.Equal(t, twirp.Internal, c)
	require.Equal(t, "RpcError 1500: refused: no greeting today", msg)

	_, err = rs.PerformRpc(ctx, &livekit.PerformRpcRequest{Room: room, DestinationIdentity: "alice", Method: "nope"})
	c, msg = code(err)
	require.Equal(t, twirp.InvalidArgument, c)
	require.True(t, strings.HasPrefix(msg, "RpcError 1400"), msg)

	_, err = rs.PerformRpc(ctx, &livekit.PerformRpcRequest{Room: room, DestinationIdentity: "alice", Method: "greet", Payload: strings.Repeat("x", 15361)})
	c, msg = code(err)
	require.Equal(t, twirp.Malformed, c)
	require.True(t, strings.HasPrefix(msg, "RpcError 1402"), msg)

	_, err = rs.PerformRpc(ctx, &livekit.PerformRpcRequest{Room: room, DestinationIdentity: "mute", Method: "greet", ResponseTimeoutMs: 300})
	c, msg = code(err)
	require.Equal(t, twirp.Canceled, c)
	require.True(t, strings.HasPrefix(msg, "RpcError 1502"), msg)

	_, err = rs.PerformRpc(ctx, &livekit.PerformRpcRequest{Room: room, DestinationIdentity: "nobody", Method: "greet"})
	c, _ = code(err)
	require.Equal(t, twirp.NotFound, c)
	_, err = rs.PerformRpc(ctx, &livekit.PerformRpcRequest{Room: room, Method: "greet"})
	c, _ = code(err)
	require.Equal(t, twirp.InvalidArgument, c, "destination_identity is required")

	_, err = client(&auth.VideoGrant{RoomAdmin: true, Room: "elsewhere"}).PerformRpc(ctx, &livekit.PerformRpcRequest{Room: room, DestinationIdentity: "alice", Method: "greet"})
	c, _ = code(err)
	require.Equal(t, twirp.PermissionDenied, c, "roomAdmin of another room")

	// The call still works after all that: nothing was left pending.
	res, err = rs.PerformRpc(ctx, &livekit.PerformRpcRequest{Room: room, DestinationIdentity: "alice", Method: "greet", Payload: "again"})
	require.NoError(t, err)
	require.Equal(t, "hello again", res.GetPayload())
	require.Zero(t, ts.srv.PendingRPCs(room, "alice"))
	require.Zero(t, ts.srv.PendingRPCs(room, "mute"))
	// A participant that leaves while called: the call ends at once.
	joinedRaw(t, ts, room, "leaver", nil)
	gone := make(chan error, 1)
	go func() {
		_, err := rs.PerformRpc(ctx, &livekit.PerformRpcRequest{Room: room, DestinationIdentity: "leaver", Method: "greet", ResponseTimeoutMs: 60000})
		gone <- err
	}()
	require.Eventually(t, func() bool { return ts.srv.PendingRPCs(room, "leaver") == 1 }, 10*time.Second, 10*time.Millisecond)
	_, err = ts.srv.RoomService().RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: room, Identity: "leaver"})
	require.NoError(t, err)
	c, msg = code(<-gone)
	require.Equal(t, twirp.Unavailable, c)
	require.True(t, strings.HasPrefix(msg, "RpcError 1503"), msg)

	for outcome, n := range map[string]float64{"answered": 2, "error": 2, "refused": 1, "timeout": 1, "gone": 1, "canceled": 0} {
		require.Equal(t, n, ts.metricWith(t, "gxconf_sfu_rpc_calls_total", "outcome", outcome), outcome)
	}
}
