package sfu_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/loadtest"
)

// Load counts what the node carries and measures the media bitrates the
// cluster's placement weighs.
func TestLoadCountsParticipantsTracksAndBitrate(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	require.Zero(t, ts.srv.Load().Participants)

	pub := ts.join(t, "load", "alice", nil)
	pub.publish(t, loadtest.PublishOptions{Audio: true, Video: true})
	sub := ts.join(t, "load", "bob", nil)
	sub.waitMedia(t, []string{"alice"}, 5, 10, 20*time.Second)

	require.Eventually(t, func() bool {
		l := ts.srv.Load()
		return l.Rooms == 1 && l.Participants == 2 && l.Tracks == 2 && l.BitrateIn > 0 && l.BitrateOut > 0
	}, 20*time.Second, 600*time.Millisecond, "load: %+v", ts.srv.Load())
}
