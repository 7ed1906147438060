package cluster

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
)

// Message is a node-to-node message (bridge signalling, cluster-wide
// RoomService calls). Delivery is best effort and at most once: the sender
// learns only whether the node was listening.
type Message struct {
	From      NodeID
	FromEpoch uint64
	Topic     string
	Payload   []byte
}

// MaxPayload bounds a message's payload.
const MaxPayload = 64 << 10

// Inbox receives the messages of one topic until Close.
type Inbox struct {
	c       chan Message
	topic   string
	mb      *mailboxes
	dropped atomic.Uint64
}

// C is the channel messages arrive on; Close closes it.
func (in *Inbox) C() <-chan Message { return in.c }

// Dropped counts messages lost because the inbox was full.
func (in *Inbox) Dropped() uint64 { return in.dropped.Load() }

// Close stops delivery and closes C. It is idempotent.
func (in *Inbox) Close() { in.mb.remove(in) }

// mailboxes routes incoming messages to inboxes by topic, never blocking:
// a full inbox drops the message and counts it.
type mailboxes struct {
	mu     sync.Mutex
	topics map[string]map[*Inbox]struct{}
}

func newMailboxes() *mailboxes { return &mailboxes{topics: map[string]map[*Inbox]struct{}{}} }

func (m *mailboxes) listen(topic string, buffer int) *Inbox {
	in := &Inbox{c: make(chan Message, max(buffer, 1)), topic: topic, mb: m}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.topics[topic] == nil {
		m.topics[topic] = map[*Inbox]struct{}{}
	}
	m.topics[topic][in] = struct{}{}
	return in
}

func (m *mailboxes) remove(in *Inbox) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if set := m.topics[in.topic]; set != nil {
		if _, ok := set[in]; ok {
			delete(set, in)
			close(in.c)
			if len(set) == 0 {
				delete(m.topics, in.topic)
			}
		}
	}
}

// deliver hands msg to the topic's inboxes and reports whether any listened.
func (m *mailboxes) deliver(msg Message) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	set := m.topics[msg.Topic]
	for in := range set {
		select {
		case in.c <- msg:
		default:
			in.dropped.Add(1)
		}
	}
	return len(set) > 0
}

func (m *mailboxes) closeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for topic, set := range m.topics {
		for in := range set {
			close(in.c)
		}
		delete(m.topics, topic)
	}
}

type wireMessage struct {
	From    string `json:"from"`
	Epoch   string `json:"epoch"`
	Topic   string `json:"topic"`
	Payload []byte `json:"payload"`
}

// MarshalMessage encodes a message for the bus.
func MarshalMessage(m Message) ([]byte, error) {
	p := m.Payload
	if p == nil {
		p = []byte{}
	}
	return json.Marshal(wireMessage{From: string(m.From), Epoch: fmtEpoch(m.FromEpoch), Topic: m.Topic, Payload: p})
}

// ParseMessage decodes and checks a message read from the bus.
func ParseMessage(data []byte) (Message, error) {
	var w wireMessage
	if err := decodeStrict(data, &w); err != nil {
		return Message{}, err
	}
	m := Message{From: NodeID(w.From), Topic: w.Topic, Payload: w.Payload}
	var err error
	if m.FromEpoch, err = parseEpoch(w.Epoch); err != nil {
		return Message{}, err
	}
	if err := checkNodeID(m.From); err != nil {
		return Message{}, err
	}
	if !validTopic(m.Topic) {
		return Message{}, fmt.Errorf("%w: topic %q", ErrInvalidRecord, m.Topic)
	}
	if m.Payload == nil || len(m.Payload) > MaxPayload {
		return Message{}, fmt.Errorf("%w: payload", ErrInvalidRecord)
	}
	return m, nil
}

func validTopic(t string) bool { return validToken(t, maxIDLen) }
