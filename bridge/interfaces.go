package bridge

import "github.com/gxfs-conf/gxconf/sfu"

// SFU is what the bridge needs of the local SFU node.
type SFU interface {
	// RelayRoom returns the relay handle of a room (created if create).
	RelayRoom(name string, create bool) (*sfu.RelayRoom, error)
	// PeerRooms returns the peer rooms here with their local participant
	// counts.
	PeerRooms() map[string]int
}

var _ SFU = (*sfu.Server)(nil)
