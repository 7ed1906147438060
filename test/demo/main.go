// Command demo is `make demo`: a local Dendrite homeserver with gxconf
// registered as its appservice, gxconf's focus and embedded SFU, two users in
// a room with the bot, and the self-test call page — everything on loopback.
// It prints what to open and try, and runs until Ctrl-C.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/gxfs-conf/gxconf/test/harness"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	dir := filepath.Join(root, ".demo")
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return err
	}
	step("building gxconf")
	bin, err := harness.BuildGxconf(ctx, filepath.Join(dir, "bin"), false)
	if err != nil {
		return err
	}
	step("starting Dendrite " + harness.DendriteVersion + " and gxconf (appservice, focus, embedded SFU)")
	proxy, err := harness.ListenHomeserverProxy()
	if err != nil {
		return err
	}
	s, err := harness.StartStack(ctx, harness.StackOptions{
		Bin: bin,
		Dir: dir,
		Config: map[string]any{
			"focus":   map[string]any{"discovery": map[string]any{"homeserver_base_url": proxy.URL}},
			"logging": map[string]any{"level": "info"},
		},
	})
	if err != nil {
		return err
	}
	defer func() {
		step("stopping")
		_ = s.Stop()
		_ = proxy.Close()
	}()
	// Dendrite cannot serve rtc/transports or the rtc_foci well-known key: a
	// small proxy in front of it routes those to gxconf, as an operator's does.
	if err := proxy.Serve(s.Dendrite.URL, s.FocusURL); err != nil {
		return err
	}

	step("creating users alice and bob and their room")
	users := map[string]*harness.User{}
	for _, name := range []string{"alice", "bob"} {
		u, err := s.Dendrite.RegisterUser(ctx, name, name+"-password", false)
		if err != nil {
			return err
		}
		users[name] = u
	}
	room, err := users["alice"].Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat", Name: "gxconf demo call", RoomAliasName: "demo",
		Invite: []id.UserID{users["bob"].ID, s.BotID},
		PowerLevelOverride: &event.PowerLevelsEventContent{Events: map[string]int{
			"org.matrix.msc3401.call.member": 0, "m.room.power_levels": 100,
		}},
	})
	if err != nil {
		return err
	}
	if _, err := users["bob"].Client.JoinRoomByID(ctx, room.RoomID); err != nil {
		return err
	}

	step("asking the focus for alice's call token, as Element Call does")
	claims, err := sampleToken(ctx, s, users["alice"], room.RoomID)
	if err != nil {
		return err
	}

	page := func(user string) string {
		q := url.Values{"hs": {proxy.URL}, "user": {user}, "password": {user + "-password"}, "room": {room.RoomID.String()}}
		return s.FocusURL + "/selftest/?" + q.Encode()
	}
	fmt.Printf(`
gxconf demo is running — everything on this machine, on loopback.

  Homeserver       %s  (Dendrite %s behind a discovery proxy; its own port %s)
  Users            alice / alice-password, bob / bob-password
  Room             %s  (#demo:localhost; the bot %s is in it)
  Focus            %s  (livekit_service_url: /get_token, /sfu/get, /healthz)
  Metrics          %s/metrics  (its own listener, never the public focus one)
  Embedded SFU     %s
  gxconf log       %s

Alice's token from /get_token, decoded:
  %s

Try:
  • A call in the browser: open these two pages in two windows (camera and microphone are asked for):
      %s
      %s
  • Discovery as clients see it:
      curl %s/_matrix/client/unstable/org.matrix.msc4143/rtc/transports
      curl %s/.well-known/matrix/client
  • Talk to the bot: log in to the homeserver with any Matrix client as alice and write "!conf help" or "!conf status".
  • Metrics: curl %s/metrics | grep gxconf_
  • Load the SFU: LIVEKIT_API_KEY=%s LIVEKIT_API_SECRET=%s %s loadtest -url %s -publishers 2 -subscribers 5 -duration 10s

Press Ctrl-C to stop.
`, proxy.URL, harness.DendriteVersion, s.Dendrite.URL, room.RoomID, s.BotID, s.FocusURL, s.MetricsURL, s.SFUURL,
		s.Gxconf.LogPath, claims, page("alice"), page("bob"), proxy.URL, proxy.URL, s.MetricsURL,
		s.SFUKey, s.SFUSecret, bin, s.SFUURL)

	select {
	case <-ctx.Done():
		return nil
	case <-s.Gxconf.Done():
		return errors.New("gxconf exited; see " + s.Gxconf.LogPath)
	}
}

func step(msg string) { fmt.Printf("demo: %s …\n", msg) }

// sampleToken requests a token with Element Call's body and returns its
// decoded payload, to show what a client gets.
func sampleToken(ctx context.Context, s *harness.Stack, u *harness.User, room id.RoomID) (string, error) {
	openid, err := u.Client.RequestOpenIDToken(ctx)
	if err != nil {
		return "", err
	}
	body, _ := json.Marshal(map[string]any{
		"room_id": room, "slot_id": "m.call#ROOM",
		"openid_token": openid,
		"member":       map[string]any{"id": "demo-member", "claimed_user_id": u.ID, "claimed_device_id": u.Client.DeviceID},
	})
	// The appservice may still be receiving alice's join; retry briefly.
	var answer struct {
		URL, JWT, Error string
	}
	for attempt := 0; attempt < 20; attempt++ {
		resp, err := http.Post(s.FocusURL+"/get_token", "application/json", strings.NewReader(string(body)))
		if err != nil {
			return "", err
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(raw, &answer); err != nil {
				return "", err
			}
			parts := strings.Split(answer.JWT, ".")
			payload, err := base64.RawURLEncoding.DecodeString(parts[1])
			if err != nil {
				return "", err
			}
			return string(payload), nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return "", errors.New("the focus refused alice's token request; see the gxconf log")
}
