package cluster

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"sync"
)

// CPUSampler measures the machine's busy CPU fraction (all cores, 0..1)
// between two calls of Busy, from /proc/stat. Where /proc/stat cannot be
// read it reports 0.
type CPUSampler struct {
	path string

	mu         sync.Mutex
	idle, all  uint64
	last       float64
	haveSample bool
}

// NewCPUSampler returns a sampler of /proc/stat.
func NewCPUSampler() *CPUSampler { return &CPUSampler{path: "/proc/stat"} }

// Busy returns the busy fraction since the previous call (the first call:
// since boot).
func (s *CPUSampler) Busy() float64 {
	idle, all, ok := readProcStat(s.path)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok {
		return 0
	}
	if s.haveSample && all > s.all && idle >= s.idle {
		d := all - s.all
		s.last = 1 - float64(idle-s.idle)/float64(d)
	} else if all > 0 {
		s.last = 1 - float64(idle)/float64(all)
	}
	s.idle, s.all, s.haveSample = idle, all, true
	return min(max(s.last, 0), 1)
}

// readProcStat sums the aggregate "cpu" line: idle (idle+iowait) and all jiffies.
func readProcStat(path string) (idle, all uint64, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) < 5 || string(f[0]) != "cpu" {
			continue
		}
		for i, v := range f[1:] {
			n, err := strconv.ParseUint(string(v), 10, 64)
			if err != nil {
				return 0, 0, false
			}
			all += n
			if i == 3 || i == 4 { // idle, iowait
				idle += n
			}
		}
		return idle, all, true
	}
	return 0, 0, false
}
