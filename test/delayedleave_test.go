package test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/focus"
	"github.com/gxfs-conf/gxconf/test/harness"
	"github.com/gxfs-conf/gxconf/test/msc4140"
)

// TestDelayedLeaveWithEmbeddedSFU is MSC4140 delegation end to end: a
// Dendrite user gets a token with delay fields, joins the embedded SFU with
// server-sdk-go, the focus keeps the delayed leave event alive on the user's
// homeserver while the client is connected, and sends it once the client
// vanishes without leaving (its connection cut). Dendrite has no delayed
// events, so the user's Client-Server API for them is the MSC4140 fake
// (test/msc4140), announced through focus.delayed_events.cs_api_url_overrides.
func TestDelayedLeaveWithEmbeddedSFU(t *testing.T) {
	ctx := context.Background()
	mhs := msc4140.New(nil)
	hsrv := httptest.NewServer(mhs)
	t.Cleanup(hsrv.Close)
	s := startStack(t, harness.StackOptions{Config: map[string]any{
		"focus": map[string]any{"delayed_events": map[string]any{
			"cs_api_url_overrides": map[string]any{"localhost": hsrv.URL},
			"poll_interval":        "200ms",
		}},
	}})
	alice, bob := register(t, s, "alice"), register(t, s, "bob")
	created, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.ID}})
	require.NoError(t, err)
	room := created.RoomID
	_, err = bob.Client.JoinRoomByID(ctx, room)
	require.NoError(t, err)

	// What Element Call does first: schedule its leave as a delayed event
	// (here in the fake), then hand the delay ID to the focus.
	const delayID, timeout = "syd_e2e_leave", 3 * time.Second
	mhs.Schedule(delayID, timeout)
	body := getTokenBody(room, alice, "alice-1", openID(t, alice))
	body["delay_id"], body["delay_timeout"] = delayID, timeout.Milliseconds()
	body["delay_cs_api_url"] = "http://127.0.0.1:1" // ignored, as by lk-jwt-service
	status, out := postJSON(t, s.FocusURL+"/get_token", body)
	require.Equal(t, http.StatusOK, status, out)

	// The client connects through a TCP relay that can cut it off.
	relay := startRelay(t, out["url"].(string))
	c := joinWithToken(t, relay.url, out["jwt"].(string))
	require.Equal(t, focus.LiveKitIdentity(alice.ID.String(), alice.Client.DeviceID.String(), "alice-1"), c.room.LocalParticipant.Identity())

	// While connected the event is restarted at once and every 80 % of the
	// timeout: after well over one timeout it has not fired.
	require.Eventually(t, func() bool { return mhs.Count("restart", http.StatusOK) >= 3 }, 30*time.Second, 50*time.Millisecond)
	e, _ := mhs.Event(delayID)
	require.Equal(t, msc4140.Scheduled, e.Outcome)
	require.Zero(t, mhs.Count("send", http.StatusOK))

	// The client vanishes: no Leave, its connections just die.
	relay.cut()
	require.Eventually(t, func() bool {
		e, _ := mhs.Event(delayID)
		return e.Outcome == msc4140.Sent
	}, 30*time.Second, 50*time.Millisecond, "the focus sends the delayed leave once the participant is gone")
	e, _ = mhs.Event(delayID)
	require.Equal(t, "action", e.SentBy, "sent by the focus, before the timeout")
	for _, r := range mhs.Requests() {
		require.Equal(t, delayID, r.DelayID)
		require.False(t, r.Authorized, "no access token is sent")
	}
	require.NotContains(t, s.Gxconf.Log(), delayID, "the delay ID is a capability and is not logged")

	// Bob, connected and delegating, leaves the Matrix room: gxconf removes
	// him from the SFU and sends his delayed leave at once.
	const bobDelay = "syd_e2e_bob"
	mhs.Schedule(bobDelay, time.Hour)
	body = getTokenBody(room, bob, "bob-1", openID(t, bob))
	body["delay_id"], body["delay_timeout"] = bobDelay, time.Hour.Milliseconds()
	status, out = postJSON(t, s.FocusURL+"/get_token", body)
	require.Equal(t, http.StatusOK, status, out)
	b := joinWithToken(t, out["url"].(string), out["jwt"].(string))
	require.Eventually(t, func() bool { e, _ := mhs.Event(bobDelay); return e.Restarts >= 1 }, 30*time.Second, 50*time.Millisecond)
	_, err = bob.Client.LeaveRoom(ctx, room)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		e, _ := mhs.Event(bobDelay)
		return e.Outcome == msc4140.Sent && e.SentBy == "action"
	}, 30*time.Second, 50*time.Millisecond, "leaving the Matrix room sends the delayed leave")
	select {
	case <-b.disconnected:
	case <-time.After(30 * time.Second):
		t.Fatal("bob was not removed from the SFU")
	}
	require.Contains(t, s.Gxconf.Log(), "Sending the removed user's delayed leave events")
}

// TestDelayedLeaveSurvivesGxconfRestart: gxconf stops (SIGTERM) during a
// call with a delegated leave; the shutdown sends nothing; the restarted
// gxconf resumes the job from its database without any new request, restarts
// the event once the client is back, and sends it when the client vanishes.
func TestDelayedLeaveSurvivesGxconfRestart(t *testing.T) {
	ctx := context.Background()
	mhs := msc4140.New(nil)
	hsrv := httptest.NewServer(mhs)
	t.Cleanup(hsrv.Close)
	s := startStack(t, harness.StackOptions{Config: map[string]any{
		"focus": map[string]any{"delayed_events": map[string]any{
			"cs_api_url_overrides": map[string]any{"localhost": hsrv.URL},
			"poll_interval":        "200ms",
		}},
	}})
	alice := register(t, s, "alice")
	created, err := alice.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	require.NoError(t, err)

	const delayID, timeout = "syd_e2e_restart", 20 * time.Second
	mhs.Schedule(delayID, timeout)
	body := getTokenBody(created.RoomID, alice, "alice-1", openID(t, alice))
	body["delay_id"], body["delay_timeout"] = delayID, timeout.Milliseconds()
	status, out := postJSON(t, s.FocusURL+"/get_token", body)
	require.Equal(t, http.StatusOK, status, out)
	sfuURL, jwt := out["url"].(string), out["jwt"].(string)

	first := startRelay(t, sfuURL)
	joinWithToken(t, first.url, jwt)
	require.Eventually(t, func() bool { return mhs.Count("restart", http.StatusOK) >= 1 }, 30*time.Second, 50*time.Millisecond)

	// gxconf stops; the client cannot come back through its relay.
	require.NoError(t, s.Gxconf.Stop())
	first.cut()
	require.Zero(t, mhs.Count("send", http.StatusOK), "a shutdown sends no leave")
	before := mhs.Count("restart", http.StatusOK)

	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s.Gxconf, err = harness.StartGxconf(startCtx, gxconfBin, s.ConfigPath, s.RegistrationPath,
		s.Gxconf.LogPath+".2", s.FocusURL+"/healthz")
	require.NoError(t, err)

	// The client rejoins with the token it holds; no new delegation.
	second := startRelay(t, sfuURL)
	joinWithToken(t, second.url, jwt)
	require.Eventually(t, func() bool { return mhs.Count("restart", http.StatusOK) > before }, 30*time.Second, 50*time.Millisecond,
		"the resumed job restarts the event")
	second.cut()
	require.Eventually(t, func() bool {
		e, _ := mhs.Event(delayID)
		return e.Outcome == msc4140.Sent && e.SentBy == "action"
	}, 30*time.Second, 50*time.Millisecond, "the resumed job sends the leave")
	require.Contains(t, s.Gxconf.Log(), "Resuming delayed leave delegation")
}

// relay forwards TCP connections to the SFU's signalling address until cut.
type relay struct {
	url   string
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startRelay(t *testing.T, sfuURL string) *relay {
	t.Helper()
	target, err := url.Parse(sfuURL)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	r := &relay{url: "ws://" + ln.Addr().String(), ln: ln}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target.Host)
			if err != nil {
				_ = in.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, in, out)
			r.mu.Unlock()
			r.wg.Add(2)
			go func() { defer r.wg.Done(); _, _ = io.Copy(out, in); _ = out.Close() }()
			go func() { defer r.wg.Done(); _, _ = io.Copy(in, out); _ = in.Close() }()
		}
	}()
	t.Cleanup(r.cut)
	return r
}

// cut stops accepting and resets every relayed connection.
func (r *relay) cut() {
	if err := r.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return
	}
	r.mu.Lock()
	for _, c := range r.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
	r.conns = nil
	r.mu.Unlock()
	r.wg.Wait()
}
