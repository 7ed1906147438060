package meetings

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream"
)

// fakeMatrix records what the service asks of the homeserver.
type fakeMatrix struct {
	mu      sync.Mutex
	rooms   map[string]RoomRequest
	state   map[string]map[string]any // room → type → content
	invites map[string]map[string]string
	// members overrides the membership Memberships reports (join, leave);
	// everyone else in invites is "invite".
	members   map[string]map[string]string
	refreshed []string
	kicks     []string
	messages  map[string][]map[string]any
	uploads   map[string][]byte
	dms       map[string]string
	left      []string
	n         int
	// failCreate / failInvite / failSend make those calls fail.
	failCreate, failSend bool
	// createErr and inviteErr, when set, are what CreateRoom and Invite
	// (of that user) fail with.
	createErr error
	inviteErr map[string]error
	// uploadErr, when set, is what Upload returns.
	uploadErr error
	sent      chan sentMessage
}

type sentMessage struct {
	room    string
	content map[string]any
}

func newFakeMatrix() *fakeMatrix {
	return &fakeMatrix{rooms: map[string]RoomRequest{}, state: map[string]map[string]any{}, invites: map[string]map[string]string{}, members: map[string]map[string]string{},
		messages: map[string][]map[string]any{}, uploads: map[string][]byte{}, dms: map[string]string{}, sent: make(chan sentMessage, 1000)}
}

func (f *fakeMatrix) CreateRoom(_ context.Context, req RoomRequest) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.createErr != nil {
		return "", f.createErr
	}
	if f.failCreate {
		return "", errors.New("M_LIMIT_EXCEEDED")
	}
	f.n++
	id := fmt.Sprintf("!room%d:hs.test", f.n)
	f.rooms[id] = req
	f.state[id] = map[string]any{}
	for _, s := range req.InitialState {
		f.state[id][s.Type] = s.Content
	}
	f.invites[id] = map[string]string{}
	return id, nil
}

func (f *fakeMatrix) Invite(_ context.Context, roomID, userID, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.inviteErr[userID]; err != nil {
		return err
	}
	f.invites[roomID][userID] = reason
	return nil
}

func (f *fakeMatrix) RefreshInvite(_ context.Context, roomID, userID, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.invites[roomID][userID]; !ok || f.members[roomID][userID] != "" {
		return fmt.Errorf("%s is not invited to %s", userID, roomID)
	}
	f.invites[roomID][userID] = reason
	f.refreshed = append(f.refreshed, roomID+" "+userID)
	return nil
}

func (f *fakeMatrix) Memberships(_ context.Context, roomID string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]string{}
	for u := range f.invites[roomID] {
		out[u] = "invite"
	}
	for u, ms := range f.members[roomID] {
		out[u] = ms
	}
	return out, nil
}

// setMembership makes user's membership ms (join, leave) in room.
func (f *fakeMatrix) setMembership(room, user, ms string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.members[room] == nil {
		f.members[room] = map[string]string{}
	}
	f.members[room][user] = ms
}

func (f *fakeMatrix) Kick(_ context.Context, roomID, userID, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kicks = append(f.kicks, roomID+" "+userID)
	delete(f.invites[roomID], userID)
	return nil
}

func (f *fakeMatrix) SendState(_ context.Context, roomID, eventType, _ string, content any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state[roomID][eventType] = content
	return nil
}

func (f *fakeMatrix) SendMessage(_ context.Context, roomID string, content map[string]any) error {
	f.mu.Lock()
	if f.failSend {
		f.mu.Unlock()
		return errors.New("homeserver unreachable")
	}
	f.messages[roomID] = append(f.messages[roomID], content)
	f.mu.Unlock()
	f.sent <- sentMessage{roomID, content}
	return nil
}

func (f *fakeMatrix) SendSecretMessage(ctx context.Context, roomID string, content map[string]any) error {
	return f.SendMessage(ctx, roomID, content)
}

func (f *fakeMatrix) Upload(_ context.Context, data []byte, _, _ string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.uploadErr != nil {
		return "", f.uploadErr
	}
	f.n++
	uri := fmt.Sprintf("mxc://hs.test/f%d", f.n)
	f.uploads[uri] = data
	return uri, nil
}

func (f *fakeMatrix) DirectRoom(_ context.Context, userID string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r, ok := f.dms[userID]; ok {
		return r, nil
	}
	r := "!dm-" + userID
	f.dms[userID] = r
	return r, nil
}

func (f *fakeMatrix) Leave(_ context.Context, roomID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.left = append(f.left, roomID)
	return nil
}

// files returns the calendar files posted in user's DM, oldest first.
func (f *fakeMatrix) files(user string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, m := range f.messages["!dm-"+user] {
		if m["msgtype"] == "m.file" {
			out = append(out, string(f.uploads[m["url"].(string)]))
		}
	}
	return out
}

func (f *fakeMatrix) roomMessages(room string) []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]map[string]any(nil), f.messages[room]...)
}

func (f *fakeMatrix) roomCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.rooms)
}

// fakeClock is a Clock that moves only when told to.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	// waiting is signalled whenever someone starts waiting.
	waiting chan struct{}
	// gen counts Set calls; afterGen is gen at the last After.
	gen, afterGen int
}

// idle reports whether someone called After since the last Set.
func (c *fakeClock) idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.afterGen == c.gen
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(t time.Time) *fakeClock {
	return &fakeClock{now: t, waiting: make(chan struct{}, 1000)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.afterGen = c.gen
	if d <= 0 {
		ch <- c.now
	} else {
		c.waiters = append(c.waiters, waiter{c.now.Add(d), ch})
	}
	select {
	case c.waiting <- struct{}{}:
	default:
	}
	return ch
}

// Set moves the clock to t and fires the timers that are due.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	c.gen++
	sort.Slice(c.waiters, func(i, j int) bool { return c.waiters[i].at.Before(c.waiters[j].at) })
	keep := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(t) {
			w.ch <- t
		} else {
			keep = append(keep, w)
		}
	}
	c.waiters = keep
}

func testDB(t *testing.T) *dbutil.Database {
	t.Helper()
	return openDB(t, filepath.Join(t.TempDir(), "meet.db"))
}

func openDB(t *testing.T, path string) *dbutil.Database {
	t.Helper()
	db, err := dbutil.NewWithDialect("file:"+path+"?_txlock=immediate", "sqlite3-fk-wal")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

type testEnv struct {
	svc   *Service
	mx    *fakeMatrix
	clock *fakeClock
	db    *dbutil.Database
}

func newTestService(t *testing.T, mutate ...func(*Options)) *testEnv {
	t.Helper()
	env := &testEnv{mx: newFakeMatrix(), clock: newFakeClock(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)), db: testDB(t)}
	env.svc = env.newService(t, mutate...)
	return env
}

func (env *testEnv) newService(t *testing.T, mutate ...func(*Options)) *Service {
	t.Helper()
	opts := Options{
		Config: DefaultConfig(), DB: env.db, Matrix: env.mx, BotID: "@gxconf:hs.test", LocalServer: "hs.test",
		PublicURL: "https://conf.hs.test", Clock: env.clock, Log: zerolog.Nop(),
	}
	for _, m := range mutate {
		m(&opts)
	}
	svc, err := New(context.Background(), opts)
	require.NoError(t, err)
	return svc
}

func ptr[T any](v T) *T { return &v }
