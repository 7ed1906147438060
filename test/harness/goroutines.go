package harness

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
)

// hungReport is what a failed Stop puts into its error: the process' own
// "Still stopping" lines, its goroutines grouped by stack, and the last
// lines of its log before the dump. The whole log can be 200 KB, and CI
// output that long is cut in the middle, where the dump is; this keeps
// the part that says what held the shutdown short and first.
func hungReport(log string) string {
	dumpAt := strings.Index(log, "\ngoroutine ")
	before, dump := log, ""
	if dumpAt >= 0 {
		before, dump = log[:dumpAt], log[dumpAt+1:]
	}
	var b strings.Builder
	for _, line := range strings.Split(before, "\n") {
		if strings.Contains(line, "Still stopping") {
			b.WriteString(line + "\n")
		}
	}
	if dump == "" {
		b.WriteString("(no goroutine dump in the log)\n")
	} else {
		b.WriteString(CondenseGoroutines(dump))
	}
	lines := strings.Split(strings.TrimRight(before, "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	b.WriteString("last lines before the dump:\n")
	for _, l := range lines {
		if len(l) > 400 {
			l = l[:400] + "…"
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

// CondenseGoroutines groups the goroutines of a Go traceback (as printed at
// SIGQUIT with GOTRACEBACK=all, or by runtime.Stack) by state and stack,
// one line per group: how many, the state, each frame's function and
// file:line (arguments, offsets and registers dropped), and where the
// goroutine was started. Groups with a frame in this module come first.
func CondenseGoroutines(dump string) string {
	type group struct {
		n    int
		line string
		ours bool
	}
	groups := map[string]*group{}
	var order []string
	for _, g := range strings.Split(dump, "\ngoroutine ") {
		lines := strings.Split(strings.TrimSpace(g), "\n")
		if len(lines) == 0 {
			continue
		}
		state := ""
		if i, j := strings.Index(lines[0], "["), strings.LastIndex(lines[0], "]"); i >= 0 && j > i {
			state = lines[0][i+1 : j]
			// "select, 3 minutes" → "select": the wait differs per goroutine.
			if k := strings.Index(state, ", "); k >= 0 && strings.Contains(state[k:], "minute") {
				state = state[:k]
			}
		}
		var frames []string
		created := ""
		ours := false
		for i := 1; i < len(lines); i++ {
			fn := strings.TrimSpace(lines[i])
			if fn == "" || strings.HasPrefix(lines[i], "\t") {
				continue
			}
			if strings.HasPrefix(fn, "rax ") || strings.HasPrefix(fn, "r8 ") || strings.HasPrefix(fn, "rip ") ||
				strings.HasPrefix(fn, "r12 ") || strings.HasPrefix(fn, "rflags ") || strings.HasPrefix(fn, "cs ") {
				break // the registers printed after the dump
			}
			where := ""
			if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "\t") {
				if f := strings.Fields(lines[i+1]); len(f) > 0 {
					where = filepath.Base(f[0])
				}
			}
			if strings.Contains(fn, "gxfs-conf/gxconf") {
				ours = true
			}
			if rest, ok := strings.CutPrefix(fn, "created by "); ok {
				if k := strings.Index(rest, " in goroutine "); k >= 0 {
					rest = rest[:k]
				}
				created = shortFunc(rest) + " " + where
				continue
			}
			if strings.HasSuffix(fn, ")") {
				if k := strings.LastIndex(fn, "("); k > 0 {
					fn = fn[:k]
				}
			}
			if strings.HasSuffix(fn, "...") { // "...additional frames elided..."
				continue
			}
			frames = append(frames, shortFunc(fn)+" "+where)
		}
		// The runtime's own frames above the code that blocked (gopark,
		// chanrecv, …) and below it (goexit) say nothing the state does not.
		for len(frames) > 1 && strings.HasPrefix(frames[0], "runtime.") {
			frames = frames[1:]
		}
		if n := len(frames); n > 1 && strings.HasPrefix(frames[n-1], "runtime.goexit ") {
			frames = frames[:n-1]
		}
		if len(frames) == 0 {
			continue
		}
		line := "[" + state + "] " + strings.Join(frames, " ← ")
		if created != "" {
			line += " ⇐ go " + created
		}
		if gr, ok := groups[line]; ok {
			gr.n++
			continue
		}
		groups[line] = &group{n: 1, line: line, ours: ours}
		order = append(order, line)
	}
	sort.SliceStable(order, func(i, j int) bool {
		a, b := groups[order[i]], groups[order[j]]
		if a.ours != b.ours {
			return a.ours
		}
		return a.n > b.n
	})
	var b strings.Builder
	fmt.Fprintf(&b, "goroutines at SIGQUIT, %d distinct stacks (ours first):\n", len(order))
	for _, k := range order {
		fmt.Fprintf(&b, "%d× %s\n", groups[k].n, groups[k].line)
	}
	return b.String()
}

// shortFunc drops a function name's module path up to its last two
// elements: "github.com/pion/webrtc/v4.(*RTPSender).Read" becomes
// "webrtc/v4.(*RTPSender).Read".
func shortFunc(fn string) string {
	head := fn
	if k := strings.Index(fn, "("); k >= 0 {
		head = fn[:k]
	}
	slash := strings.LastIndex(head, "/")
	if slash < 0 {
		return fn
	}
	return fn[strings.LastIndex(head[:slash], "/")+1:]
}
