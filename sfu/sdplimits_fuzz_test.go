package sfu

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzShapeSDP: a client's session description is untrusted text. No
// panic; a description shapeSDP accepts comes back within the bounds, with
// no a=rid line twice in a section, as a subsequence of the input's lines,
// and unchanged when shaped again.
func FuzzShapeSDP(f *testing.F) {
	f.Add("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=rid:f send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send f;h\r\na=ssrc:1 cname:x\r\na=ssrc-group:FID 1 2\r\n")
	f.Add("m=audio\na=rid:a\nm=video\na=rid:a\na=rid:a\n")
	f.Add(strings.Repeat("a=ssrc:1 x\r\n", 70))
	f.Add("a=" + strings.Repeat("x", maxSDPLine))
	f.Fuzz(func(t *testing.T, sdp string) {
		out, err := shapeSDP(sdp)
		if err != nil {
			require.NotEmpty(t, err.reason)
			return
		}
		rids := map[string]bool{}
		var outLines []string
		for line := range strings.Lines(out) {
			key := strings.TrimRight(line, "\r\n")
			if strings.HasPrefix(key, "m=") {
				rids = map[string]bool{}
			}
			if len(key) > maxSDPLine {
				require.True(t, strings.HasPrefix(key, "a=group:") || strings.HasPrefix(key, "a=simulcast:"), "a long line kept")
			}
			if strings.HasPrefix(key, "a=rid:") {
				require.False(t, rids[key], "a repeated a=rid line kept")
				rids[key] = true
			}
			outLines = append(outLines, line)
		}
		i := 0
		for line := range strings.Lines(sdp) {
			if i < len(outLines) && outLines[i] == line {
				i++
			}
		}
		require.Equal(t, len(outLines), i, "the output is the input less some lines")
		again, err := shapeSDP(out)
		require.Nil(t, err)
		require.Equal(t, out, again)
	})
}
