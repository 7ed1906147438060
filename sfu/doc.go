// Package sfu is gxconf's embedded, LiveKit-compatible selective forwarding unit.
//
// It owns LiveKit signalling (/rtc, /rtc/validate), pion/webrtc peer connections,
// RTP/RTCP forwarding, simulcast layer selection, data channels and the Twirp
// livekit.RoomService API. All state is in memory.
//
// It must not import any other gxconf package.
package sfu
