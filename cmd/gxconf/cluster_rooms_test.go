package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twitchtv/twirp"
	"google.golang.org/protobuf/proto"

	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/config"
	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/gxfs-conf/gxconf/sfu"
	"github.com/gxfs-conf/gxconf/test/harness"
)

// memBus is an in-memory node bus: each node's request and reply inboxes,
// and the removals sent to it.
type memBus struct {
	mu       sync.Mutex
	reqs     map[cluster.NodeID]chan cluster.Message
	replies  map[cluster.NodeID]chan cluster.Message
	removals map[cluster.NodeID][]string
}

func newMemBus(nodes ...cluster.NodeID) *memBus {
	b := &memBus{reqs: map[cluster.NodeID]chan cluster.Message{}, replies: map[cluster.NodeID]chan cluster.Message{},
		removals: map[cluster.NodeID][]string{}}
	for _, n := range nodes {
		b.reqs[n], b.replies[n] = make(chan cluster.Message, 16), make(chan cluster.Message, 16)
	}
	return b
}

func (b *memBus) removalsOf(n cluster.NodeID) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.removals[n]
}

// memReg is one node's view: the bus, and a directory shared by all.
type memReg struct {
	cluster.Directory // only the methods below are used
	self              cluster.NodeID
	bus               *memBus
	nodes             []cluster.NodeID
	parts             map[string]cluster.NodeID   // identity → node
	rooms             map[string][]cluster.NodeID // room → nodes
}

func (r *memReg) Self() cluster.Node { return cluster.Node{ID: r.self} }
func (r *memReg) Nodes() []cluster.Node {
	var out []cluster.Node
	for _, n := range r.nodes {
		out = append(out, cluster.Node{ID: n})
	}
	return out
}

func (r *memReg) Participant(_ context.Context, room cluster.RoomName, id cluster.ParticipantIdentity) (cluster.ParticipantEntry, error) {
	n, ok := r.parts[string(id)]
	if !ok {
		return cluster.ParticipantEntry{}, cluster.ErrNotFound
	}
	return cluster.ParticipantEntry{Room: room, Identity: id, Node: n}, nil
}

func (r *memReg) Rooms(context.Context) ([]cluster.RoomName, error) {
	var out []cluster.RoomName
	for room := range r.rooms {
		out = append(out, cluster.RoomName(room))
	}
	return out, nil
}

func (r *memReg) RoomNodes(_ context.Context, room cluster.RoomName) ([]cluster.RoomEntry, error) {
	var out []cluster.RoomEntry
	for _, n := range r.rooms[string(room)] {
		out = append(out, cluster.RoomEntry{Room: room, Node: n})
	}
	return out, nil
}

func (r *memReg) Send(_ context.Context, to cluster.NodeID, topic string, payload []byte) error {
	b := r.bus
	m := cluster.Message{From: r.self, Topic: topic, Payload: append([]byte(nil), payload...)}
	var ch chan cluster.Message
	switch topic {
	case rsTopic:
		ch = b.reqs[to]
	case rsReplyTopic:
		ch = b.replies[to]
	case removeTopic:
		var req livekit.RoomParticipantIdentity
		if err := proto.Unmarshal(payload, &req); err != nil {
			return err
		}
		b.mu.Lock()
		b.removals[to] = append(b.removals[to], req.GetIdentity())
		b.mu.Unlock()
		return nil
	}
	if ch == nil {
		return cluster.ErrNotDelivered
	}
	ch <- m
	return nil
}

// bobsNode is the local RoomService of the node that has bob.
type bobsNode struct {
	livekit.RoomService // only the methods below are used
	mu                  sync.Mutex
	done                []string
	rpcIn               chan string // PerformRpc: the method, when called
	rpcOut              chan string // and the payload it then answers
}

// PerformRpc waits for the test, as a client's call does.
func (n *bobsNode) PerformRpc(ctx context.Context, req *livekit.PerformRpcRequest) (*livekit.PerformRpcResponse, error) {
	n.rpcIn <- req.GetMethod()
	select {
	case out := <-n.rpcOut:
		return &livekit.PerformRpcResponse{Payload: out}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (n *bobsNode) note(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.done = append(n.done, s)
}

func (n *bobsNode) GetParticipant(_ context.Context, req *livekit.RoomParticipantIdentity) (*livekit.ParticipantInfo, error) {
	if req.GetIdentity() != "bob" {
		return nil, twirp.NotFoundError("participant does not exist")
	}
	return &livekit.ParticipantInfo{Identity: "bob", Metadata: "on n2"}, nil
}

func (n *bobsNode) RemoveParticipant(_ context.Context, req *livekit.RoomParticipantIdentity) (*livekit.RemoveParticipantResponse, error) {
	n.note("remove " + req.GetIdentity())
	return &livekit.RemoveParticipantResponse{}, nil
}

func (n *bobsNode) MutePublishedTrack(_ context.Context, req *livekit.MuteRoomTrackRequest) (*livekit.MuteRoomTrackResponse, error) {
	n.note("mute " + req.GetTrackSid())
	return &livekit.MuteRoomTrackResponse{Track: &livekit.TrackInfo{Sid: req.GetTrackSid(), Muted: true}}, nil
}

func (n *bobsNode) UpdateSubscriptions(_ context.Context, req *livekit.UpdateSubscriptionsRequest) (*livekit.UpdateSubscriptionsResponse, error) {
	n.note("subscribe " + req.GetIdentity() + " " + strings.Join(req.GetTrackSids(), ","))
	return &livekit.UpdateSubscriptionsResponse{}, nil
}

// DeleteRoom: n2 has closed "gone" already (the directory lags).
func (n *bobsNode) DeleteRoom(_ context.Context, req *livekit.DeleteRoomRequest) (*livekit.DeleteRoomResponse, error) {
	if req.GetRoom() == "gone" {
		return nil, twirp.NotFoundError("requested room does not exist")
	}
	n.note("delete " + req.GetRoom())
	return &livekit.DeleteRoomResponse{}, nil
}

func (n *bobsNode) SendData(_ context.Context, req *livekit.SendDataRequest) (*livekit.SendDataResponse, error) {
	n.note("data " + string(req.GetData()))
	return &livekit.SendDataResponse{}, nil
}

// The forwarder carries RoomService calls to the owning node and back:
// answers and Twirp error codes cross, ListParticipants merges the nodes
// that answer in time, a removal also reaches every other node.
func TestRoomForwarderOverTheNodeBus(t *testing.T) {
	bus := newMemBus("n1", "n2", "n3") // n3 is on the bus but never answers
	// n2 also hosts more rooms than one ListRooms call asks a node about.
	many := make([]string, 2*rsRoomsBatch+20)
	for i := range many {
		many[i] = fmt.Sprintf("many-%03d", i)
	}
	dir := func(self cluster.NodeID) *memReg {
		rooms := map[string][]cluster.NodeID{"r": {"n1", "n2", "n3"}, "r2": {"n2"}, "gone": {"n2"}}
		for _, m := range many {
			rooms[m] = []cluster.NodeID{"n2"}
		}
		return &memReg{self: self, bus: bus, nodes: []cluster.NodeID{"n1", "n2", "n3"},
			parts: map[string]cluster.NodeID{"bob": "n2", "ghost": "n2", "amy": "n1", "lost": "n4"}, rooms: rooms}
	}
	// n1 hosts "r" (amy; bob relayed from n2 is not counted); n2's copy of
	// "r" is the older one.
	rooms1 := func(names []string) []*livekit.Room {
		if len(names) > 0 && !slices.Contains(names, "r") {
			return nil
		}
		return []*livekit.Room{{Name: "r", Sid: "RM_n1", CreationTimeMs: 2000, Metadata: "md", NumParticipants: 1, NumPublishers: 1}}
	}
	var largestAsk atomic.Int32 // most rooms n2 was asked about at once
	rooms2 := func(names []string) []*livekit.Room {
		if n := int32(len(names)); n > largestAsk.Load() {
			largestAsk.Store(n) // f2's loop is the only caller
		}
		var out []*livekit.Room
		for _, r := range []*livekit.Room{
			{Name: "r", Sid: "RM_n2", CreationTimeMs: 1000, Metadata: "md", NumParticipants: 2, NumPublishers: 1},
			{Name: "r2", Sid: "RM_r2", CreationTimeMs: 1500, NumParticipants: 1},
		} {
			if slices.Contains(names, r.Name) {
				out = append(out, r)
			}
		}
		for _, m := range many {
			if slices.Contains(names, m) {
				out = append(out, &livekit.Room{Name: m, NumParticipants: 1})
			}
		}
		return out
	}
	n2 := &bobsNode{rpcIn: make(chan string), rpcOut: make(chan string)}
	f1 := &roomForwarder{reg: dir("n1"), localRooms: rooms1, log: zerolog.Nop(), pending: map[uint64]pendingCall{}}
	f2 := &roomForwarder{reg: dir("n2"), local: n2, localRooms: rooms2, log: zerolog.Nop(), pending: map[uint64]pendingCall{}, rpcs: make(chan struct{}, rsRPCInFlight),
		localParticipants: func(room string) ([]*livekit.ParticipantInfo, error) {
			if room != "r" {
				return nil, errors.New("requested room does not exist")
			}
			return []*livekit.ParticipantInfo{{Identity: "bob"}, {Identity: "ghost"}}, nil
		}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, f := range []*roomForwarder{f1, f2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			self := f.reg.Self().ID
			_ = f.loop(ctx, bus.reqs[self], bus.replies[self])
		}()
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	code := func(err error) twirp.ErrorCode {
		var te twirp.Error
		require.True(t, errors.As(err, &te), "not a twirp error: %v", err)
		return te.Code()
	}

	p, err := f1.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "r", Identity: "bob"})
	require.NoError(t, err)
	require.Equal(t, "on n2", p.GetMetadata())
	_, err = f1.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "r", Identity: "ghost"})
	require.Equal(t, twirp.NotFound, code(err), "the owner's not_found crosses the bus")
	_, err = f1.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "r", Identity: "nobody"})
	require.Equal(t, twirp.NotFound, code(err), "not in the directory")
	_, err = f1.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "r", Identity: "amy"})
	require.Equal(t, twirp.NotFound, code(err), "the directory names this node: not forwarded to itself")
	_, err = f1.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "r", Identity: "lost"})
	require.Equal(t, twirp.Unavailable, code(err), "the owner is not on the bus")

	m, err := f1.MutePublishedTrack(ctx, &livekit.MuteRoomTrackRequest{Room: "r", Identity: "bob", TrackSid: "TR_1", Muted: true})
	require.NoError(t, err)
	require.True(t, m.GetTrack().GetMuted())
	_, err = f1.SendData(ctx, &livekit.SendDataRequest{Room: "r2", Data: []byte("hi")})
	require.NoError(t, err)
	_, err = f1.SendData(ctx, &livekit.SendDataRequest{Room: "r3", Data: []byte("hi")})
	require.Equal(t, twirp.NotFound, code(err), "no node hosts the room")
	_, err = f1.UpdateSubscriptions(ctx, &livekit.UpdateSubscriptionsRequest{Room: "r", Identity: "bob", TrackSids: []string{"TR_2"}, Subscribe: true})
	require.NoError(t, err)
	_, err = f1.UpdateSubscriptions(ctx, &livekit.UpdateSubscriptionsRequest{Room: "r", Identity: "nobody", TrackSids: []string{"TR_2"}})
	require.Equal(t, twirp.NotFound, code(err))
	// PerformRpc reaches bob's node and waits for his client there
	// without holding up that node's other calls.
	rpc := make(chan *livekit.PerformRpcResponse, 1)
	go func() {
		res, err := f1.PerformRpc(ctx, &livekit.PerformRpcRequest{Room: "r", DestinationIdentity: "bob", Method: "ping", ResponseTimeoutMs: 60000})
		assert.NoError(t, err)
		rpc <- res
	}()
	require.Equal(t, "ping", <-n2.rpcIn)
	p, err = f1.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "r", Identity: "bob"})
	require.NoError(t, err, "n2 answers while bob's client is being called")
	require.Equal(t, "on n2", p.GetMetadata())
	n2.rpcOut <- "pong"
	require.Equal(t, "pong", (<-rpc).GetPayload())
	require.Equal(t, 70*time.Second, rpcWait(&livekit.PerformRpcRequest{ResponseTimeoutMs: 60000}))
	require.Equal(t, 25*time.Second, rpcWait(&livekit.PerformRpcRequest{}), "15 s by default")
	_, err = f1.PerformRpc(ctx, &livekit.PerformRpcRequest{Room: "r", DestinationIdentity: "nobody", Method: "ping"})
	require.Equal(t, twirp.NotFound, code(err))

	_, err = f1.RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: "r", Identity: "bob"})
	require.NoError(t, err)

	// Rooms: a filtered list asks only the hosting node; CreateRoom of a
	// room hosted elsewhere returns it; DeleteRoom reaches the hosts.
	rl, err := f1.ListRooms(ctx, &livekit.ListRoomsRequest{Names: []string{"r2", "r9"}})
	require.NoError(t, err)
	require.Len(t, rl.GetRooms(), 1)
	require.Equal(t, "RM_r2", rl.GetRooms()[0].GetSid())
	cr, err := f1.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: "r2", Metadata: "other settings"})
	require.NoError(t, err)
	require.Equal(t, "RM_r2", cr.GetSid(), "the room n2 hosts, not a second copy")
	_, err = f1.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: "r9"})
	require.Equal(t, twirp.NotFound, code(err), "nobody hosts it: the SFU creates it here")
	_, err = f1.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: "r2"})
	require.NoError(t, err)
	_, err = f1.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: "gone"})
	require.Equal(t, twirp.NotFound, code(err), "the directory's host closed it already")
	_, err = f1.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: "r9"})
	require.Equal(t, twirp.NotFound, code(err))
	n2.mu.Lock()
	require.Equal(t, []string{"mute TR_1", "data hi", "subscribe bob TR_2", "remove bob", "delete r2"}, n2.done)
	n2.mu.Unlock()
	require.Equal(t, []string{"bob"}, bus.removalsOf("n3"), "the other nodes refuse bob's older tokens too")
	require.Empty(t, bus.removalsOf("n2"), "the owner removes once")

	// n3 does not answer: the list has n2's participants after the timeout.
	l, err := f1.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: "r"})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"bob", "ghost"}, identitiesOf(l.GetParticipants()))
	_, err = f1.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: "r9"})
	require.Equal(t, twirp.NotFound, code(err))
	// Every room once (n3 does not answer): r's counts are n1's and n2's
	// own participants, the rest is from n2's older copy.
	rl, err = f1.ListRooms(ctx, &livekit.ListRoomsRequest{})
	require.NoError(t, err)
	require.Equal(t, append(slices.Clone(many), "r", "r2"), roomNames(rl.GetRooms()), "sorted by name")
	r := rl.GetRooms()[len(many)]
	require.Equal(t, "RM_n2", r.GetSid())
	require.EqualValues(t, 3, r.GetNumParticipants())
	require.EqualValues(t, 2, r.GetNumPublishers())
	require.EqualValues(t, rsRoomsBatch, largestAsk.Load(), "n2 is asked in batches")

	// A late or foreign answer is dropped.
	f1.complete(cluster.Message{From: "n2", Payload: []byte(`{"id":12345}`)})
	f1.complete(cluster.Message{From: "n2", Payload: []byte(`not json`)})
	f1.mu.Lock()
	require.Empty(t, f1.pending, "calls left pending")
	f1.mu.Unlock()
}

func identitiesOf(ps []*livekit.ParticipantInfo) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.GetIdentity())
	}
	return out
}

func init() {
	// server-sdk-go logs through a process-wide logger, by default every
	// pion debug line (formatting structs pion writes concurrently): errors
	// only, through zap.
	zl, err := protoLogger.NewZapLogger(&protoLogger.Config{Level: "error"})
	if err != nil {
		panic(err)
	}
	lksdk.SetLogger(zl)
}

// testNode is one gxconf node in this process: the embedded SFU with its
// cluster membership (Redis registry, node bus, RoomService forwarder,
// bridge), composed by newClusterNode as serve does.
type testNode struct {
	node    *clusterNode
	srv     *sfu.Server
	metrics *prometheus.Registry
}

const (
	testAPIKey    = "APIrooms"
	testAPISecret = "secret-of-the-rooms-test-0123456789abcdef"
)

func startTestNode(t *testing.T, redisAddr, id string, edits ...func(*config.Config)) *testNode {
	t.Helper()
	cfg := config.Default()
	cfg.SFU.NodeID = id
	cfg.SFU.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	cfg.SFU.Keys = map[string]string{testAPIKey: testAPISecret}
	cfg.SFU.RTC.UDPPort = freePort(t, "udp")
	cfg.SFU.RTC.TCPPort = 0
	cfg.SFU.RTC.NodeIP = "127.0.0.1"
	cfg.Cluster.NodeID = cluster.NodeID(id)
	cfg.Cluster.RelayAddress = fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	cfg.Cluster.HeartbeatInterval = 200 * time.Millisecond
	cfg.Cluster.LivenessTTL = time.Second
	cfg.Cluster.Redis.Address = redisAddr
	cfg.Bridge.Listen = cfg.Cluster.RelayAddress
	cfg.Bridge.Secret = "relay-secret-of-the-rooms-test-0123456789abcdef"
	for _, edit := range edits {
		edit(&cfg)
	}
	w := &testLogWriter{t: t}
	t.Cleanup(w.close) // after the node's cleanup below
	log := zerolog.New(w).Level(zerolog.InfoLevel)
	srv, err := sfu.New(cfg.SFU.Config, log, prometheus.NewRegistry())
	require.NoError(t, err)
	metrics := prometheus.NewRegistry()
	node, err := newClusterNode(&cfg, srv, metrics, log)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for _, c := range append([]component{{"sfu", srv.Run}}, node.runners()...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.run(ctx); err != nil {
				errs <- err
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("node %s: %v", id, err)
		}
	})
	select {
	case <-srv.Ready():
	case err := <-errs:
		t.Fatalf("node %s did not start: %v", id, err)
	}
	return &testNode{node: node, srv: srv, metrics: metrics}
}

// testLogWriter writes to the test's log until the test ends: pion's
// goroutines of a closed peer connection may still log after that, when
// t.Log panics.
type testLogWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func (w *testLogWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}

func (n *testNode) httpURL() string { return "http" + strings.TrimPrefix(n.srv.URL(), "ws") }

// twirp is the node's Twirp RoomService called with token.
func (n *testNode) twirp(token string) (livekit.RoomService, context.Context) {
	ctx, err := twirp.WithHTTPRequestHeaders(context.Background(), http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		panic(err) // only for reserved headers
	}
	return livekit.NewRoomServiceProtobufClient(n.httpURL(), http.DefaultClient), ctx
}

func testToken(t *testing.T, identity string, g *auth.VideoGrant) string {
	t.Helper()
	tok, err := auth.NewAccessToken(testAPIKey, testAPISecret).SetIdentity(identity).SetVideoGrant(g).SetValidFor(time.Hour).ToJWT()
	require.NoError(t, err)
	return tok
}

// roomClient is a server-sdk-go participant.
type roomClient struct {
	room *lksdk.Room
	// subscribed gets the publisher identity of every track subscribed.
	subscribed chan string
	// gone is closed on disconnection; room.DisconnectReason() says why.
	gone chan struct{}
}

func joinTestNode(t *testing.T, n *testNode, room, identity string, autoSubscribe bool) *roomClient {
	t.Helper()
	c := &roomClient{subscribed: make(chan string, 8), gone: make(chan struct{})}
	var once sync.Once
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(_ *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		c.subscribed <- rp.Identity()
	}
	cb.OnDisconnectedWithReason = func(lksdk.DisconnectionReason) { once.Do(func() { close(c.gone) }) }
	r, err := lksdk.ConnectToRoomWithToken(n.srv.URL(), testToken(t, identity, &auth.VideoGrant{RoomJoin: true, Room: room}), cb,
		lksdk.WithAutoSubscribe(autoSubscribe))
	require.NoError(t, err)
	c.room = r
	t.Cleanup(r.Disconnect)
	return c
}

func (c *roomClient) requireDeleted(t *testing.T, who string) {
	t.Helper()
	select {
	case <-c.gone:
		require.Equal(t, livekit.DisconnectReason_ROOM_DELETED, c.room.DisconnectReason(), who)
	case <-time.After(10 * time.Second):
		t.Fatalf("%s was not disconnected by DeleteRoom", who)
	}
}

func roomNames(rs []*livekit.Room) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.GetName())
	}
	return out
}

// Two nodes, one Redis, the bridge between them, server-sdk-go clients:
// room "spanned" has alice (publishing) on node-a and bob on node-b, room
// "only-b" has carol on node-b. Each node's Twirp RoomService lists, finds,
// creates and deletes rooms of the whole cluster, subscribes a participant
// on the other node, and forwards only what the caller's token allows.
func TestClusterRoomServiceAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs redis-server and two SFU nodes")
	}
	rds, err := harness.StartRedis(context.Background(), t.TempDir())
	require.NoError(t, err)
	t.Cleanup(rds.Stop)
	a, b := startTestNode(t, rds.Addr, "node-a"), startTestNode(t, rds.Addr, "node-b")
	require.Eventually(t, func() bool { return len(a.node.reg.Nodes()) == 2 && len(b.node.reg.Nodes()) == 2 },
		10*time.Second, 20*time.Millisecond, "the nodes do not see each other")
	ctx := context.Background()
	rsA := lksdk.NewRoomServiceClient(a.httpURL(), testAPIKey, testAPISecret)
	rsB := lksdk.NewRoomServiceClient(b.httpURL(), testAPIKey, testAPISecret)

	alice := joinTestNode(t, a, "spanned", "alice", true)
	pub, err := loadtest.StartPublisher(alice.room, loadtest.PublishOptions{Audio: true})
	require.NoError(t, err)
	t.Cleanup(pub.Stop)
	bob := joinTestNode(t, b, "spanned", "bob", false)
	carol := joinTestNode(t, b, "only-b", "carol", true)

	// ListRooms from either node: every room once, each node's own
	// participants summed (the relayed copies are not counted twice).
	counts := func(rs []*livekit.Room) map[string][2]uint32 {
		out := map[string][2]uint32{}
		for _, r := range rs {
			out[r.GetName()] = [2]uint32{r.GetNumParticipants(), r.GetNumPublishers()}
		}
		return out
	}
	want := map[string][2]uint32{"spanned": {2, 1}, "only-b": {1, 0}}
	require.Eventually(t, func() bool {
		la, errA := rsA.ListRooms(ctx, &livekit.ListRoomsRequest{})
		lb, errB := rsB.ListRooms(ctx, &livekit.ListRoomsRequest{})
		return errA == nil && errB == nil && len(la.GetRooms()) == 2 && len(lb.GetRooms()) == 2 &&
			maps.Equal(counts(la.GetRooms()), want) && maps.Equal(counts(lb.GetRooms()), want) &&
			alice.room.GetParticipantByIdentity("bob") != nil
	}, 20*time.Second, 50*time.Millisecond, "ListRooms does not show both rooms once with their counts")
	onlyB, err := rsA.ListRooms(ctx, &livekit.ListRoomsRequest{Names: []string{"only-b", "nowhere"}})
	require.NoError(t, err)
	require.Equal(t, []string{"only-b"}, roomNames(onlyB.GetRooms()), "the names filter")
	sidOnB := b.srv.LocalRooms([]string{"only-b"})[0].GetSid()
	require.Equal(t, sidOnB, onlyB.GetRooms()[0].GetSid(), "the room's info comes from its node")

	// CreateRoom of a room node-b hosts returns it; no copy on node-a.
	created, err := rsA.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: "only-b", Metadata: "other", MaxParticipants: 7})
	require.NoError(t, err)
	require.Equal(t, sidOnB, created.GetSid())
	require.Empty(t, created.GetMetadata())
	require.EqualValues(t, 1, created.GetNumParticipants())
	require.Empty(t, a.srv.LocalRooms([]string{"only-b"}), "a second copy on node-a")
	// A new room is created on the node asked, and listed by the other.
	fresh, err := rsA.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: "fresh", Metadata: "new"})
	require.NoError(t, err)
	require.Len(t, a.srv.LocalRooms([]string{"fresh"}), 1)
	require.Eventually(t, func() bool {
		l, err := rsB.ListRooms(ctx, &livekit.ListRoomsRequest{Names: []string{"fresh"}})
		return err == nil && len(l.GetRooms()) == 1 && l.GetRooms()[0].GetSid() == fresh.GetSid() && l.GetRooms()[0].GetMetadata() == "new"
	}, 10*time.Second, 50*time.Millisecond, "node-b does not list the room created on node-a")

	// UpdateSubscriptions through node-a, where bob is a relayed copy,
	// subscribes bob on node-b.
	audio := pub.AudioPub.SID()
	require.Eventually(t, func() bool {
		p := bob.room.GetParticipantByIdentity("alice")
		return p != nil && len(p.TrackPublications()) == 1
	}, 10*time.Second, 20*time.Millisecond, "alice's track is not relayed to node-b")
	_, err = rsA.UpdateSubscriptions(ctx, &livekit.UpdateSubscriptionsRequest{Room: "spanned", Identity: "bob", TrackSids: []string{audio}, Subscribe: true})
	require.NoError(t, err)
	select {
	case from := <-bob.subscribed:
		require.Equal(t, "alice", from)
	case <-time.After(10 * time.Second):
		t.Fatal("bob on node-b was not subscribed through node-a")
	}
	_, err = rsA.UpdateSubscriptions(ctx, &livekit.UpdateSubscriptionsRequest{Room: "spanned", Identity: "nobody", TrackSids: []string{audio}})
	requireCode(t, err, twirp.NotFound)

	// PerformRpc through node-a, where bob is a relayed copy, reaches
	// bob's client on node-b and brings its answer back.
	require.NoError(t, bob.room.RegisterRpcMethod("where", func(d lksdk.RpcInvocationData) (string, error) {
		return "bob on node-b: " + d.Payload, nil
	}))
	admin, actx := a.twirp(testToken(t, "admin", &auth.VideoGrant{RoomAdmin: true, Room: "spanned"}))
	rpc, err := admin.PerformRpc(actx, &livekit.PerformRpcRequest{Room: "spanned", DestinationIdentity: "bob", Method: "where", Payload: "asked on node-a"})
	require.NoError(t, err)
	require.Equal(t, "bob on node-b: asked on node-a", rpc.GetPayload())

	// A token that administers "spanned" acts on carol in "only-b" through
	// no node: node-a refuses before forwarding, and carol stays.
	scoped, sctx := a.twirp(testToken(t, "admin", &auth.VideoGrant{RoomAdmin: true, Room: "spanned"}))
	carolReq := &livekit.RoomParticipantIdentity{Room: "only-b", Identity: "carol"}
	_, err = scoped.RemoveParticipant(sctx, carolReq)
	requireCode(t, err, twirp.PermissionDenied)
	_, err = scoped.GetParticipant(sctx, carolReq)
	requireCode(t, err, twirp.PermissionDenied)
	_, err = scoped.MutePublishedTrack(sctx, &livekit.MuteRoomTrackRequest{Room: "only-b", Identity: "carol", TrackSid: "TR_x", Muted: true})
	requireCode(t, err, twirp.PermissionDenied)
	_, err = scoped.UpdateParticipant(sctx, &livekit.UpdateParticipantRequest{Room: "only-b", Identity: "carol", Metadata: "x"})
	requireCode(t, err, twirp.PermissionDenied)
	_, err = scoped.UpdateSubscriptions(sctx, &livekit.UpdateSubscriptionsRequest{Room: "only-b", Identity: "carol", TrackSids: []string{audio}})
	requireCode(t, err, twirp.PermissionDenied)
	_, err = scoped.SendData(sctx, &livekit.SendDataRequest{Room: "only-b", Data: []byte("x")})
	requireCode(t, err, twirp.PermissionDenied)
	_, err = scoped.UpdateRoomMetadata(sctx, &livekit.UpdateRoomMetadataRequest{Room: "only-b", Metadata: "x"})
	requireCode(t, err, twirp.PermissionDenied)
	_, err = scoped.ListParticipants(sctx, &livekit.ListParticipantsRequest{Room: "only-b"})
	requireCode(t, err, twirp.PermissionDenied)
	_, err = scoped.PerformRpc(sctx, &livekit.PerformRpcRequest{Room: "only-b", DestinationIdentity: "carol", Method: "where"})
	requireCode(t, err, twirp.PermissionDenied)
	_, err = scoped.DeleteRoom(sctx, &livekit.DeleteRoomRequest{Room: "only-b"})
	requireCode(t, err, twirp.PermissionDenied, "room_admin is not room_create")
	_, err = scoped.ListRooms(sctx, &livekit.ListRoomsRequest{})
	requireCode(t, err, twirp.PermissionDenied, "room_admin is not room_list")
	// The same token does reach its own room's participant on node-b.
	_, err = scoped.RemoveParticipant(sctx, &livekit.RoomParticipantIdentity{Room: "spanned", Identity: "nobody"})
	requireCode(t, err, twirp.NotFound)
	got, err := rsA.GetParticipant(ctx, carolReq)
	require.NoError(t, err, "carol is still in only-b")
	require.Equal(t, "carol", got.GetIdentity())
	select {
	case <-carol.gone:
		t.Fatal("carol was disconnected")
	default:
	}

	// DeleteRoom through node-b ends the spanned room on both nodes, and
	// the directory drops it.
	_, err = rsB.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: "spanned"})
	require.NoError(t, err)
	alice.requireDeleted(t, "alice on node-a")
	bob.requireDeleted(t, "bob on node-b")
	require.Eventually(t, func() bool {
		la, errA := rsA.ListRooms(ctx, &livekit.ListRoomsRequest{})
		lb, errB := rsB.ListRooms(ctx, &livekit.ListRoomsRequest{})
		return errA == nil && errB == nil && !slices.Contains(roomNames(la.GetRooms()), "spanned") &&
			!slices.Contains(roomNames(lb.GetRooms()), "spanned")
	}, 10*time.Second, 50*time.Millisecond, "the deleted room is still listed: on node-a %v, on node-b %v",
		roomNames(a.srv.LocalRooms(nil)), roomNames(b.srv.LocalRooms(nil)))
	_, err = rsA.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: "spanned"})
	requireCode(t, err, twirp.NotFound, "as livekit-server: deleting a room that does not exist")
	// Through node-a, a room that lives on node-b only, and one on node-a only.
	_, err = rsA.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: "only-b"})
	require.NoError(t, err)
	carol.requireDeleted(t, "carol on node-b")
	_, err = rsB.DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: "fresh"})
	require.NoError(t, err)
	require.Empty(t, a.srv.LocalRooms(nil))
	require.Empty(t, b.srv.LocalRooms(nil))
	require.Eventually(t, func() bool {
		rooms, err := a.node.reg.Rooms(ctx)
		return err == nil && len(rooms) == 0
	}, 10*time.Second, 50*time.Millisecond, "the directory keeps deleted rooms")
}

func requireCode(t *testing.T, err error, code twirp.ErrorCode, msgAndArgs ...any) {
	t.Helper()
	var te twirp.Error
	require.True(t, errors.As(err, &te), "not a twirp error: %v", err)
	require.Equal(t, code, te.Code(), msgAndArgs...)
}
