package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/config"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// metricValue is the value of the counter name with labels in reg, 0 if absent.
func metricValue(t *testing.T, n *testNode, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := n.metrics.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			match := true
			for k, v := range labels {
				match = match && got[k] == v
			}
			if match {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// Anyone who can publish to the cluster's Redis can send a node an
// sfu.remove_participant. Without a message key the node carries it out;
// with one it refuses it (and counts it), while a removal another node
// sends through its RoomService still arrives.
func TestClusterForgedRemoval(t *testing.T) {
	if testing.Short() {
		t.Skip("runs redis-server and two SFU nodes")
	}
	for _, signed := range []bool{false, true} {
		name := "without key"
		if signed {
			name = "with key"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			rds, err := harness.StartRedis(ctx, t.TempDir())
			require.NoError(t, err)
			t.Cleanup(rds.Stop)
			var edits []func(*config.Config)
			if signed {
				keyFile := filepath.Join(t.TempDir(), "message-key")
				require.NoError(t, os.WriteFile(keyFile, []byte("message-key-of-the-forgery-test-0123456789\n"), 0o600))
				edits = append(edits, func(c *config.Config) { c.Cluster.MessageKeyFile = keyFile })
			}
			a, b := startTestNode(t, rds.Addr, "node-a", edits...), startTestNode(t, rds.Addr, "node-b", edits...)
			require.Eventually(t, func() bool { return len(a.node.reg.Nodes()) == 2 && len(b.node.reg.Nodes()) == 2 },
				10*time.Second, 20*time.Millisecond, "the nodes do not see each other")
			carol := joinTestNode(t, b, "room", "carol", false)
			present := func() bool {
				ps, err := b.srv.LocalParticipants("room")
				return err == nil && slices.ContainsFunc(ps, func(p *livekit.ParticipantInfo) bool { return p.GetIdentity() == "carol" })
			}
			require.Eventually(t, present, 10*time.Second, 20*time.Millisecond)

			// The forgery, straight into node-b's inbox, as if from node-a.
			raw := redis.NewClient(&redis.Options{Addr: rds.Addr, DisableIdentity: true})
			t.Cleanup(func() { _ = raw.Close() })
			const inbox = "gx:node:node-b:msg"
			require.Eventually(t, func() bool { return raw.PubSubNumSub(ctx, inbox).Val()[inbox] == 1 }, 10*time.Second, 20*time.Millisecond)
			req, err := proto.Marshal(&livekit.RoomParticipantIdentity{Room: "room", Identity: "carol"})
			require.NoError(t, err)
			forged, err := cluster.MarshalMessage(cluster.Message{From: "node-a", FromEpoch: a.node.reg.Self().Epoch, Topic: removeTopic, Payload: req})
			require.NoError(t, err)
			require.NoError(t, raw.Publish(ctx, inbox, forged).Err())
			if !signed {
				select {
				case <-carol.gone:
				case <-time.After(10 * time.Second):
					t.Fatal("the forged removal did not remove carol")
				}
				return
			}
			refused := map[string]string{"kind": cluster.KindMessage, "reason": cluster.RefusedUnsigned}
			require.Eventually(t, func() bool {
				return metricValue(t, b, "gxconf_cluster_refused_publications_total", refused) == 1
			}, 10*time.Second, 20*time.Millisecond, "node-b did not refuse the forgery")
			require.True(t, present(), "the forged removal removed carol")
			select {
			case <-carol.gone:
				t.Fatal("carol was disconnected")
			default:
			}

			// Signed: node-a's RoomService finds carol on node-b and removes her.
			rsA := lksdk.NewRoomServiceClient(a.httpURL(), testAPIKey, testAPISecret)
			_, err = rsA.RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "room", Identity: "carol"})
			require.NoError(t, err)
			select {
			case <-carol.gone:
			case <-time.After(10 * time.Second):
				t.Fatal("the signed removal did not remove carol")
			}
		})
	}
}
