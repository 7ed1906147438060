package sfu

import (
	"slices"

	"github.com/livekit/protocol/livekit"
)

// Packet trailers (livekit-client 2.23's frame metadata, server-sdk-go's
// AttachUserTimestamp): a publisher that announces packet_trailer_features
// in add_track appends to each encoded video frame a trailer of
// XOR-masked TLVs (user timestamp, frame id), its length byte (XOR 0xFF)
// and the magic "LKTS", so it ends the frame's last RTP packet (the one
// with the marker bit). Subscribers whose ClientInfo lists
// CAP_PACKET_TRAILER read it (livekit-client with a frame metadata or E2EE
// worker); for the others the SFU cuts it off, as livekit-server does, so
// their decoders never see it. The features travel in the TrackInfo, which
// tells a capable subscriber to look for the trailer.

// trailerMagic ends every packet trailer.
var trailerMagic = [4]byte{'L', 'K', 'T', 'S'}

// trailerEnvelope is the trailer's own length byte and the magic.
const trailerEnvelope = 5

// packetTrailerLen returns the length of the trailer that ends payload, or
// 0 when it has none. The length byte is checked against the payload: a
// trailer that would take all of it (or more, when the packetiser split
// the trailer over two packets) is not cut — the packet is left as it
// came rather than sent empty (livekit-server cuts one that is all
// trailer).
func packetTrailerLen(payload []byte) int {
	n := len(payload)
	if n <= trailerEnvelope || [4]byte(payload[n-4:]) != trailerMagic {
		return 0
	}
	l := int(payload[n-5] ^ 0xff)
	if l < trailerEnvelope || l >= n {
		return 0
	}
	return l
}

// knownTrailerFeatures returns the packet trailer features of an add_track
// request without unknown values and repeats (at most the three there are).
func knownTrailerFeatures(fs []livekit.PacketTrailerFeature) []livekit.PacketTrailerFeature {
	var out []livekit.PacketTrailerFeature
	for _, f := range fs {
		if _, known := livekit.PacketTrailerFeature_name[int32(f)]; known && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}
