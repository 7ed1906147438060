package cluster

import "errors"

// Sentinel errors.
var (
	// ErrNotFound: the directory has no such entry.
	ErrNotFound = errors.New("not found in the cluster directory")
	// ErrUnavailable: the shared registry (Redis) cannot be reached; results
	// returned with it hold this node's own entries only.
	ErrUnavailable = errors.New("cluster registry unavailable")
	// ErrNoNodes: no live, serving node in the requester's site or its fallbacks.
	ErrNoNodes = errors.New("no live serving node")
	// ErrNoCapacity: every live, serving node in the requester's site and its
	// fallbacks is at one of its limits.
	ErrNoCapacity = errors.New("every node is at its limits")
	// ErrNotDelivered: no inbox on the target node listens to the topic (or
	// the node is not connected to the bus).
	ErrNotDelivered = errors.New("message not delivered")
	// ErrInvalidRecord: data read from the registry is malformed.
	ErrInvalidRecord = errors.New("invalid cluster record")
)
