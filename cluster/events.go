package cluster

import "sync"

// EventType names a change in the cluster.
type EventType string

// Event types.
const (
	// EventNodeUp: a node registered (or re-registered after losing Redis).
	EventNodeUp EventType = "node_up"
	// EventNodeDown: a node deregistered or its liveness record expired.
	EventNodeDown EventType = "node_down"
	// EventNodeUpdated: a live node changed its state (serving/draining) or
	// its addresses; load changes are not events.
	EventNodeUpdated EventType = "node_updated"
	// EventRoomHosted and EventRoomReleased: Node started or stopped hosting Room.
	EventRoomHosted   EventType = "room_hosted"
	EventRoomReleased EventType = "room_released"
	// EventParticipantAdded and EventParticipantRemoved: Identity in Room on Node.
	EventParticipantAdded   EventType = "participant_added"
	EventParticipantRemoved EventType = "participant_removed"
	// EventTrackAdded and EventTrackRemoved: Track of Identity in Room on Node.
	EventTrackAdded   EventType = "track_added"
	EventTrackRemoved EventType = "track_removed"
	// EventResync: events may have been lost (slow subscriber, registry
	// outage); re-read whatever the subscriber keeps from the directory.
	EventResync EventType = "resync"
)

// Event is one change notification. Added events are upserts: a subscriber
// may see the same entry added more than once (e.g. when a node reconciles).
type Event struct {
	Type  EventType
	Node  NodeID
	Epoch uint64
	Room  RoomName
	// Identity is set for participant and track events.
	Identity ParticipantIdentity
	// Track is set for track events.
	Track TrackID
	// Participant and TrackInfo carry the entry of added events.
	Participant *ParticipantEntry
	TrackInfo   *TrackEntry
}

// Subscription receives events until Close.
type Subscription struct {
	c chan Event
	b *broker
}

// C is the channel events arrive on; it is closed by Close.
func (s *Subscription) C() <-chan Event { return s.c }

// Close ends the subscription and closes C. It is idempotent.
func (s *Subscription) Close() { s.b.remove(s) }

// broker fans events out to subscriptions without ever blocking: a full
// subscription loses its queued events and gets one EventResync instead.
type broker struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
}

func newBroker() *broker { return &broker{subs: map[*Subscription]struct{}{}} }

func (b *broker) subscribe(buffer int) *Subscription {
	if buffer < 1 {
		buffer = 1
	}
	s := &Subscription{c: make(chan Event, buffer), b: b}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s
}

func (b *broker) remove(s *Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		close(s.c)
	}
}

func (b *broker) publish(ev Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.c <- ev:
		default:
			// Lagging: drop what is queued (the subscriber re-reads anyway)
			// and tell it so.
		drain:
			for {
				select {
				case <-s.c:
				default:
					break drain
				}
			}
			s.c <- Event{Type: EventResync}
		}
	}
}

func (b *broker) closeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		delete(b.subs, s)
		close(s.c)
	}
}
