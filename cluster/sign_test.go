package cluster

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testMessageKey writes a message key file and returns its path.
func testMessageKey(t testing.TB, key string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "message-key")
	require.NoError(t, os.WriteFile(p, []byte(key+"\n"), 0o600))
	return p
}

const testKey = "message-key-of-the-cluster-tests-0123456789"

func TestMessageKeyConfig(t *testing.T) {
	base := testRedisConfig(t, "127.0.0.1:6379", "a", "S")
	for name, tc := range map[string]struct {
		edit func(*Config)
		key  string // the error names it; "" for none
	}{
		"good":                {func(c *Config) { c.MessageKeyFile = testMessageKey(t, testKey) }, ""},
		"transition":          {func(c *Config) { c.MessageKeyFile, c.MessageKeyAcceptUnsigned = testMessageKey(t, testKey), true }, ""},
		"short":               {func(c *Config) { c.MessageKeyFile = testMessageKey(t, "short-secret") }, "message_key_file:"},
		"missing":             {func(c *Config) { c.MessageKeyFile = filepath.Join(t.TempDir(), "none") }, "message_key_file:"},
		"accept without key":  {func(c *Config) { c.MessageKeyAcceptUnsigned = true }, "message_key_accept_unsigned:"},
		"key without cluster": {func(c *Config) { c.MessageKeyFile, c.Redis.Address = testMessageKey(t, testKey), "" }, "message_key_file:"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := base
			tc.edit(&cfg)
			err := cfg.Validate()
			if tc.key == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.key)
			require.NotContains(t, err.Error(), "short-secret", "the key was shown")
		})
	}
}

// refusals is a node's count of refused publications of kind for reason.
func refusals(r *Redis, kind, reason string) uint64 {
	for _, c := range r.SigningStats().Refused {
		if c.Kind == kind && c.Reason == reason {
			return c.Count
		}
	}
	return 0
}

// With a message key, a node refuses messages and events that anyone
// with write access to Redis could publish: unsigned, signed with another
// key, replayed, sent too long ago, signed for another channel, or
// signed by another sender than the one they name. Signed ones flow.
func TestRedisSignedPublications(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	raw := srv.client(t, "")
	keyFile := testMessageKey(t, testKey)
	cfgA, cfgB := testRedisConfig(t, srv.addr, "a", "S"), testRedisConfig(t, srv.addr, "b", "S")
	cfgA.MessageKeyFile, cfgB.MessageKeyFile = keyFile, keyFile
	a, b := startNode(t, cfgA), startNode(t, cfgB)
	inB := b.Listen("t", 8)
	evB := record(t, b)
	const inbox = "gxtest:node:b:msg"
	// What a sends b, as it crosses Redis (to replay it).
	sub := raw.Subscribe(ctx, inbox)
	t.Cleanup(func() { _ = sub.Close() })
	_, err := sub.Receive(ctx)
	require.NoError(t, err)
	waitBus(t, a, "b")
	require.NoError(t, a.Send(ctx, "b", "t", []byte("hello")))
	select {
	case m := <-inB.C():
		require.Equal(t, "hello", string(m.Payload))
	case <-time.After(waitFor):
		require.FailNow(t, "the signed message did not arrive")
	}
	// The envelope of "hello", which b has seen. Not a probe of waitBus:
	// the first ones were published while only this subscription listened
	// (Send succeeds once anyone does), so b never saw them and a replay of
	// one is news to it.
	var captured []byte
	for captured == nil {
		m, err := sub.ReceiveMessage(ctx)
		require.NoError(t, err)
		var w wireSigned
		require.NoError(t, decodeStrict([]byte(m.Payload), &w), "unsigned: %s", m.Payload)
		if msg, err := ParseMessage(w.Body); err == nil && msg.Topic == "t" && string(msg.Payload) == "hello" {
			captured = []byte(m.Payload)
		}
	}
	a.AddParticipant(ParticipantEntry{Room: "r", Identity: "alice"})
	evB.wait(t, "alice added", func(ev Event) bool { return ev.Type == EventParticipantAdded && ev.Identity == "alice" })

	epochA := a.Self().Epoch
	forged, err := MarshalMessage(Message{From: "a", FromEpoch: epochA, Topic: "t", Payload: []byte("forged")})
	require.NoError(t, err)
	right := newSigner([]byte(testKey), false, "a", epochA, time.Now, nopLog())
	other := newSigner([]byte(strings.Repeat("k", 32)), false, "a", epochA, time.Now, nopLog())
	seal := func(s *signer, channel string, body []byte, node NodeID, epoch uint64, at time.Time) []byte {
		b, err := s.sealAs(channel, body, node, epoch, at)
		require.NoError(t, err)
		return b
	}
	now := time.Now()
	for _, tc := range []struct {
		name, reason string
		payload      []byte
	}{
		{"unsigned", RefusedUnsigned, forged},
		{"replayed", RefusedReplayed, captured},
		{"another key", RefusedBadSignature, seal(other, inbox, forged, "a", epochA, now)},
		{"another inbox", RefusedBadSignature, seal(right, "gxtest:node:c:msg", forged, "a", epochA, now)},
		{"too old", RefusedStale, seal(right, inbox, forged, "a", epochA, now.Add(-messageWindow-time.Minute))},
		{"another sender", RefusedSender, seal(right, inbox, forged, "c", 7, now)},
	} {
		before := refusals(b.Redis, KindMessage, tc.reason)
		require.NoError(t, raw.Publish(ctx, inbox, tc.payload).Err())
		require.Eventually(t, func() bool { return refusals(b.Redis, KindMessage, tc.reason) > before }, waitFor, tick, tc.name)
	}
	require.Empty(t, inB.C(), "a forged message arrived")

	removed := func(ev Event) bool { return ev.Type == EventParticipantRemoved && ev.Identity == "alice" }
	forgedEv, err := MarshalEvent(Event{Type: EventParticipantRemoved, Node: "a", Epoch: epochA, Room: "r", Identity: "alice"})
	require.NoError(t, err)
	require.NoError(t, raw.Publish(ctx, "gxtest:events", forgedEv).Err())
	require.Eventually(t, func() bool { return refusals(b.Redis, KindEvent, RefusedUnsigned) == 1 }, waitFor, tick)
	require.False(t, evB.has(removed), "a forged event arrived")
	// The same event signed with the key is taken.
	require.NoError(t, raw.Publish(ctx, "gxtest:events", seal(right, "gxtest:events", forgedEv, "a", epochA, time.Now())).Err())
	evB.wait(t, "signed removal", removed)
}

// Turning signing on node by node: a node with the key and
// message_key_accept_unsigned takes what a node without the key sends,
// and the latter takes signed publications unverified; a node with the
// key alone refuses the unsigned ones.
func TestRedisSigningRollout(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	keyFile := testMessageKey(t, testKey)
	cfgOld := testRedisConfig(t, srv.addr, "old", "S")
	cfgMid := testRedisConfig(t, srv.addr, "mid", "S")
	cfgMid.MessageKeyFile, cfgMid.MessageKeyAcceptUnsigned = keyFile, true
	cfgNew := testRedisConfig(t, srv.addr, "new", "S")
	cfgNew.MessageKeyFile = keyFile
	old, mid, nw := startNode(t, cfgOld), startNode(t, cfgMid), startNode(t, cfgNew)
	inOld, inMid, inNew := old.Listen("t", 8), mid.Listen("t", 8), nw.Listen("t", 8)
	receive := func(in *Inbox, want string) {
		t.Helper()
		select {
		case m := <-in.C():
			require.Equal(t, want, string(m.Payload))
		case <-time.After(waitFor):
			require.FailNow(t, "no message", want)
		}
	}
	// The probes of waitBus arrive as any message would.
	waitBus(t, old, "mid")
	waitBus(t, mid, "old")
	waitBus(t, mid, "new")
	require.NoError(t, old.Send(ctx, "mid", "t", []byte("1")))
	receive(inMid, "1")
	require.NoError(t, mid.Send(ctx, "old", "t", []byte("2")))
	receive(inOld, "2")
	require.NoError(t, mid.Send(ctx, "new", "t", []byte("3")))
	receive(inNew, "3")
	require.NotZero(t, mid.SigningStats().AcceptedUnsigned[KindMessage])

	before := refusals(nw.Redis, KindMessage, RefusedUnsigned)
	require.NoError(t, old.Send(ctx, "new", "t", []byte("4")))
	require.Eventually(t, func() bool { return refusals(nw.Redis, KindMessage, RefusedUnsigned) > before }, waitFor, tick)
	require.Empty(t, inNew.C())
}
