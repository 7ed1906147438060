package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// callClient is a participant that behaves as Element Call does when its
// SFU goes away: on the server's leave (MIGRATION, RECONNECT) it drops the
// session, asks the focus for a new token and joins wherever that points,
// then publishes again. Its streams survive the move (keyed by publisher
// identity and kind; a new subscription replaces the old entry).
type callClient struct {
	t        *testing.T
	name     string
	identity string
	user     *harness.User
	room     id.RoomID
	focusURL string

	mu       sync.Mutex
	session  *lksdk.Room
	pub      *loadtest.Publisher
	node     string // the signalling URL the focus handed out
	streams  map[string]*loadtest.StreamStats
	moves    int
	leftAt   time.Time // the server's leave of the last move
	rejoined time.Time // connected again after it
	readers  loadtest.Readers
	// moved receives nothing but wakes the test's mover loop.
	moved chan struct{}
	// interrupted counts leaves and disconnects of the current session.
	interrupted int
	// gen numbers the sessions: callbacks of a session the client dropped
	// itself are ignored.
	gen int
}

func newCallClient(t *testing.T, focusURL string, u *harness.User, room id.RoomID, name string) *callClient {
	c := &callClient{t: t, name: name, user: u, room: room, focusURL: focusURL,
		identity: focus.LiveKitIdentity(u.ID.String(), u.Client.DeviceID.String(), name),
		streams:  map[string]*loadtest.StreamStats{}, moved: make(chan struct{}, 1)}
	require.NoError(t, c.join())
	t.Cleanup(c.close)
	return c
}

// join fetches a token from the focus and joins with it, publishing audio
// and video. It may run outside the test goroutine: it returns errors.
func (c *callClient) join() error {
	c.mu.Lock()
	c.gen++
	gen := c.gen
	c.mu.Unlock()
	oid, err := c.user.Client.RequestOpenIDToken(context.Background())
	if err != nil {
		return fmt.Errorf("%s: OpenID token: %w", c.name, err)
	}
	body, err := json.Marshal(getTokenBody(c.room, c.user, c.name, map[string]any{
		"access_token": oid.AccessToken, "token_type": oid.TokenType,
		"matrix_server_name": oid.MatrixServerName, "expires_in": oid.ExpiresIn,
	}))
	if err != nil {
		return err
	}
	httpResp, err := http.Post(c.focusURL+"/get_token", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	var resp struct {
		URL string `json:"url"`
		JWT string `json:"jwt"`
	}
	err = json.NewDecoder(httpResp.Body).Decode(&resp)
	httpResp.Body.Close()
	if err != nil || httpResp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: /get_token answered %s (%v)", c.name, httpResp.Status, err)
	}
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		st := &loadtest.StreamStats{}
		c.mu.Lock()
		c.streams[rp.Identity()+"/"+pub.Kind().String()] = st
		c.mu.Unlock()
		c.readers.Go(func() { loadtest.ReadTrack(track, st, time.Second) })
	}
	interrupted := func() {
		c.mu.Lock()
		if gen != c.gen {
			c.mu.Unlock()
			return // a session this client dropped itself
		}
		c.interrupted++
		if c.leftAt.IsZero() || !c.rejoined.IsZero() && c.rejoined.After(c.leftAt) {
			c.leftAt = time.Now()
		}
		c.mu.Unlock()
		select {
		case c.moved <- struct{}{}:
		default:
		}
	}
	// A full reconnect (the server's leave with RECONNECT) or a lost session.
	cb.OnReconnecting = interrupted
	cb.OnDisconnectedWithReason = func(lksdk.DisconnectionReason) { interrupted() }
	room, err := lksdk.ConnectToRoomWithToken(resp.URL, resp.JWT, cb, lksdk.WithAutoSubscribe(true))
	if err != nil {
		return fmt.Errorf("%s joins %s: %w", c.name, resp.URL, err)
	}
	pub, err := loadtest.StartPublisher(room, loadtest.PublishOptions{Audio: true, Video: true})
	if err != nil {
		room.Disconnect()
		return err
	}
	c.mu.Lock()
	c.session, c.pub, c.node = room, pub, resp.URL
	c.mu.Unlock()
	return nil
}

// move drops the interrupted session and joins again through the focus.
func (c *callClient) move() error {
	c.mu.Lock()
	c.gen++ // the old session's callbacks are ignored from now on
	old, pub := c.session, c.pub
	c.mu.Unlock()
	pub.Stop()
	old.Disconnect()
	if err := c.join(); err != nil {
		return err
	}
	c.mu.Lock()
	c.moves++
	c.interrupted = 0
	c.rejoined = time.Now()
	c.mu.Unlock()
	return nil
}

func (c *callClient) stream(key string) *loadtest.StreamStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[key]
}

func (c *callClient) where() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.node
}

func (c *callClient) close() {
	c.mu.Lock()
	c.gen++
	room, pub := c.session, c.pub
	c.mu.Unlock()
	pub.Stop()
	room.Disconnect()
	c.readers.Wait()
}

// TestClusterRollingRestart restarts one SFU node of a two-node cluster the
// way a rolling restart does (SIGTERM, as Kubernetes sends it: the node
// drains and exits; then the process starts again) while a call runs:
// alice and bob are on node-b, carol on node-a, media crosses the bridge.
// The drain moves alice and bob — they ask the focus again, as Element
// Call does, and land on node-a — while carol's session is never
// interrupted and she receives their media again; the gap is measured and
// logged. node-b comes back, takes dave, and the call
// spans both nodes again.
func TestClusterRollingRestart(t *testing.T) {
	ctx := context.Background()
	pair := newNodePair(t)
	// node-b takes two participants: alice and bob; carol falls back to a.
	s := startStack(t, pair.stackOptions(100))
	nodeB := pair.startNodeB(t, s, 2)
	require.Eventually(t, func() bool { return serves(t, s.MetricsURL, "node-b") && serves(t, nodeB.metricsURL, "node-a") },
		30*time.Second, 100*time.Millisecond, "the nodes do not see each other")

	alice, bob, carol, dave := register(t, s, "alice"), register(t, s, "bob"), register(t, s, "carol"), register(t, s, "dave")
	created, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat",
		Invite: []id.UserID{bob.ID, carol.ID, dave.ID}})
	require.NoError(t, err)
	room := created.RoomID
	for _, u := range []*harness.User{bob, carol, dave} {
		_, err := u.Client.JoinRoomByID(ctx, room)
		require.NoError(t, err)
	}
	lkRoom := focus.LiveKitRoomAlias(room.String(), "m.call#ROOM")

	a := newCallClient(t, s.FocusURL, alice, room, "alice-1")
	require.Eventually(t, func() bool { return roomPlacement(t, s.MetricsURL, lkRoom)["node-b"].Participants == 1 },
		30*time.Second, 100*time.Millisecond, "node-a does not see alice on node-b")
	// Through node-b's focus: node-a's placer still counts alice as
	// pending for a few seconds.
	b := newCallClient(t, nodeB.focusURL, bob, room, "bob-1")
	require.Eventually(t, func() bool { return roomPlacement(t, s.MetricsURL, lkRoom)["node-b"].Participants == 2 },
		30*time.Second, 100*time.Millisecond, "node-a does not see bob on node-b")
	require.Eventually(t, func() bool { return nodeLoad(t, s.MetricsURL, "node-b").Participants == 2 },
		30*time.Second, 100*time.Millisecond, "node-b's load does not count alice and bob")
	c := newCallClient(t, s.FocusURL, carol, room, "carol-1")
	require.Equal(t, pair.urlB, a.where())
	require.Equal(t, pair.urlB, b.where())
	require.Equal(t, pair.urlA, c.where(), "node-b is full: carol goes to the fallback site")

	everyone := []*callClient{a, b, c}
	hears := func(cs []*callClient, min uint64) bool {
		for _, x := range cs {
			for _, y := range cs {
				if x == y {
					continue
				}
				v := x.stream(y.identity + "/video")
				if v == nil || v.Frames.Load() < min {
					return false
				}
			}
		}
		return true
	}
	require.Eventually(t, func() bool { return hears(everyone, 10) }, 45*time.Second, 50*time.Millisecond,
		"not everyone receives everyone's video across the two nodes")

	// The public focus URL (an Ingress routes it to ready nodes) is node-a's
	// from now on: node-b is the one restarted.
	b.focusURL = s.FocusURL
	// The mover loop: a client whose session the server ended asks the
	// focus again. Owned by the test; stopped before it ends.
	moverCtx, stopMovers := context.WithCancel(ctx)
	var movers sync.WaitGroup
	for _, x := range everyone {
		movers.Add(1)
		go func() {
			defer movers.Done()
			for {
				select {
				case <-moverCtx.Done():
					return
				case <-x.moved:
					if err := x.move(); err != nil {
						t.Errorf("%s could not rejoin: %v", x.name, err)
						return
					}
				}
			}
		}()
	}
	t.Cleanup(func() { stopMovers(); movers.Wait() })

	// Carol's view of alice's and bob's video, before the drain.
	before := map[string]*loadtest.StreamStats{a.identity: c.stream(a.identity + "/video"), b.identity: c.stream(b.identity + "/video")}
	lastFrames := map[string]uint64{}
	lastAdvance := map[string]time.Time{}
	now := time.Now()
	for k, st := range before {
		lastFrames[k], lastAdvance[k] = st.Frames.Load(), now
	}

	// The rolling restart of node-b: SIGTERM, as a pod gets it (`gxconf
	// drain` takes the same path: TestClusterPlacement, TestSites); the
	// node drains, the process exits, then starts again.
	t0 := time.Now()
	require.NoError(t, syscall.Kill(nodeB.proc.Pid(), syscall.SIGTERM))

	// Poll carol's streams (other processes' media: no event to await):
	// the gap is from the last frame of the old stream to the third of the
	// new one.
	gap := map[string]time.Duration{}
	deadline := t0.Add(60 * time.Second)
	for len(gap) < 2 && time.Now().Before(deadline) {
		for _, who := range []*callClient{a, b} {
			if _, done := gap[who.identity]; done {
				continue
			}
			cur := c.stream(who.identity + "/video")
			switch {
			case cur == before[who.identity]:
				if f := cur.Frames.Load(); f > lastFrames[who.identity] {
					lastFrames[who.identity], lastAdvance[who.identity] = f, time.Now()
				}
			case cur != nil && cur.Frames.Load() >= 3:
				gap[who.identity] = time.Since(lastAdvance[who.identity])
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.Len(t, gap, 2, "carol does not receive alice's and bob's video again after the drain")
	for _, who := range []*callClient{a, b} {
		t.Logf("rolling restart: %s moved node-b → node-a; carol's video gap %s", who.name, gap[who.identity].Round(time.Millisecond))
		require.Equal(t, pair.urlA, who.where(), "%s is placed on the node that stays", who.name)
		who.mu.Lock()
		left, back := who.leftAt, who.rejoined
		who.mu.Unlock()
		require.False(t, back.IsZero(), "%s rejoined", who.name)
		t.Logf("rolling restart: %s rejoined %s after the server's leave", who.name, back.Sub(left).Round(time.Millisecond))
	}
	// Alice and bob receive carol (and each other) again, and carol's own
	// session was never interrupted: the call did not drop.
	require.Eventually(t, func() bool { return hears(everyone, 10) }, 45*time.Second, 50*time.Millisecond,
		"media does not flow between everyone after the move")
	c.mu.Lock()
	require.Zero(t, c.interrupted, "carol's session on the node that stays is never interrupted")
	require.Zero(t, c.moves)
	c.mu.Unlock()
	for _, who := range []*callClient{a, b} {
		require.Zero(t, c.stream(who.identity+"/video").Corrupt.Load(), "%s's video arrives intact after the move", who.name)
	}

	// node-b exits on its own once drained, cleanly.
	select {
	case <-nodeB.proc.Done():
		require.NoError(t, nodeB.proc.Stop(), "a drained node exits cleanly")
	case <-time.After(60 * time.Second):
		t.Fatal("node-b did not stop after draining")
	}
	require.Contains(t, nodeB.proc.Log(), `"message":"drained"`)
	t.Logf("rolling restart: node-b drained and stopped %s after the drain began", time.Since(t0).Round(time.Millisecond))

	// ... and starts again: it serves, takes dave (site b) and the call
	// spans both nodes again.
	nodeB = pair.startNodeB(t, s, 2)
	require.Eventually(t, func() bool { return serves(t, s.MetricsURL, "node-b") }, 30*time.Second, 100*time.Millisecond,
		"node-a does not see the restarted node-b serving")
	d := newCallClient(t, s.FocusURL, dave, room, "dave-1")
	require.Equal(t, pair.urlB, d.where(), "the restarted node takes new participants of its site")
	everyone = append(everyone, d)
	require.Eventually(t, func() bool { return hears(everyone, 10) }, 45*time.Second, 50*time.Millisecond,
		"dave on the restarted node-b and the others on node-a do not receive each other's video")
	c.mu.Lock()
	require.Zero(t, c.interrupted, "carol's session survives the whole restart")
	c.mu.Unlock()
	t.Logf("rolling restart: the call spans node-a (alice, bob, carol) and the restarted node-b (dave), %s after the drain began", time.Since(t0).Round(time.Millisecond))
}
