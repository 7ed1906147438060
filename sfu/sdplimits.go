package sfu

import (
	"cmp"
	"fmt"
	"strconv"
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
// are not held to the line bound, their rids named once (simulcastOnce).
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
		if strings.HasPrefix(line, "a=simulcast:") {
			if d := simulcastOnce(line); len(d) < len(line) {
				line, repeated = d, true
			}
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
		case strings.HasPrefix(key, "a=simulcast:"):
			line = simulcastOnce(key) + line[len(key):]
		}
		b.WriteString(line)
	}
	return b.String(), nil
}

// simulcastOnce is an a=simulcast line with each rid of a direction's list
// once, in the order of first mention ("send q;h;f;q;h;f" → "send q;h;f").
// pion as a client repeats the list in every offer it makes, as it
// repeats the a=rid lines, so a long-lived server-sdk-go publisher's line
// grew by its list at every renegotiation until the section outgrew
// maxSDPSection and its offers were refused. pion reads the line only for
// paused rids ("~q"), which a repeat does not change.
func simulcastOnce(line string) string {
	parts := strings.Split(strings.TrimPrefix(line, "a=simulcast:"), " ")
	changed := false
	for i := 1; i < len(parts); i += 2 { // direction, list, direction, list
		list := strings.Split(parts[i], ";")
		seen := make(map[string]bool, len(list))
		once := list[:0]
		for _, rid := range list {
			if seen[rid] {
				changed = true
				continue
			}
			seen[rid] = true
			once = append(once, rid)
		}
		parts[i] = strings.Join(once, ";")
	}
	if !changed {
		return line
	}
	return "a=simulcast:" + strings.Join(parts, " ")
}

// checkOfferTracks refuses an offer with a media section that pion takes
// to describe more than one track. pion v4 answers only unified plan: it
// sets such an offer (SetRemoteDescription succeeds) and then fails to
// answer it ("RemoteDescription is PlanB"), and as it cannot roll a
// remote offer back, the connection stays in have-remote-offer and every
// later offer fails too. Refused before pion sees it, the offer is only
// not answered and the session keeps its connection.
//
// Tracks are counted as pion does (trackDetailsFromSDP): in a section it
// may receive on (not recvonly or inactive, by the section's direction or
// else the session's) with a mid, each distinct a=ssrc is a track unless
// an a=ssrc-group:FID or FEC-FR names it as the repair flow of another
// (RTX, FlexFEC: browsers' and pion's one stream and its repair); a
// section with a=rid lines and a known msid is one simulcast track
// (Firefox lists an a=ssrc per layer there). Two tracks by a=ssrc in one
// section is Plan B; simulcast by SSRC (a=ssrc-group:SIM, Chrome's only
// with munged SDP) is the same to pion, which takes every layer for a
// track and cannot answer it either. Sections sharing a mid, which pion
// also counts together, are not looked for: no client makes them, and the
// session of one that does ends when pion fails to answer (answerFailed).
func checkOfferTracks(sdp string) *sdpShapeError {
	sessionDir := ""
	section := -1
	var (
		kind, dir, mid, stream, track string
		midSeen, rids                 bool
		ssrcs, repairs                map[string]bool
	)
	// done judges the section that just ended.
	done := func() *sdpShapeError {
		if section < 0 || mid == "" || (kind != "audio" && kind != "video") {
			return nil
		}
		if d := cmp.Or(dir, sessionDir); d == "recvonly" || d == "inactive" {
			return nil
		}
		if rids && stream != "" && track != "" {
			return nil // one simulcast track
		}
		n := 0
		for s := range ssrcs {
			if !repairs[s] {
				n++
			}
		}
		if n > 1 {
			return &sdpShapeError{"tracks", fmt.Sprintf("media section %d describes %d tracks by a=ssrc (one per section: unified plan)", section, n)}
		}
		return nil
	}
	for line := range strings.Lines(sdp) {
		line = strings.TrimRight(line, "\r\n")
		if rest, ok := strings.CutPrefix(line, "m="); ok {
			if e := done(); e != nil {
				return e
			}
			section++
			kind, _, _ = strings.Cut(rest, " ")
			kind = strings.ToLower(kind)
			dir, mid, stream, track, midSeen, rids = "", "", "", "", false, false
			ssrcs, repairs = map[string]bool{}, map[string]bool{}
			continue
		}
		key, value, _ := strings.Cut(strings.TrimPrefix(line, "a="), ":")
		if !strings.HasPrefix(line, "a=") {
			continue
		}
		switch key {
		case "sendrecv", "sendonly", "recvonly", "inactive":
			// pion takes the first direction attribute it finds
			if section < 0 && sessionDir == "" {
				sessionDir = key
			} else if section >= 0 && dir == "" {
				dir = key
			}
		}
		if section < 0 {
			continue
		}
		switch key {
		case "mid":
			if !midSeen { // pion reads the first
				mid, midSeen = value, true
			}
		case "rid":
			rids = true
		case "msid":
			if f := strings.Split(value, " "); len(f) == 2 {
				stream, track = f[0], f[1]
			}
		case "ssrc-group":
			if f := strings.Split(value, " "); len(f) == 3 && (f[0] == "FID" || f[0] == "FEC-FR") && isSSRC(f[1]) && isSSRC(f[2]) {
				repairs[canonicalSSRC(f[2])] = true
			}
		case "ssrc":
			f := strings.Split(value, " ")
			if !isSSRC(f[0]) {
				continue
			}
			s := canonicalSSRC(f[0])
			if repairs[s] {
				continue
			}
			if len(f) == 3 && strings.HasPrefix(f[1], "msid:") {
				stream, track = strings.TrimPrefix(f[1], "msid:"), f[2]
			}
			ssrcs[s] = true
		}
	}
	return done()
}

// isSSRC tells whether s parses as pion parses an SSRC (a uint32).
func isSSRC(s string) bool {
	_, err := strconv.ParseUint(s, 10, 32)
	return err == nil
}

// canonicalSSRC is s without leading zeros, as pion compares SSRCs by value.
func canonicalSSRC(s string) string {
	v, _ := strconv.ParseUint(s, 10, 32)
	return strconv.FormatUint(v, 10)
}
