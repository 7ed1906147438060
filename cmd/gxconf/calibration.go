package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/gxfs-conf/gxconf/loadtest"
	"github.com/gxfs-conf/gxconf/plan"
)

// writeCalibration turns a single-node loadtest report into a calibration
// file for `gxconf plan` (figures the run cannot measure are kept from the
// embedded default, and the file says so).
func writeCalibration(path string, rep *loadtest.Report, args []string, stdout io.Writer) error {
	fig := plan.RunFigures{
		Participants:     rep.Participants,
		TracksSubscribed: rep.TracksSubscribed,
		MicrosPerPacket:  rep.MicrosPerPacket,
		JoinCPUSeconds:   rep.SFUJoinCPUSeconds,
		JoinPackets:      rep.JoinPhasePackets,
		RSSStart:         rep.SFURSSStart,
		RSSEnd:           rep.SFURSSEnd,
		Date:             time.Now(),
		Machine:          machineDescription(rep.LoadAverage),
		Command:          "gxconf loadtest " + strings.Join(redactArgs(args), " "),
	}
	c, err := plan.FromRun(fig, plan.DefaultCalibration())
	if err != nil {
		return err
	}
	b, err := c.Marshal()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("failed to write calibration: %w", err)
	}
	_, _ = fmt.Fprintf(stdout, "calibration:       written to %s (forward %.2f us/packet, join %.1f ms, %.0f KiB per participant + %.0f KiB per subscribed track)\n",
		path, c.ForwardMicros, c.JoinCPUMillis, c.ParticipantKiB, c.SubscribedTrackKiB)
	return nil
}

// redactArgs replaces the value of -api-secret (the file records the
// command that produced it, and may be shared).
func redactArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "api-secret" {
			if hasValue {
				out = append(out, a[:strings.Index(a, "=")+1]+"REDACTED")
			} else {
				out = append(out, a)
				if i+1 < len(args) {
					out = append(out, "REDACTED")
					i++
				}
			}
			continue
		}
		out = append(out, a)
	}
	return out
}

// machineDescription names the CPU, cores, memory, kernel and Go version
// of this host (the load tool runs next to the SFU it measures) and the
// load average at the end of the run, which flags a shared machine.
func machineDescription(load float64) string {
	model, mem := "unknown CPU", ""
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		_ = f.Close()
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var kb uint64
			if _, err := fmt.Sscanf(sc.Text(), "MemTotal: %d kB", &kb); err == nil {
				mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
				break
			}
		}
		_ = f.Close()
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	s := fmt.Sprintf("%d CPUs %s%s%s, %s, load average %.2f at the end of the run", runtime.NumCPU(), model, mem, kernel, runtime.Version(), load)
	// Keep it printable: the planner refuses control characters.
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
