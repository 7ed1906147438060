package sfu

import (
	"fmt"
	"strings"
)

// Bounds on the shape of a client's session description (offer or
// answer), checked before pion sees it. A signal message may be 1 MiB, and
// pion's handling of some attributes costs far more than their bytes:
//
//   - it matches every a=ssrc line of a media section against the tracks
//     the section's earlier lines made, and an a=ssrc-group:FID against
//     them all again with a copy of the list, several times per
//     description (Plan B detection, the answer, the receivers): an offer
//     of 1 MiB of a=ssrc lines took 7 s of a core, one of a=ssrc and FID
//     groups minutes, and the participant's leave and the server's
//     shutdown waited for it;
//   - it keeps each new section's codecs, fmtp lines included, for the
//     connection's life, and a track per a=rid: every offer adding a
//     section of huge fmtp lines or thousands of rids kept 4.6 MB or 3 MB
//     more (30 MB for the first), up to maxMediaSections sections.
//
// Browsers' and LiveKit SDKs' descriptions stay well inside: a video
// section of a browser offering every codec is about 12 KB of lines under
// 200 bytes, with at most a dozen a=ssrc lines (simulcast by SSRC: three
// streams, their RTX, two or three lines each), a few groups and at most
// four rids. pion as a client (server-sdk-go) repeats a section's a=rid
// lines, and the rids of its a=simulcast line, once more in every offer
// it makes: a repeated a=rid line is left out of the description (pion
// would make a track of each), and a=simulcast lines, like a=group lines,
// are not held to the line bound.
const (
	maxSDPLine    = 4096     // bytes of one line; a=group and a=simulcast lines excepted
	maxSDPSection = 32 << 10 // bytes of one media section, or of the session part
	maxSSRCLines  = 64       // a=ssrc lines of one media section
	maxSSRCGroups = 16       // a=ssrc-group lines of one media section
	maxRids       = 16       // distinct a=rid lines of one media section
)

// sdpShapeError names what a session description has too much of: the
// reason label of session_descriptions_refused_total and a message.
type sdpShapeError struct {
	reason, msg string
}

func (e *sdpShapeError) Error() string { return "session description refused: " + e.msg }

// shapeSDP refuses a description over one of the bounds above, or returns
// it without repeated a=rid lines.
func shapeSDP(sdp string) (string, *sdpShapeError) {
	section, size, ssrcs, groups := -1, 0, 0, 0
	var rids map[string]bool
	repeated := false
	for line := range strings.Lines(sdp) {
		line = strings.TrimRight(line, "\r\n")
		if strings.HasPrefix(line, "m=") {
			section++
			size, ssrcs, groups, rids = 0, 0, 0, nil
		}
		if strings.HasPrefix(line, "a=group:") {
			continue
		}
		if len(line) > maxSDPLine && !strings.HasPrefix(line, "a=simulcast:") {
			return "", &sdpShapeError{"line_length", fmt.Sprintf("a line of %d bytes (at most %d)", len(line), maxSDPLine)}
		}
		if strings.HasPrefix(line, "a=rid:") {
			if rids[line] {
				repeated = true
				continue
			}
			if rids == nil {
				rids = map[string]bool{}
			}
			if rids[line] = true; len(rids) > maxRids {
				return "", &sdpShapeError{"rid", fmt.Sprintf("media section %d has over %d a=rid lines", section, maxRids)}
			}
		}
		if size += len(line) + 2; size > maxSDPSection {
			if section < 0 {
				return "", &sdpShapeError{"section_size", fmt.Sprintf("session part over %d bytes", maxSDPSection)}
			}
			return "", &sdpShapeError{"section_size", fmt.Sprintf("media section %d over %d bytes", section, maxSDPSection)}
		}
		switch {
		case strings.HasPrefix(line, "a=ssrc:"):
			if ssrcs++; ssrcs > maxSSRCLines {
				return "", &sdpShapeError{"ssrc", fmt.Sprintf("media section %d has over %d a=ssrc lines", section, maxSSRCLines)}
			}
		case strings.HasPrefix(line, "a=ssrc-group:"):
			if groups++; groups > maxSSRCGroups {
				return "", &sdpShapeError{"ssrc", fmt.Sprintf("media section %d has over %d a=ssrc-group lines", section, maxSSRCGroups)}
			}
		}
	}
	if !repeated {
		return sdp, nil
	}
	var b strings.Builder
	b.Grow(len(sdp))
	rids = nil
	for line := range strings.Lines(sdp) {
		key := strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(key, "m="):
			rids = nil
		case strings.HasPrefix(key, "a=rid:"):
			if rids[key] {
				continue
			}
			if rids == nil {
				rids = map[string]bool{}
			}
			rids[key] = true
		}
		b.WriteString(line)
	}
	return b.String(), nil
}
