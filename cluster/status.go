package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Status is what `gxconf cluster status` prints: the live nodes by site and
// the rooms with the nodes hosting them.
type Status struct {
	Self  NodeID
	Sites []SiteStatus
	Rooms []RoomStatus
	// Partial is set when the registry was unreachable: Rooms then holds
	// this node's own rooms only.
	Partial bool
	// Links are the asked node's relay links with the other nodes of its
	// cluster (one per room and node pair; the bridge's view, not the
	// registry's: ask each node for its own).
	Links []LinkStatus `json:",omitempty"`
	// Peering is this node's relay with peered deployments (issue 10);
	// nil without peering.
	Peering *PeeringStatus `json:",omitempty"`
}

// PeeringStatus is one node's view of its deployment's peerings: the peer
// deployments, the rooms it relays with them now and the participants that
// reach those rooms through them.
type PeeringStatus struct {
	// Self is this deployment's peer name.
	Self         string
	Peers        []PeerStatus
	Links        []PeerLinkStatus
	Participants []PeerParticipant
}

// PeerStatus is a configured peer deployment.
type PeerStatus struct {
	Name         string
	RelayAddress string
	// URL is where our rooms' subscribers among the peer's users go.
	URL         string
	Homeservers []string
	// Levels are the levels of our rooms the peer may relay.
	Levels []string
}

// Directions of a peer link.
const (
	// PeerOut: our room, relayed to the peer for its users.
	PeerOut = "out"
	// PeerIn: the peer's room, relayed here for our users.
	PeerIn = "in"
)

// PeerLinkStatus is one room relayed with a peer deployment (one relay
// association over the IX): every track crosses it once, whatever the
// number of subscribers behind it. Room is the room's name on this node
// (PeerIn: in the peer's namespace, gxpeer.<peer>.<room>); PeerNode is the
// peer's node at the other end (empty until known).
type PeerLinkStatus struct {
	LinkStatus
	Peer      string
	Direction string
}

// LinkStatus is one relay association of a room with another node: every
// track wanted there crosses it once.
type LinkStatus struct {
	Room     string
	PeerNode string
	// Connected is false while the link is being set up (or re-linked
	// after the link failed).
	Connected bool
	// TracksOut, TracksIn are the tracks crossing the link now.
	TracksOut, TracksIn int
	// BitrateOut, BitrateIn are RTP bit/s since the previous status (the
	// first: since the link came up).
	BitrateOut, BitrateIn uint64
	// RTT is the link's round trip time (ICE consent checks; 0 unknown).
	RTT time.Duration
	// PacketsOut, PacketsIn count RTP packets; LostPackets those from the
	// peer found missing (each NACKed), Retransmits those resent on the
	// peer's NACKs.
	PacketsOut, PacketsIn    uint64
	LostPackets, Retransmits uint64
}

// PeerParticipant is a participant of a peer deployment in a relayed room:
// connected to node of deployment, present here through the relay.
type PeerParticipant struct {
	Room       string
	Identity   string
	Deployment string
	Node       string
}

// SiteStatus lists a site's live nodes.
type SiteStatus struct {
	Site  SiteID
	Nodes []Node
}

// RoomStatus is one room: its nodes and how many participants and tracks
// each has there.
type RoomStatus struct {
	Room  RoomName
	Nodes []RoomNodeStatus
}

// RoomNodeStatus counts a room's entries on one node.
type RoomNodeStatus struct {
	Node         NodeID
	Participants int
	Tracks       int
}

// StatusSource is what Snapshot reads (every Registry is one).
type StatusSource interface {
	NodeView
	Directory
}

// Snapshot collects the cluster status from a registry.
func Snapshot(ctx context.Context, src StatusSource) (Status, error) {
	st := Status{Self: src.Self().ID}
	bySite := map[SiteID]int{}
	for _, n := range src.Nodes() {
		i, ok := bySite[n.Site]
		if !ok {
			i = len(st.Sites)
			bySite[n.Site] = i
			st.Sites = append(st.Sites, SiteStatus{Site: n.Site})
		}
		st.Sites[i].Nodes = append(st.Sites[i].Nodes, n)
	}
	partial := func(err error) error {
		if errors.Is(err, ErrUnavailable) {
			st.Partial = true
			return nil
		}
		return err
	}
	rooms, err := src.Rooms(ctx)
	if err = partial(err); err != nil {
		return Status{}, fmt.Errorf("failed to list rooms: %w", err)
	}
	for _, room := range rooms {
		rs := RoomStatus{Room: room}
		idx := map[NodeID]int{}
		at := func(id NodeID) *RoomNodeStatus {
			i, ok := idx[id]
			if !ok {
				i = len(rs.Nodes)
				idx[id] = i
				rs.Nodes = append(rs.Nodes, RoomNodeStatus{Node: id})
			}
			return &rs.Nodes[i]
		}
		hosts, err := src.RoomNodes(ctx, room)
		if err = partial(err); err != nil {
			return Status{}, fmt.Errorf("failed to read room %s: %w", room, err)
		}
		for _, h := range hosts {
			at(h.Node)
		}
		parts, err := src.Participants(ctx, room)
		if err = partial(err); err != nil {
			return Status{}, fmt.Errorf("failed to read room %s: %w", room, err)
		}
		for _, p := range parts {
			at(p.Node).Participants++
		}
		tracks, err := src.Tracks(ctx, room)
		if err = partial(err); err != nil {
			return Status{}, fmt.Errorf("failed to read room %s: %w", room, err)
		}
		for _, t := range tracks {
			at(t.Node).Tracks++
		}
		st.Rooms = append(st.Rooms, rs)
	}
	return st, nil
}
