// Package appservice is gxconf's Matrix application service: it receives the
// homeserver's transactions (hs_token checked in constant time, transaction
// IDs remembered in the database so a redelivery is ignored; a redelivery
// arriving while the first delivery is still processed waits for it), keeps room
// membership, power levels and MatrixRTC call memberships
// (org.matrix.msc3401.call.member, org.matrix.msc4143.rtc.member) in the
// store, answers user and alias queries, runs the bot user (auto-join on
// invite, "!conf help", "!conf status") and, when a user leaves or is banned
// from a room, tells the SFU side to remove that user's participants through
// the ParticipantRemover it is given.
//
// Concurrency: the transaction handler applies state changes synchronously
// (before answering 200, so nothing is acknowledged that was not stored) and
// hands side effects — bot replies, joins, participant removal — to one worker
// goroutine owned by Run, in order, once the transaction is recorded as
// processed (so a transaction answered 500 and retried does not repeat them).
//
// It must not import focus, sfu or cmd; it uses maunium.net/go/mautrix for
// the Matrix client side.
package appservice
