// Command peersub is a test helper: LiveKit subscribers (server-sdk-go) that
// the federation tests run inside a federation's network namespace (`ip
// netns exec`), so their media takes that federation's network path — the
// IX when they subscribe to the other federation's SFU, the local network
// when they subscribe to their own deployment's relay.
//
// With -audio it subscribes to audio tracks only (listeners of a speaker).
//
// It reads a JSON array of {"url","jwt"} on stdin (one line), joins every
// session (auto-subscribe) and then writes one JSON status line to stdout
// every 200 ms until stdin closes: per session its state, disconnects and
// SDK reconnects, and per received track the intact and corrupt frames (the
// loadtest package's patterns). It also reports, for the first session, the
// arrival time of every tenth audio frame by sequence number, so a test can
// compare two paths' latency on the same clock.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"

	"github.com/gxfs-conf/gxconf/loadtest"
)

// Session is one session to join.
type Session struct {
	URL string `json:"url"`
	JWT string `json:"jwt"`
}

// Status is one line of output.
type Status struct {
	// Joined is set once every session's join returned (JoinErrors lists
	// the failures by index).
	Joined     bool             `json:"joined"`
	JoinErrors map[int]string   `json:"join_errors,omitempty"`
	Sessions   []SessionStatus  `json:"sessions"`
	Arrivals   map[uint32]int64 `json:"arrivals,omitempty"` // new since the last line
}

// SessionStatus is one session's state.
type SessionStatus struct {
	Connected    bool                    `json:"connected"`
	Disconnects  int64                   `json:"disconnects"`
	Reason       string                  `json:"reason,omitempty"`
	Reconnecting int64                   `json:"reconnecting"`
	Reconnected  int64                   `json:"reconnected"`
	Streams      map[string]StreamStatus `json:"streams"`
}

// StreamStatus counts one received track (by publisher identity/kind),
// across re-subscriptions.
type StreamStatus struct {
	Frames  uint64 `json:"frames"`
	Corrupt uint64 `json:"corrupt"`
}

type session struct {
	room *lksdk.Room
	mu   sync.Mutex
	// streams survive re-subscriptions: a track that comes back counts on.
	streams      map[string]*loadtest.StreamStats
	connected    atomic.Bool
	disconnects  atomic.Int64
	reconnecting atomic.Int64
	reconnected  atomic.Int64
	reason       atomic.Value // string
	readers      loadtest.Readers
}

type arrivals struct {
	mu  sync.Mutex
	new map[uint32]int64
}

func (a *arrivals) add(seq uint32, at time.Time) {
	a.mu.Lock()
	if a.new == nil {
		a.new = map[uint32]int64{}
	}
	a.new[seq] = at.UnixNano()
	a.mu.Unlock()
}

func (a *arrivals) take() map[uint32]int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.new
	a.new = nil
	return out
}

func main() {
	audioOnly := flag.Bool("audio", false, "subscribe to audio tracks only")
	flag.Parse()
	if err := run(os.Stdin, os.Stdout, *audioOnly); err != nil {
		fmt.Fprintln(os.Stderr, "peersub:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer, audioOnly bool) error {
	sdkLog, err := protoLogger.NewZapLogger(&protoLogger.Config{Level: "error"})
	if err != nil {
		return err
	}
	lksdk.SetLogger(sdkLog)
	r := bufio.NewReader(in)
	line, err := r.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("failed to read the sessions: %w", err)
	}
	var want []Session
	if err := json.Unmarshal(line, &want); err != nil {
		return fmt.Errorf("failed to decode the sessions: %w", err)
	}
	sessions := make([]*session, len(want))
	arr := &arrivals{}
	var (
		mu       sync.Mutex
		joinErrs = map[int]string{}
		joined   atomic.Bool
		wg       sync.WaitGroup
	)
	// Joins four at a time: a federation's SFU is not the thing measured.
	sem := make(chan struct{}, 4)
	for i, w := range want {
		s := &session{streams: map[string]*loadtest.StreamStats{}}
		sessions[i] = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := s.join(w, i == 0, audioOnly, arr); err != nil {
				mu.Lock()
				joinErrs[i] = err.Error()
				mu.Unlock()
			}
		}()
	}
	go func() {
		wg.Wait()
		joined.Store(true)
	}()

	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, r) // until the test closes stdin
		close(stop)
	}()
	enc := json.NewEncoder(out)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-stop:
			done = true
		case <-tick.C:
		}
		st := Status{Joined: joined.Load(), Arrivals: arr.take()}
		mu.Lock()
		if len(joinErrs) > 0 {
			st.JoinErrors = map[int]string{}
			for k, v := range joinErrs {
				st.JoinErrors[k] = v
			}
		}
		mu.Unlock()
		for _, s := range sessions {
			st.Sessions = append(st.Sessions, s.status())
		}
		if err := enc.Encode(st); err != nil {
			break
		}
	}
	wg.Wait()
	for _, s := range sessions {
		if s.room != nil {
			s.room.Disconnect()
		}
		s.readers.Wait()
	}
	return nil
}

func (s *session) join(w Session, timed, audioOnly bool, arr *arrivals) error {
	cb := lksdk.NewRoomCallback()
	if audioOnly {
		cb.OnTrackPublished = func(pub *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
			if pub.Kind() == lksdk.TrackKindAudio {
				_ = pub.SetSubscribed(true)
			}
		}
	}
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		key := rp.Identity() + "/" + pub.Kind().String()
		s.mu.Lock()
		st := s.streams[key]
		if st == nil {
			st = &loadtest.StreamStats{}
			if timed && pub.Kind() == lksdk.TrackKindAudio {
				// Note when every tenth audio frame arrived.
				st.OnAudio = func(f loadtest.Frame, at time.Time) {
					if f.Seq%10 == 0 {
						arr.add(f.Seq, at)
					}
				}
			}
			s.streams[key] = st
		}
		s.mu.Unlock()
		s.readers.Go(func() { loadtest.ReadTrack(track, st, time.Second) })
	}
	cb.OnDisconnectedWithReason = func(r lksdk.DisconnectionReason) {
		s.connected.Store(false)
		s.disconnects.Add(1)
		s.reason.Store(string(r))
	}
	cb.OnReconnecting = func() { s.reconnecting.Add(1) }
	cb.OnReconnected = func() { s.reconnected.Add(1) }
	room, err := lksdk.ConnectToRoomWithToken(w.URL, w.JWT, cb, lksdk.WithAutoSubscribe(!audioOnly))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.room = room
	s.mu.Unlock()
	s.connected.Store(true)
	return nil
}

func (s *session) status() SessionStatus {
	out := SessionStatus{Connected: s.connected.Load(), Disconnects: s.disconnects.Load(),
		Reconnecting: s.reconnecting.Load(), Reconnected: s.reconnected.Load(), Streams: map[string]StreamStatus{}}
	if r, ok := s.reason.Load().(string); ok {
		out.Reason = r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, st := range s.streams {
		out.Streams[k] = StreamStatus{Frames: st.Frames.Load(), Corrupt: st.Corrupt.Load()}
	}
	return out
}
