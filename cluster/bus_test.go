package cluster

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEmbeddedBus(t *testing.T) {
	ctx := context.Background()
	e := newTestEmbedded(t)
	require.ErrorIs(t, e.Send(ctx, "solo", "relay", []byte("x")), ErrNotDelivered, "no inbox yet")
	in := e.Listen("relay", 1)
	require.NoError(t, e.Send(ctx, "solo", "relay", []byte("hello")))
	msg := <-in.C()
	require.Equal(t, Message{From: "solo", FromEpoch: e.Self().Epoch, Topic: "relay", Payload: []byte("hello")}, msg)
	require.NoError(t, e.Send(ctx, "solo", "relay", nil))
	require.NoError(t, e.Send(ctx, "solo", "relay", nil), "a full inbox drops")
	require.Equal(t, uint64(1), in.Dropped())
	require.ErrorIs(t, e.Send(ctx, "other", "relay", nil), ErrNotDelivered)
	require.Error(t, e.Send(ctx, "solo", "bad topic", nil))
	require.Error(t, e.Send(ctx, "solo", "relay", make([]byte, MaxPayload+1)))
	in.Close()
	_, ok := <-in.C()
	require.True(t, ok, "the queued message is still there")
	_, ok = <-in.C()
	require.False(t, ok)
	in.Close()
}

func TestRedisBus(t *testing.T) {
	t.Run("unsigned", func(t *testing.T) { testRedisBus(t, "") })
	// The largest payload fits a signed envelope.
	t.Run("signed", func(t *testing.T) { testRedisBus(t, testMessageKey(t, testKey)) })
}

func testRedisBus(t *testing.T, keyFile string) {
	srv := startRedis(t)
	ctx := context.Background()
	cfgA, cfgB := testRedisConfig(t, srv.addr, "a", "S"), testRedisConfig(t, srv.addr, "b", "S")
	cfgA.MessageKeyFile, cfgB.MessageKeyFile = keyFile, keyFile
	a := startNode(t, cfgA)
	b := startNode(t, cfgB)
	inB := b.Listen("bridge.offer", 8)
	require.Eventually(t, func() bool { return a.Connected() && b.Connected() }, waitFor, tick)
	big := make([]byte, MaxPayload)
	for i := range big {
		big[i] = byte(i)
	}
	// b's subscription may still be under way: retry until delivered.
	require.Eventually(t, func() bool { return a.Send(ctx, "b", "bridge.offer", []byte(`{"sdp":"v=0"}`)) == nil }, waitFor, tick)
	msg := <-inB.C()
	require.Equal(t, NodeID("a"), msg.From)
	require.Equal(t, a.Self().Epoch, msg.FromEpoch)
	require.Equal(t, "bridge.offer", msg.Topic)
	require.JSONEq(t, `{"sdp":"v=0"}`, string(msg.Payload))
	require.NoError(t, a.Send(ctx, "b", "bridge.offer", big))
	for msg = range inB.C() {
		if len(msg.Payload) == MaxPayload {
			break
		}
	}
	require.Equal(t, big, msg.Payload)
	require.ErrorIs(t, a.Send(ctx, "nobody", "bridge.offer", nil), ErrNotDelivered)
	b.stop(t)
	require.ErrorIs(t, a.Send(ctx, "b", "bridge.offer", nil), ErrNotDelivered)
	_, ok := <-inB.C()
	require.False(t, ok, "Run closed the inbox")
	require.Empty(t, b.SigningStats().Refused)
}
