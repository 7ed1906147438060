package loadtest

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
)

// StreamStats counts what arrived on one received track.
type StreamStats struct {
	Packets atomic.Uint64
	Bytes   atomic.Uint64
	Frames  atomic.Uint64 // intact frames (video) or payloads (audio)
	Corrupt atomic.Uint64 // frames or payloads failing the pattern check

	// Latency, when set before ReadTrack starts, receives the delivery time
	// of every intact frame: the arrival of its first packet at the reader
	// minus the send time the publisher stamped into it.
	Latency *Histogram
	// OnAudio, when set before ReadTrack starts, is called with every
	// intact audio frame and the time its packet arrived.
	OnAudio func(f Frame, arrived time.Time)

	mu         sync.Mutex
	lastMarker string
	markers    map[string]uint64
	// freezes: gaps longer than FreezeGap between intact frames
	lastFrame time.Time
	freezes   uint64
	frozen    time.Duration // total length of those gaps
	longest   time.Duration
	// loss accounting after the grace period
	start     time.Time
	counting  bool
	baseSeq   uint64 // extended sequence number of the first counted packet
	highest   uint64
	received  uint64
	cycles    uint64
	lastRaw   uint16
	haveFirst bool
}

// LastMarker returns the marker of the last intact frame (for video
// "identity/q|h|f").
func (s *StreamStats) LastMarker() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastMarker
}

// MarkerCount returns how many intact frames carried marker.
func (s *StreamStats) MarkerCount(marker string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.markers[marker]
}

// Loss returns expected and received packet counts since the grace period.
func (s *StreamStats) Loss() (expected, received uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.counting {
		return 0, 0
	}
	return s.highest - s.baseSeq + 1, s.received
}

// LastSeq returns the highest sequence number received so far; ok is
// false before the first packet.
func (s *StreamStats) LastSeq() (seq uint16, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastRaw, s.haveFirst
}

// counts returns the highest extended sequence number and the packets
// counted so far (zero before the grace period ended).
func (s *StreamStats) counts() (highest, received uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.highest, s.received, s.counting
}

func (s *StreamStats) packet(seq uint16, grace time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if !s.haveFirst {
		s.haveFirst, s.start, s.lastRaw = true, now, seq
	}
	if seq < 0x1000 && s.lastRaw > 0xf000 {
		s.cycles += 1 << 16
	}
	ext := s.cycles + uint64(seq)
	if seq > 0xf000 && s.lastRaw < 0x1000 && s.cycles > 0 {
		ext -= 1 << 16 // late packet from before the wrap
	}
	if int16(seq-s.lastRaw) > 0 {
		s.lastRaw = seq
	}
	if !s.counting {
		if now.Sub(s.start) < grace {
			return
		}
		s.counting, s.baseSeq, s.highest = true, ext, ext
	}
	if ext < s.baseSeq {
		return
	}
	if ext > s.highest {
		s.highest = ext
	}
	s.received++
}

// FreezeGap is the longest gap between two intact frames of a stream that
// is not a freeze (the benchmark protocol's "> 500 ms between frames").
const FreezeGap = 500 * time.Millisecond

// freezeMark is a stream's freeze accounting at one moment.
type freezeMark struct {
	freezes uint64
	frozen  time.Duration
	longest time.Duration
	ok      bool // the stream has had a frame
}

// freezeState returns the freezes so far, a gap still open at now
// included (a stream that stopped is frozen until it resumes).
func (s *StreamStats) freezeState(now time.Time) freezeMark {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := freezeMark{freezes: s.freezes, frozen: s.frozen, longest: s.longest, ok: !s.lastFrame.IsZero()}
	if gap := now.Sub(s.lastFrame); m.ok && gap > FreezeGap {
		m.freezes++
		m.frozen += gap
		m.longest = max(m.longest, gap)
	}
	return m
}

func (s *StreamStats) frame(marker string, at time.Time) {
	s.mu.Lock()
	if gap := at.Sub(s.lastFrame); !s.lastFrame.IsZero() && gap > FreezeGap {
		s.freezes++
		s.frozen += gap
		s.longest = max(s.longest, gap)
	}
	if at.After(s.lastFrame) {
		s.lastFrame = at
	}
	s.lastMarker = marker
	if s.markers == nil {
		s.markers = map[string]uint64{}
	}
	s.markers[marker]++
	s.mu.Unlock()
	s.Frames.Add(1)
}

// ReadTrack reads a subscribed track until it ends, checking every payload
// built by this package. Video frames are reassembled from VP8 packets.
func ReadTrack(track *webrtc.TrackRemote, st *StreamStats, grace time.Duration) {
	video := strings.EqualFold(track.Codec().MimeType, webrtc.MimeTypeVP8)
	var frame []byte
	var lastSeq uint16
	var frameStart time.Time
	intact := false
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	for {
		n, _, err := track.Read(buf)
		if err != nil {
			return
		}
		arrived := time.Now()
		if err := pkt.Unmarshal(buf[:n]); err != nil {
			continue
		}
		st.Packets.Add(1)
		st.Bytes.Add(uint64(n))
		st.packet(pkt.SequenceNumber, grace)
		if !video {
			if f, err := CheckAudioFrame(pkt.Payload); err == nil {
				st.frame(f.Marker, arrived)
				if st.Latency != nil {
					st.Latency.Add(arrived.Sub(f.Sent))
				}
				if st.OnAudio != nil {
					st.OnAudio(f, arrived)
				}
			} else {
				st.Corrupt.Add(1)
			}
			continue
		}
		var vp8 codecs.VP8Packet
		part, err := vp8.Unmarshal(pkt.Payload)
		if err != nil {
			intact = false
			continue
		}
		if vp8.S == 1 && vp8.PID == 0 {
			frame, intact, frameStart = frame[:0], true, arrived
		} else if pkt.SequenceNumber != lastSeq+1 {
			intact = false
		}
		lastSeq = pkt.SequenceNumber
		frame = append(frame, part...)
		if pkt.Marker && intact {
			intact = false
			if f, err := CheckVP8Frame(frame); err == nil {
				st.frame(f.Marker, arrived)
				if st.Latency != nil {
					st.Latency.Add(frameStart.Sub(f.Sent))
				}
			} else {
				st.Corrupt.Add(1)
			}
		}
	}
}
