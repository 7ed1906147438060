package rtptest

import (
	"encoding/binary"
	"sync"

	"github.com/pion/webrtc/v4"
)

// Trailer is the packet trailer carrying user timestamp ts (15 bytes), as
// server-sdk-go's and livekit-client's publishers append it to a frame:
// XOR-masked TLVs, their length XOR 0xff and the magic "LKTS".
func Trailer(ts uint64) []byte {
	tr := []byte{0x01 ^ 0xff, 8 ^ 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 15 ^ 0xff, 'L', 'K', 'T', 'S'}
	binary.BigEndian.PutUint64(tr[2:], ^ts)
	return tr
}

// FrameEnds records the payloads of the last packets of the frames a
// subscriber receives (marker bit set). The zero value is ready; Wait
// waits for the readers, which end with their tracks.
type FrameEnds struct {
	mu   sync.Mutex
	ends [][]byte
	wg   sync.WaitGroup
}

// Read records track until it ends.
func (f *FrameEnds) Read(track *webrtc.TrackRemote) {
	f.wg.Go(func() {
		for {
			p, _, err := track.ReadRTP()
			if err != nil {
				return
			}
			if p.Marker {
				f.mu.Lock()
				f.ends = append(f.ends, append([]byte(nil), p.Payload...))
				f.mu.Unlock()
			}
		}
	})
}

// Snapshot returns the payloads recorded so far.
func (f *FrameEnds) Snapshot() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.ends...)
}

// Count is the number of payloads recorded so far.
func (f *FrameEnds) Count() int { return len(f.Snapshot()) }

// Wait waits until every reader ended.
func (f *FrameEnds) Wait() { f.wg.Wait() }
