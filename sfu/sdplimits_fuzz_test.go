package sfu

import (
	"errors"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
)

// FuzzShapeSDP: a client's session description is untrusted text. No
// panic; a description shapeSDP accepts comes back within the bounds, with
// no a=rid line twice in a section and no rid twice in an a=simulcast
// list, as a subsequence of the input's lines (a=simulcast lines with
// their rids once), and unchanged when shaped again.
func FuzzShapeSDP(f *testing.F) {
	f.Add("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=rid:f send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send f;h\r\na=ssrc:1 cname:x\r\na=ssrc-group:FID 1 2\r\n")
	f.Add("m=audio\na=rid:a\nm=video\na=rid:a\na=rid:a\n")
	f.Add("m=video\r\na=simulcast:send q;h;~f;q;h;~f recv a;a  b;b\r\na=simulcast:send q;q\n")
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
			if list, ok := strings.CutPrefix(key, "a=simulcast:"); ok {
				parts := strings.Split(list, " ")
				for i := 1; i < len(parts); i += 2 {
					seen := map[string]bool{}
					for _, rid := range strings.Split(parts[i], ";") {
						require.False(t, seen[rid], "a rid twice in %q", key)
						seen[rid] = true
					}
				}
			}
			outLines = append(outLines, line)
		}
		i := 0
		for line := range strings.Lines(sdp) {
			if key := strings.TrimRight(line, "\r\n"); strings.HasPrefix(key, "a=simulcast:") {
				line = simulcastOnce(key) + line[len(key):]
			}
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

// FuzzOfferTracks: checkOfferTracks reads an untrusted offer as pion does.
// No panic; and of the offers pion sets, it refuses exactly those pion
// then cannot answer as Plan B, but for sections sharing a mid, which it
// leaves to the failed answer (answerFailed).
func FuzzOfferTracks(f *testing.F) {
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	require.NoError(f, err)
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		_, err = pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		require.NoError(f, err)
	}
	offer, err := pc.CreateOffer(nil)
	require.NoError(f, err)
	require.NoError(f, pc.Close())
	var base strings.Builder
	for line := range strings.Lines(offer.SDP) {
		if !strings.HasPrefix(line, "a=ssrc") && !strings.HasPrefix(line, "a=msid:") {
			base.WriteString(line)
		}
	}
	for _, extra := range []string{
		"",
		"a=msid:s t\r\na=ssrc-group:FID 1 2\r\na=ssrc:1 cname:x\r\na=ssrc:2 cname:x\r\n",
		"a=ssrc:1 cname:x\r\na=ssrc:1 msid:s t1\r\na=ssrc:2 cname:x\r\na=ssrc:2 msid:s t2\r\n",
		"a=msid:s t\r\na=ssrc-group:SIM 1 2\r\na=ssrc:1 cname:x\r\na=ssrc:2 cname:x\r\n",
		"a=msid:s t\r\na=rid:q send\r\na=rid:h send\r\na=simulcast:send q;h\r\na=ssrc:1 cname:x\r\na=ssrc:2 cname:x\r\n",
		"a=rid:q send\r\na=ssrc:1 cname:x\r\na=ssrc:2 cname:x\r\na=ssrc-group:FEC-FR 1 2\r\n",
		"a=recvonly\r\na=ssrc:1 cname:x\r\na=ssrc:2 cname:x\r\n",
	} {
		f.Add(base.String() + extra)
	}
	f.Fuzz(func(t *testing.T, sdp string) {
		refused := checkOfferTracks(sdp)
		if refused != nil {
			require.Equal(t, "tracks", refused.reason)
		}
		if _, e := shapeSDP(sdp); e != nil {
			return // pion never sees it
		}
		answerer, err := webrtc.NewPeerConnection(webrtc.Configuration{})
		require.NoError(t, err)
		defer answerer.Close()
		if answerer.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}) != nil {
			return
		}
		_, err = answerer.CreateAnswer(nil)
		planB := errors.Is(err, webrtc.ErrIncorrectSDPSemantics)
		if refused != nil {
			require.True(t, planB, "refused an offer pion answers: %v", refused)
		} else if planB {
			require.True(t, sharesMid(sdp), "pion cannot answer an offer checkOfferTracks takes")
		}
	})
}

// sharesMid tells whether two media sections of sdp have the same a=mid.
func sharesMid(sdp string) bool {
	mids := map[string]bool{}
	for line := range strings.Lines(sdp) {
		if mid, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "a=mid:"); ok {
			if mids[mid] {
				return true
			}
			mids[mid] = true
		}
	}
	return false
}

// FuzzOfferMids: the line scan that names an offer's sections' tracks
// reads what pion's parser reads, for every description pion parses.
func FuzzOfferMids(f *testing.F) {
	for _, s := range []string{
		"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=msid:s t0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:s t1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:s t2\r\na=msid:s t3\r\n",
		"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid\r\na=mid\r\na=mid:0\r\na=msid:s t1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=midx:1\r\na=mid: 1\r\na=msid:a b c\r\n",
		"v=0\no=- 1 1 IN IP4 0.0.0.0\ns=-\nt=0 0\nm=audio 9 RTP/AVP 0\na=msid:s t\na=mid:a\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var d sdp.SessionDescription
		if strings.Contains(strings.ReplaceAll(s, "\r\n", ""), "\r") {
			// pion reads a carriage return inside a line its own way; a
			// mid spelled so matches no track by its offer (self-harm).
			return
		}
		if d.UnmarshalString(s) != nil {
			return
		}
		want := map[string]string{}
		for _, m := range d.MediaDescriptions {
			mid, _ := m.Attribute("mid")
			msid, ok := m.Attribute("msid")
			if f := strings.Fields(msid); mid != "" && ok && len(f) == 2 {
				want[mid] = f[1]
			}
		}
		require.Equal(t, want, offerMids(s))
	})
}
