// Package cluster is gxconf's node registry, room directory and placement:
// which SFU nodes are alive, in which site and federation they sit, how loaded
// they are, which nodes host which LiveKit room, where each participant and
// track lives, and on which site and node a new participant should land.
//
// Two implementations share one interface (Registry): Embedded, a single node
// held in memory (the default, nothing to run), and Redis, for several nodes
// (github.com/redis/go-redis/v9). Redis is an index and a message bus, never
// on the media path:
//
//   - Each node owns its entries (rooms it hosts, its participants and
//     tracks) and keeps them in memory. Announcer calls never block on the
//     network; the Redis registry flushes changes from its Run loop.
//   - Liveness is a node record written with a short TTL (liveness_ttl,
//     2.5 s by default) and refreshed every heartbeat_interval (500 ms). A
//     node that stops heartbeating disappears within the TTL and the others
//     notice at their next heartbeat (within 3 s by default); the survivors
//     reap its directory entries and publish their removal. A record that
//     stays malformed and unchanged beyond the TTL is removed so that its
//     node is reaped the same way; listed ids that are not node IDs are
//     removed from the node list.
//   - When Redis is unreachable the node keeps its local view and keeps
//     serving, retries with backoff, and once Redis answers again (or has
//     lost the node's record, e.g. after a Redis restart) re-publishes
//     everything it owns and removes what it no longer owns (reconcile).
//   - A node ID belongs to its newest run (epoch): a process that finds a
//     newer run's record under its ID stops writing to Redis, leaves the
//     node's message inbox to the newer run, and on shutdown deletes
//     nothing, until that record is gone. It does not see the newer run
//     as another node either: the node ID is the address everywhere (the
//     inbox channel, the bridge's links, the room entry's field, every
//     consumer's "is this me?" check), so a newer run it listed would be
//     one it cannot reach apart from itself (Send to its own ID is
//     delivered locally) and that its consumers skip as itself. It lists
//     itself as draining instead (no placements), keeps serving whom it
//     has, and should be stopped; it is logged at error level.
//
// See redis.go for the key and channel schema.
//
// Change notifications (node up, down, updated; room hosted or released;
// participant and track added or removed) reach subscribers as Events on a
// channel. Events are hints: "added" means "upsert", and a subscriber that
// falls behind, or a node that lost Redis for a while, gets EventResync,
// after which it re-reads the directory.
//
// Nodes also exchange messages (NodeBus: Send to a node, Listen on a topic),
// best effort and at most once, for the bridge's signalling and cluster-wide
// RoomService calls. With a shared key (message_key_file) every message and
// event is signed (HMAC-SHA256 over the channel, sender, epoch, send time,
// a random id and the content), and receivers refuse what is unsigned,
// badly signed, from another sender than the signed one, outside a ±30 s
// window or seen before (sign.go). Node records and directory entries are
// not signed.
//
// Placement (Place, Placer) picks the site of a requester (client address
// prefix, homeserver, federation, default site) and a live, serving node
// under its limits there, preferring a node that already hosts the room, and
// falls back to other sites in configured order.
//
// # Wiring
//
// cmd/gxconf builds the registry with New (WithLoadSource: the SFU's counts
// plus a CPUSampler), runs its Run beside the other components, installs
// RedisLogger with redis.SetLogger, calls SetState(NodeDraining) before
// draining (started by SIGTERM or DrainHandler on the metrics listener), and hands the registry to its consumers, each of which declares
// the small interface it needs: the focus a placer (NewPlacer over the
// registry), the SFU nothing (it must not import cluster; cmd adapts its
// room, participant and track hooks to Announcer), the bridge Directory,
// Notifier, NodeView and NodeBus.
//
// # Concurrency
//
// core.mu guards the local view (self record, owned entries, dirty set);
// Redis.viewMu the other nodes' view; Redis.psMu the Pub/Sub
// subscription's channels (the loop takes the inbox out while superseded);
// broker.mu the subscribers and mailboxes.mu the inboxes. core.mu and viewMu are never held together;
// broker.mu and mailboxes.mu are innermost, and delivery under them never
// blocks. The Redis registry's Run owns two goroutines (the
// heartbeat/flush loop and the Pub/Sub receiver, which has a helper that
// closes the subscription on shutdown) and returns after all ended and the
// node deregistered. The loop has its own Redis client, apart from the one
// lookups, Send and the receiver share, so that lookups waiting for a
// connection never delay a heartbeat.
//
// It must not import any other gxconf package.
package cluster
