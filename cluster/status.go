package cluster

import (
	"context"
	"errors"
	"fmt"
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
