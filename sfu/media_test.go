package sfu_test

import (
	"testing"
	"time"

	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
)

func avOpts() loadtest.PublishOptions {
	return loadtest.PublishOptions{Audio: true, Video: true}
}

// TestTwoParticipants: both publish audio + simulcast VP8, each receives
// the other's tracks intact, at the top layer by default.
func TestTwoParticipants(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	alice := ts.join(t, "two", "alice", nil)
	bob := ts.join(t, "two", "bob", nil)
	alice.publish(t, avOpts())
	bob.publish(t, avOpts())
	ids := []string{"alice", "bob"}
	alice.waitMedia(t, ids, 30, 50, 15*time.Second)
	bob.waitMedia(t, ids, 30, 50, 15*time.Second)
	t.Logf("bob got %d video frames, %d audio from alice", bob.stream("alice/video").Frames.Load(), bob.stream("alice/audio").Frames.Load())
	require.Equal(t, loadtest.VideoMarker("alice", livekit.VideoQuality_HIGH), bob.stream("alice/video").LastMarker())
	require.Equal(t, loadtest.VideoMarker("bob", livekit.VideoQuality_HIGH), alice.stream("bob/video").LastMarker())
}
