// Package loadtest is gxconf's load generator for LiveKit-compatible SFUs
// (the embedded one or a stock livekit-server). It joins rooms with
// github.com/livekit/server-sdk-go/v2, publishes synthetic audio and
// simulcast VP8 (real VP8 key/inter frame headers, a checkable payload),
// subscribes, and reports join latency, subscribed tracks, bitrate, packet
// loss and, given the server's pid, its CPU time per forwarded packet and
// its RSS from /proc.
//
// It imports no other gxconf package.
package loadtest
