package sfu_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// TestParticipantUpdatesCoalesced: in a room of 50 and more, updates of
// participants that publish nothing reach the others coalesced, several in
// one ParticipantUpdate, and still in order: a participant that leaves and
// rejoins at once is seen to leave (its old session DISCONNECTED) before
// its new session appears, and no session's version goes backwards.
func TestParticipantUpdatesCoalesced(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	const room = "big"
	watcher, _ := rawJoin(t, ts, room, "watcher", "")
	defer watcher.CloseNow()

	// The watcher's ParticipantUpdates, as they arrive.
	updates := make(chan *livekit.ParticipantUpdate, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		defer close(updates)
		for {
			_, data, err := watcher.Read(ctx)
			if err != nil {
				return
			}
			res := &livekit.SignalResponse{}
			if proto.Unmarshal(data, res) == nil && res.GetUpdate() != nil {
				updates <- res.GetUpdate()
			}
		}
	}()

	// 49 more: the room reaches the size from which updates are coalesced.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var others []*websocket.Conn
	for i := range 49 {
		wg.Go(func() {
			ws, first := rawJoin(t, ts, room, fmt.Sprintf("p%02d", i), "")
			require.NotNil(t, first.GetJoin())
			mu.Lock()
			others = append(others, ws)
			mu.Unlock()
		})
	}
	wg.Wait()
	defer func() {
		for _, ws := range others {
			ws.CloseNow()
		}
	}()

	// x joins, leaves and rejoins, quicker than the batching interval.
	x1, first := rawJoin(t, ts, room, "x", "")
	sid1 := first.GetJoin().GetParticipant().GetSid()
	b, err := proto.Marshal(&livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{Reason: livekit.DisconnectReason_CLIENT_INITIATED}}})
	require.NoError(t, err)
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	require.NoError(t, x1.Write(wctx, websocket.MessageBinary, b))
	x1.CloseNow()
	x2, first := rawJoin(t, ts, room, "x", "")
	defer x2.CloseNow()
	sid2 := first.GetJoin().GetParticipant().GetSid()
	require.NotEqual(t, sid1, sid2)

	// Read until x's old session has left and its new one is there.
	version := map[string]uint32{} // sid → last version seen
	var messages, infos, largest int
	var leftAt, rejoinedAt int // infos seen when x's sessions showed up
	deadline := time.After(15 * time.Second)
	for leftAt == 0 || rejoinedAt == 0 {
		var u *livekit.ParticipantUpdate
		select {
		case u = <-updates:
			require.NotNil(t, u, "the watcher's signal connection ended")
		case <-deadline:
			t.Fatalf("x's leave and rejoin not both seen: left at %d, rejoined at %d", leftAt, rejoinedAt)
		}
		messages++
		largest = max(largest, len(u.GetParticipants()))
		for _, info := range u.GetParticipants() {
			infos++
			require.NotEqual(t, "watcher", info.GetIdentity(), "a participant is sent its own update")
			v, seen := version[info.GetSid()]
			require.False(t, seen && info.GetVersion() < v, "%s (%s): version %d after %d", info.GetIdentity(), info.GetSid(), info.GetVersion(), v)
			version[info.GetSid()] = info.GetVersion()
			switch {
			case info.GetSid() == sid1 && info.GetState() == livekit.ParticipantInfo_DISCONNECTED:
				leftAt = infos
			case info.GetSid() == sid2:
				require.NotZero(t, leftAt, "x's new session announced before its old one left")
				if rejoinedAt == 0 {
					rejoinedAt = infos
				}
			}
		}
	}
	t.Logf("%d participant infos in %d ParticipantUpdates (largest %d)", infos, messages, largest)
	require.Greater(t, largest, 1, "no two updates were coalesced")
	require.Less(t, messages, infos)
}

// TestFastPublishOnlyForPublishers: a client is told to set up its
// publisher connection at once (fast_publish) only if its grant lets it
// publish media or data; a subscribe-only client of a big room then costs
// one peer connection.
func TestFastPublishOnlyForPublishers(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	for _, c := range []struct {
		name       string
		media, dat bool
	}{{"media and data", true, true}, {"data only", false, true}, {"subscribe only", false, false}} {
		grant := func(g *auth.VideoGrant) {
			g.SetCanPublish(c.media)
			g.SetCanPublishData(c.dat)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		h := http.Header{}
		h.Set("Authorization", "Bearer "+ts.token(t, "fp", "p-"+strings.ReplaceAll(c.name, " ", "-"), grant))
		ws, _, err := websocket.Dial(ctx, ts.url+"/rtc?protocol=16&sdk=go", &websocket.DialOptions{HTTPHeader: h})
		cancel()
		require.NoError(t, err)
		j := readSignal(t, ws).GetJoin()
		require.NotNil(t, j, "first message must be join")
		require.Equal(t, c.media || c.dat, j.GetFastPublish(), c.name)
		ws.CloseNow()
	}
}

// TestRejoinWhileLeaving: a client's leave and its rejoin race — the old
// session's close has begun (its Leave was read) but not yet announced
// when the new session joins. The others must still see the old session
// DISCONNECTED before the new one (clients key participants by identity;
// the other order would remove the new session). The old session's close
// is held until the join waits for it (or, were the join not to wait,
// until the others see the new session).
func TestRejoinWhileLeaving(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	const room = "rejoin"
	watcher, _ := rawJoin(t, ts, room, "watcher", "")
	defer watcher.CloseNow()
	x1, first := rawJoin(t, ts, room, "x", "")
	defer x1.CloseNow()
	sid1 := first.GetJoin().GetParticipant().GetSid()

	closing, release := make(chan struct{}), make(chan struct{})
	var once, releaseOnce sync.Once
	restore := sfu.SetLeaveHooks(func(identity string) {
		if identity == "x" {
			once.Do(func() { close(closing); <-release })
		}
	}, func(identity string) {
		if identity == "x" {
			releaseOnce.Do(func() { close(release) })
		}
	})
	defer restore()
	defer releaseOnce.Do(func() { close(release) })

	b, err := proto.Marshal(&livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{Reason: livekit.DisconnectReason_CLIENT_INITIATED}}})
	require.NoError(t, err)
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	require.NoError(t, x1.Write(wctx, websocket.MessageBinary, b))
	select {
	case <-closing:
	case <-time.After(10 * time.Second):
		t.Fatal("x's leave never reached its close")
	}

	joined := make(chan *websocket.Conn, 1)
	go func() {
		ws, _ := rawJoin(t, ts, room, "x", "")
		joined <- ws
	}()
	var order []string
	for len(order) < 2 {
		_, data, err := watcher.Read(wctx)
		require.NoError(t, err)
		res := &livekit.SignalResponse{}
		require.NoError(t, proto.Unmarshal(data, res))
		for _, info := range res.GetUpdate().GetParticipants() {
			switch {
			case info.GetSid() == sid1 && info.GetState() == livekit.ParticipantInfo_DISCONNECTED:
				order = append(order, "old left")
			case info.GetIdentity() == "x" && info.GetSid() != sid1:
				order = append(order, "new joined")
				releaseOnce.Do(func() { close(release) }) // a join that did not wait
			}
		}
	}
	require.Equal(t, []string{"old left", "new joined"}, order)
	(<-joined).CloseNow()
}

// TestNoUpdateAfterLeave: an info snapshot taken just before a participant
// leaves must not reach the others after its DISCONNECTED — clients would
// add the participant back (they key participants by identity and create
// one for any update of an unknown identity that is not DISCONNECTED). The
// leave is made to happen while a RoomService update of mallory sits
// between its snapshot and its broadcast; bob then sees mallory leave last.
func TestNoUpdateAfterLeave(t *testing.T) {
	verifyNoLeaks(t)
	ts := startServer(t, nil)
	const room = "ghost"
	bob, _ := rawJoin(t, ts, room, "bob", "")
	defer bob.CloseNow()
	mallory, _ := rawJoin(t, ts, room, "mallory", "")
	defer mallory.CloseNow()
	rs := lksdk.NewRoomServiceClient(httpURL(ts), ts.key, ts.secret)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The leave either completes (its announcement did not wait for the
	// update) or reaches the point where it waits; then the update goes on.
	left, waiting := make(chan struct{}), make(chan struct{})
	var once, waitOnce sync.Once
	restore := sfu.SetAnnounceHooks(func(identity string) {
		if identity != "mallory" {
			return
		}
		once.Do(func() {
			go func() {
				_, _ = rs.RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: room, Identity: "mallory"})
				close(left)
			}()
			select {
			case <-left:
			case <-waiting:
			case <-ctx.Done():
			}
		})
	}, func(identity string) {
		if identity == "mallory" {
			waitOnce.Do(func() { close(waiting) })
		}
	})
	defer restore()
	_, _ = rs.UpdateParticipant(ctx, &livekit.UpdateParticipantRequest{Room: room, Identity: "mallory", Metadata: "stale"})
	<-left
	restore()
	carol, _ := rawJoin(t, ts, room, "carol", "") // everything before is queued to bob before carol's join
	defer carol.CloseNow()

	var last *livekit.ParticipantInfo
	for seenCarol := false; !seenCarol; {
		for _, info := range readSignal(t, bob).GetUpdate().GetParticipants() {
			switch info.GetIdentity() {
			case "mallory":
				last = info
			case "carol":
				seenCarol = true
			}
		}
	}
	require.NotNil(t, last)
	require.Equal(t, livekit.ParticipantInfo_DISCONNECTED, last.GetState(), "mallory's last update bob saw: %v", last)
}
