package bridge

import (
	"encoding/binary"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
	"testing"
	"time"

	"github.com/pion/rtp"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRelayPath measures the relay hop for one video layer: on the
// origin the sink (header copy, SRTP, UDP send), on the receiving node
// the read (UDP, SRTP), loss/NACK accounting and the SFU receive path of
// the relayed track (packet cache, keyframe detection, fan-out to no
// subscribers). send-cpu-ns/pkt is the sending end's CPU per packet (it
// runs inline on the benchmark's locked thread); recv-cpu-ns/pkt is the
// rest of the process's CPU per packet received on the other node, minus
// the two idle nodes' background rate measured before. ns/op is wall time
// including the pacing waits.
func BenchmarkRelayPath(b *testing.B) {
	na, nb := startNode(b, "node-a"), startNode(b, "node-b")
	link(b, "bench", na, nb)
	ot, bAssoc := relayedVideo(b, na, nb, "bench")

	payload := make([]byte, 1000)
	payload[0] = 0x10 // VP8 descriptor: S=1, partition 0
	payload[1] = 0x01 // inter frame
	h := &rtp.Header{Version: 2, PayloadType: 96, SSRC: 1234, Timestamp: 1}
	recv0 := bAssoc.stats.recvPk[2].Load()
	received := func() uint64 { return bAssoc.stats.recvPk[2].Load() - recv0 }

	// Hop latency: send time by sequence number, read at the receiver
	// after the packet went through the receive path.
	var sentAt [1 << 16]atomic.Int64
	lat := make([]time.Duration, 0, b.N)
	var latMu sync.Mutex
	hook := func(_ int, pkt []byte) {
		seq := binary.BigEndian.Uint16(pkt[2:4])
		if at := sentAt[seq].Load(); at != 0 {
			d := time.Duration(monoNanos() - at)
			latMu.Lock()
			lat = append(lat, d)
			latMu.Unlock()
		}
	}
	bAssoc.recvHook.Store(&hook)

	// Background CPU of the two idle nodes, to subtract.
	idleStart, idleCPU := time.Now(), cpuTime()
	time.Sleep(500 * time.Millisecond)
	idleRate := float64(cpuTime()-idleCPU) / float64(time.Since(idleStart))

	// The sending end runs inline on this goroutine: its thread's CPU
	// time is the send cost.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0, thr0 := time.Now(), cpuTime(), threadCPU()
	var send time.Duration
	for i := 0; i < b.N; i++ {
		h.SequenceNumber = uint16(i)
		if i%3 == 0 {
			h.Timestamp += 3000
		}
		h.Marker = i%3 == 2
		sentAt[uint16(i)].Store(monoNanos())
		ot.WriteRTP(2, h, payload)
		if i%32 == 31 {
			// At most 64 packets in flight, so the benchmark measures
			// cost, not socket buffer overflow.
			send += threadCPU() - thr0
			for received()+32 < uint64(i) {
				time.Sleep(100 * time.Microsecond)
			}
			thr0 = threadCPU()
		}
	}
	send += threadCPU() - thr0
	for last, stable := received(), 0; stable < 20 && received() < uint64(b.N); {
		time.Sleep(time.Millisecond)
		if cur := received(); cur == last {
			stable++
		} else {
			last, stable = cur, 0
		}
	}
	b.StopTimer()
	got := received()
	cpu := cpuTime() - cpu0 - time.Duration(idleRate*float64(time.Since(start)))
	b.ReportMetric(float64(send.Nanoseconds())/float64(b.N), "send-cpu-ns/pkt")
	if got > 0 {
		b.ReportMetric(float64((cpu-send).Nanoseconds())/float64(got), "recv-cpu-ns/pkt")
	}
	b.ReportMetric(1-float64(got)/float64(b.N), "loss")
	latMu.Lock()
	defer latMu.Unlock()
	if len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-hop-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-hop-µs")
	}
}

var benchStart = time.Now()

func monoNanos() int64 { return int64(time.Since(benchStart)) }

// threadCPU is the calling thread's CPU time.
func threadCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}
