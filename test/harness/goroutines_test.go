package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// parkForDump blocks on ch: the goroutines the report must find.
func parkForDump(ch chan struct{}) { <-ch }

// TestMain runs the package's tests, or, with GXTEST_PARKED set, is the
// process TestHungReport dumps: it parks three goroutines in parkForDump,
// logs a "Still stopping" line, says "ready" and waits for SIGQUIT.
func TestMain(m *testing.M) {
	if os.Getenv("GXTEST_PARKED") != "" {
		parkedProcess()
	}
	os.Exit(m.Run())
}

func parkedProcess() {
	ch := make(chan struct{})
	for range 3 {
		go parkForDump(ch)
	}
	// Until all three are parked: a goroutine just started is "runnable".
	parked := regexp.MustCompile(`\[chan receive\]:\n(?:.*\n\t.*\n)*?github\.com/gxfs-conf/gxconf/test/harness\.parkForDump`)
	buf := make([]byte, 1<<20)
	for len(parked.FindAllIndex(buf[:runtime.Stack(buf, true)], -1)) < 3 {
		runtime.Gosched()
	}
	fmt.Fprintln(os.Stderr, `{"level":"warn","components":["sfu"],"message":"Still stopping"}`)
	fmt.Println("ready")
	select {}
}

// TestHungReport sends SIGQUIT to a real Go process, as Stop does to a
// hung gxconf, and checks that the report names the parked goroutines in
// one grouped line with their count, and carries the process' "Still
// stopping" line, ahead of the log's tail.
func TestHungReport(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "GXTEST_PARKED=1", "GOTRACEBACK=all")
	var out bytes.Buffer
	cmd.Stderr = &out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		_ = cmd.Process.Kill()
		t.Fatalf("helper did not get ready: %q %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	dump := out.String()
	if !strings.Contains(dump, "goroutine ") {
		t.Fatalf("no goroutine dump from the helper:\n%s", dump)
	}

	report := hungReport(dump)
	parked := regexp.MustCompile(`(?m)^3× \[chan receive\] test/harness\.parkForDump goroutines_test\.go:\d+ ← test/harness\.parkedProcess\.gowrap1 goroutines_test\.go:\d+ ⇐ go test/harness\.parkedProcess goroutines_test\.go:\d+$`)
	if !parked.MatchString(report) {
		t.Errorf("the three parked goroutines are not one line of the report:\n%s", report)
	}
	if !strings.HasPrefix(report, `{"level":"warn","components":["sfu"],"message":"Still stopping"}`) {
		t.Errorf("the report does not start with the Still stopping line:\n%s", report)
	}
	if len(report) > len(dump) {
		t.Errorf("the report (%d bytes) is longer than the dump (%d)", len(report), len(dump))
	}
	t.Logf("report:\n%s", report)
}

// TestHungReportWithoutDump: a log without a dump (the process died
// before SIGQUIT took effect) still gives the tail and says so.
func TestHungReportWithoutDump(t *testing.T) {
	var log strings.Builder
	for i := range 50 {
		fmt.Fprintf(&log, "line %d\n", i)
	}
	r := hungReport(log.String())
	if !strings.Contains(r, "(no goroutine dump in the log)") || !strings.Contains(r, "line 49\n") || strings.Contains(r, "line 19\n") {
		t.Errorf("report:\n%s", r)
	}
}

// TestCondenseOddDump: a cut or odd dump (an empty file line, a header
// without a state, nothing at all) still gives a report, never a panic.
func TestCondenseOddDump(t *testing.T) {
	for _, dump := range []string{"", "goroutine", "goroutine 7 [\n", "goroutine 1 [running]:\nmain.f()\n\t\nmain.g()\n"} {
		r := CondenseGoroutines(dump)
		if !strings.HasPrefix(r, "goroutines at SIGQUIT") {
			t.Errorf("%q: %q", dump, r)
		}
	}
	if r := CondenseGoroutines("goroutine 1 [running]:\nmain.f()\n\t\nmain.g()\n"); !strings.Contains(r, "1× [running] main.f  ← main.g ") {
		t.Errorf("report: %q", r)
	}
}
