package loadtest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

type procStats struct {
	cpu float64 // utime + stime, seconds
	sys float64 // stime (in the kernel, for the process), seconds
	rss uint64  // VmRSS, bytes
	hwm uint64  // VmHWM (peak RSS), bytes
}

// readProc reads CPU time and RSS of pid from /proc (pid 0: this process).
func readProc(pid int) (procStats, error) {
	dir := "/proc/self"
	if pid > 0 {
		dir = fmt.Sprintf("/proc/%d", pid)
	}
	var st procStats
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return st, err
	}
	// Fields after the command name, which may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return st, fmt.Errorf("unexpected %s/stat", dir)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return st, fmt.Errorf("unexpected %s/stat", dir)
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	stt, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return st, fmt.Errorf("unexpected %s/stat", dir)
	}
	st.cpu = float64(ut+stt) / clockTicks
	st.sys = float64(stt) / clockTicks
	fh, err := os.Open(dir + "/status")
	if err != nil {
		return st, err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := sc.Text()
		kb := func() uint64 {
			fs := strings.Fields(line)
			if len(fs) < 2 {
				return 0
			}
			v, _ := strconv.ParseUint(fs[1], 10, 64)
			return v * 1024
		}
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			st.rss = kb()
		case strings.HasPrefix(line, "VmHWM:"):
			st.hwm = kb()
		}
	}
	return st, sc.Err()
}

// udpRcvbufErrors returns the host's UDP RcvbufErrors counter from
// /proc/net/snmp: drops because a receiving socket's buffer was full.
func udpRcvbufErrors() (uint64, error) {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0, err
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "Udp: ") {
			continue
		}
		f := strings.Fields(line)
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				return strconv.ParseUint(f[i], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no Udp RcvbufErrors in /proc/net/snmp")
}

// loadAverage returns the 1-minute load average.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
