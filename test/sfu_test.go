package test

import (
	"context"
	"net/http"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/gxfs-conf/gxconf/test/harness"
)

func init() {
	// server-sdk-go logs through a process-wide logger; errors only.
	if zl, err := protoLogger.NewZapLogger(&protoLogger.Config{Level: "error"}); err == nil {
		lksdk.SetLogger(zl)
	}
}

// sdkClient is a server-sdk-go participant that counts what it receives.
type sdkClient struct {
	room         *lksdk.Room
	mu           sync.Mutex
	streams      map[string]*loadtest.StreamStats // publisher identity/kind
	readers      loadtest.Readers
	left         chan string
	disconnected chan lksdk.DisconnectionReason
	// data receives the payloads of user data packets (dropped when full).
	data chan []byte
}

// joinWithToken connects with exactly the {url, jwt} the focus returned; the
// session ends when t ends.
func joinWithToken(t *testing.T, url, jwt string) *sdkClient {
	t.Helper()
	return joinWithTokenUntil(t, t, url, jwt)
}

// joinWithTokenUntil is joinWithToken for a session that outlives the
// subtest t: it ends when owner ends. Callbacks set in extra are added; one
// the client sets itself (subscriptions, leaves, disconnects, data) is
// replaced by extra's.
func joinWithTokenUntil(t *testing.T, owner testing.TB, url, jwt string, extra ...*lksdk.RoomCallback) *sdkClient {
	t.Helper()
	c := &sdkClient{streams: map[string]*loadtest.StreamStats{}, left: make(chan string, 8), disconnected: make(chan lksdk.DisconnectionReason, 1),
		data: make(chan []byte, 16)}
	cb := lksdk.NewRoomCallback()
	cb.OnDataPacket = func(p lksdk.DataPacket, _ lksdk.DataReceiveParams) {
		if u, ok := p.(*lksdk.UserDataPacket); ok {
			select {
			case c.data <- u.Payload:
			default:
			}
		}
	}
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		st := &loadtest.StreamStats{}
		c.mu.Lock()
		c.streams[rp.Identity()+"/"+pub.Kind().String()] = st
		c.mu.Unlock()
		c.readers.Go(func() { loadtest.ReadTrack(track, st, time.Second) })
	}
	cb.OnParticipantDisconnected = func(rp *lksdk.RemoteParticipant) { c.left <- rp.Identity() }
	cb.OnDisconnectedWithReason = func(r lksdk.DisconnectionReason) {
		select {
		case c.disconnected <- r:
		default:
		}
	}
	for _, e := range extra {
		cb.Merge(e)
	}
	room, err := lksdk.ConnectToRoomWithToken(url, jwt, cb, lksdk.WithAutoSubscribe(true))
	require.NoError(t, err)
	c.room = room
	owner.Cleanup(func() {
		room.Disconnect()
		c.readers.Wait()
	})
	return c
}

func (c *sdkClient) stream(key string) *loadtest.StreamStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[key]
}

// TestFocusAndEmbeddedSFU: users of the Dendrite test setup get tokens from
// /get_token and join gxconf's embedded SFU with server-sdk-go, using exactly
// the returned {url, jwt}; media flows intact; leaving the Matrix room ends
// the SFU session.
func TestFocusAndEmbeddedSFU(t *testing.T) {
	ctx := context.Background()
	s := startStack(t, harness.StackOptions{})
	alice, bob := register(t, s, "alice"), register(t, s, "bob")
	created, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.ID}})
	require.NoError(t, err)
	room := created.RoomID
	_, err = bob.Client.JoinRoomByID(ctx, room)
	require.NoError(t, err)

	token := func(u *harness.User, member string) (string, string) {
		status, out := postJSON(t, s.FocusURL+"/get_token", getTokenBody(room, u, member, openID(t, u)))
		require.Equal(t, http.StatusOK, status, out)
		return out["url"].(string), out["jwt"].(string)
	}
	aURL, aJWT := token(alice, "alice-1")
	bURL, bJWT := token(bob, "bob-1")
	require.Equal(t, s.SFUURL, aURL, "the focus hands out the embedded SFU's URL")

	a := joinWithToken(t, aURL, aJWT)
	b := joinWithToken(t, bURL, bJWT)
	aliceID := focus.LiveKitIdentity(alice.ID.String(), alice.Client.DeviceID.String(), "alice-1")
	bobID := focus.LiveKitIdentity(bob.ID.String(), bob.Client.DeviceID.String(), "bob-1")
	require.Equal(t, aliceID, a.room.LocalParticipant.Identity())
	require.Equal(t, focus.LiveKitRoomAlias(room.String(), "m.call#ROOM"), a.room.Name())

	pub, err := loadtest.StartPublisher(a.room, loadtest.PublishOptions{Audio: true, Video: true})
	require.NoError(t, err)
	t.Cleanup(pub.Stop)
	// Bob receives Alice's audio and simulcast video, frames intact.
	require.Eventually(t, func() bool {
		audio, video := b.stream(aliceID+"/audio"), b.stream(aliceID+"/video")
		return audio != nil && video != nil && audio.Frames.Load() > 25 && video.Frames.Load() > 25
	}, 30*time.Second, 50*time.Millisecond, "bob did not receive alice's media")
	for _, kind := range []string{"audio", "video"} {
		require.Zero(t, b.stream(aliceID+"/"+kind).Corrupt.Load(), "%s payloads arrive intact", kind)
	}

	// Bob leaves the Matrix room: the appservice has the focus remove him
	// (also when his token is from the second of the removal).
	_, err = bob.Client.LeaveRoom(ctx, room)
	require.NoError(t, err)
	select {
	case r := <-b.disconnected:
		require.Equal(t, lksdk.ParticipantRemoved, r)
	case <-time.After(30 * time.Second):
		t.Fatal("bob's SFU session did not end after he left the Matrix room")
	}
	select {
	case who := <-a.left:
		require.Equal(t, bobID, who)
	case <-time.After(30 * time.Second):
		t.Fatal("alice did not see bob leave")
	}
	// The token bob still holds no longer admits him.
	_, err = lksdk.ConnectToRoomWithToken(bURL, bJWT, lksdk.NewRoomCallback())
	require.Error(t, err, "a removed participant cannot rejoin with the old token")
}

// TestLoadtestCommand runs `gxconf loadtest` briefly against the embedded SFU
// of a running gxconf and checks the report: every track subscribed, media
// received, the SFU's CPU and memory read from /proc.
func TestLoadtestCommand(t *testing.T) {
	s := startStack(t, harness.StackOptions{})
	cmd := exec.Command(gxconfBin, "loadtest", "-url", s.SFUURL, "-api-key", s.SFUKey, "-api-secret", s.SFUSecret,
		"-publishers", "2", "-subscribers", "2", "-warmup", "2s", "-duration", "3s", "-sfu-pid", strconv.Itoa(s.Gxconf.Pid()))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	report := string(out)
	require.Contains(t, report, "joined:            4 (failed 0)")
	// 2 publishers × (audio + video) seen by 3 others each.
	require.Contains(t, report, "tracks subscribed: 12 / 12 expected")
	require.Regexp(t, `received:\s+[1-9]\d* packets`, report)
	require.Contains(t, report, "sfu cpu / packet:")
}
