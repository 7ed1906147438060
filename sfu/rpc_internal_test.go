package sfu

import (
	"testing"

	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
)

// TestRPCReplyScopedToCallee: an answer to a server call counts only from
// the participant that was called; another participant naming the call's
// id resolves nothing (its packet is routed like any other).
func TestRPCReplyScopedToCallee(t *testing.T) {
	alice, mallory := &Participant{}, &Participant{}
	call := &pendingRPC{done: make(chan rpcResult, 1)}
	alice.rpc.pending = map[string]*pendingRPC{"RPC_1": call}
	resp := func(payload string) *livekit.DataPacket {
		return &livekit.DataPacket{Value: &livekit.DataPacket_RpcResponse{RpcResponse: &livekit.RpcResponse{
			RequestId: "RPC_1", Value: &livekit.RpcResponse_Payload{Payload: payload}}}}
	}
	ack := &livekit.DataPacket{Value: &livekit.DataPacket_RpcAck{RpcAck: &livekit.RpcAck{RequestId: "RPC_1"}}}
	require.False(t, mallory.onRPCReply(ack))
	require.False(t, mallory.onRPCReply(resp("spoofed")))
	require.Empty(t, call.done)
	require.True(t, alice.onRPCReply(ack))
	require.True(t, call.acked)
	require.True(t, alice.onRPCReply(resp("real")))
	require.Equal(t, "real", (<-call.done).payload)
	require.False(t, alice.onRPCReply(resp("again")), "answered once")
	require.False(t, alice.onRPCReply(&livekit.DataPacket{Value: &livekit.DataPacket_User{User: &livekit.UserPacket{}}}))
}
