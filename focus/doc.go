// Package focus is gxconf's MatrixRTC focus: the HTTP API that Element Call and
// BundesMessenger Call use to get a LiveKit token, wire-compatible with
// element-hq/lk-jwt-service (POST /get_token, POST /sfu/get,
// POST /delegate_delayed_leave, GET /healthz), plus discovery helpers
// (/.well-known/matrix/client fragment and MSC4143/MSC4519 rtc/transports).
//
// A token request is decoded and validated at the edge, then processed:
// the OpenID token is verified with the user's homeserver (federation server
// discovery, cached briefly), room membership is checked through the
// MembershipChecker the caller provides (the appservice), the room's access
// decision is taken through an AccessDecider, the LiveKit room is created
// through a RoomService (the embedded SFU in-process, or a stock LiveKit server
// over Twirp) and a LiveKit JWT is minted. Every token carries the ID (jti) of a
// grant recorded before the membership check; when the user leaves or is
// banned from the Matrix room or loses their credential, RemoveUser revokes
// all their grants for the room, durably, and removes their participants. The
// embedded SFU asks CheckGrant and RenewGrant about every token it is shown.
//
// After the access decision, an Entitlements implementation (the catalog's
// service bookings, wired in cmd) may refuse the request with a reason, cap
// the SFU room, end the token with the booking and restrict placement to the
// booked sites.
//
// Clients may delegate their MSC4140 delayed leave event (delay fields on the
// token endpoints, /delegate_delayed_leave), as with lk-jwt-service: a
// persisted job per LiveKit participant restarts it on the user's homeserver
// while the SFU has the participant and sends it once they are gone or
// removed (delayed.go).
//
// It must not import appservice, sfu, catalog, meetings or cmd.
package focus
