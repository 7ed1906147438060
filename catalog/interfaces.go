package catalog

import (
	"context"

	"github.com/gxfs-conf/gxconf/cluster"
)

// Directory tells who is connected to a LiveKit room across the cluster
// (cluster.Directory implements it; a single node adapts its SFU).
type Directory interface {
	Participants(ctx context.Context, room cluster.RoomName) ([]cluster.ParticipantEntry, error)
}

var _ Directory = cluster.Directory(nil)
