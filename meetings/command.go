package meetings

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Command is a parsed "!conf meeting …" command.
type Command struct {
	// Verb: create, show, update, cancel, list, tz, feed, help.
	Verb string
	// Target is the meeting ID (or room ID); "" means the room the command
	// was sent in.
	Target string
	// Occurrence is the date cancel names ("" = the whole meeting).
	Occurrence string
	// Arg is the zone of "tz" or the word after "feed".
	Arg  string
	Spec Spec
}

// MaxCommandBytes caps a command's text.
const MaxCommandBytes = 64 << 10

var (
	timeOfDay = regexp.MustCompile(`^\d{1,2}:\d{2}$`)
	dateOnly  = regexp.MustCompile(`^\d{4}-\d{1,2}-\d{1,2}$`)
	meetingID = regexp.MustCompile(`^[a-z2-7]{8}$`)
)

// token is one word of a command: key=value or a bare word.
type token struct {
	key, value string
	bare       bool
}

// tokenize splits on white space; double quotes (also “…”) group words.
func tokenize(s string) ([]token, error) {
	s = strings.NewReplacer("“", `"`, "”", `"`, "„", `"`).Replace(s)
	var out []token
	var cur strings.Builder
	inQuote, any := false, false
	flush := func() {
		if !any {
			return
		}
		w := cur.String()
		cur.Reset()
		any = false
		if i := strings.IndexByte(w, '='); i > 0 && !strings.HasPrefix(w, "\x00") {
			out = append(out, token{key: strings.ToLower(w[:i]), value: w[i+1:]})
			return
		}
		out = append(out, token{value: strings.TrimPrefix(w, "\x00"), bare: true})
	}
	for _, r := range s {
		switch {
		case r == '"':
			if !inQuote && !any {
				cur.WriteByte(0) // a quoted word is never key=value
			}
			inQuote = !inQuote
			any = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			flush()
		default:
			cur.WriteRune(r)
			any = true
		}
	}
	if inQuote {
		return nil, invalid("command", "a quote is not closed")
	}
	flush()
	return out, nil
}

// ParseCommand parses what follows "!conf meeting".
func ParseCommand(text string) (*Command, error) {
	if len(text) > MaxCommandBytes {
		return nil, invalid("command", "longer than %d bytes", MaxCommandBytes)
	}
	toks, err := tokenize(text)
	if err != nil {
		return nil, err
	}
	c := &Command{Verb: "help"}
	if len(toks) == 0 {
		return c, nil
	}
	if !toks[0].bare {
		return nil, invalid("command", "start with what to do: create, show, update, cancel, list, tz, feed or help")
	}
	c.Verb = strings.ToLower(toks[0].value)
	toks = toks[1:]
	switch c.Verb {
	case "help", "list":
		return c, nil
	case "tz", "timezone":
		c.Verb = "tz"
		if len(toks) != 1 || !toks[0].bare {
			return nil, invalid("tz", "give one IANA time zone name, like: tz Europe/Berlin")
		}
		c.Arg = toks[0].value
		return c, nil
	case "feed":
		if len(toks) > 1 || (len(toks) == 1 && (!toks[0].bare || toks[0].value != "reset")) {
			return nil, invalid("feed", "say `feed` (or `feed reset` for a new address)")
		}
		if len(toks) == 1 {
			c.Arg = "reset"
		}
		return c, nil
	case "show", "update", "cancel", "delete":
		if c.Verb == "delete" {
			c.Verb = "cancel"
		}
		if len(toks) > 0 && toks[0].bare && (meetingID.MatchString(toks[0].value) || strings.HasPrefix(toks[0].value, "!")) {
			c.Target = toks[0].value
			toks = toks[1:]
		}
		switch c.Verb {
		case "show":
			if len(toks) > 0 {
				return nil, invalid(describeToken(toks[0]), "show takes only a meeting ID")
			}
			return c, nil
		case "cancel":
			for _, t := range toks {
				switch {
				case t.bare && (dateOnly.MatchString(t.value) || strings.EqualFold(t.value, "series") || strings.EqualFold(t.value, "all")):
					if dateOnly.MatchString(t.value) {
						c.Occurrence = t.value
					}
				case !t.bare && (t.key == "occurrence" || t.key == "date" || t.key == "on"):
					c.Occurrence = t.value
				default:
					return nil, invalid(describeToken(t), "cancel takes a meeting ID and, for one occurrence, its date (2026-03-30)")
				}
			}
			return c, nil
		}
		if c.Target == "" && len(toks) > 0 && toks[0].bare && !strings.HasPrefix(toks[0].value, "@") {
			return nil, invalid(describeToken(toks[0]), "not a meeting ID (8 letters and digits, as `list` shows)")
		}
		if err := parseSpec(&c.Spec, toks, false); err != nil {
			return nil, err
		}
		return c, nil
	case "create", "new", "schedule":
		c.Verb = "create"
		var title []string
		for len(toks) > 0 && toks[0].bare && !strings.HasPrefix(toks[0].value, "@") {
			title = append(title, toks[0].value)
			toks = toks[1:]
		}
		if len(title) > 0 {
			t := strings.Join(title, " ")
			c.Spec.Title = &t
		}
		if err := parseSpec(&c.Spec, toks, true); err != nil {
			return nil, err
		}
		return c, nil
	}
	return nil, invalid(c.Verb, "unknown meeting command; use create, show, update, cancel, list, tz, feed or help")
}

func describeToken(t token) string {
	if t.bare {
		return strconv.Quote(t.value)
	}
	return t.key
}

// parseSpec reads key=value words (and bare @user IDs as invitees).
func parseSpec(s *Spec, toks []token, creating bool) error {
	str := func(v string) *string { return &v }
	seen := map[string]bool{}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		if t.bare {
			if strings.HasPrefix(t.value, "@") {
				s.Invite = append(s.Invite, splitList(t.value)...)
				continue
			}
			return invalid(strconv.Quote(t.value), "I do not understand this word; write key=value, like start=\"2026-03-23 10:00\"")
		}
		key := canonicalKey(t.key)
		if seen[key] && key != "invite" && key != "uninvite" && key != "except" {
			return invalid(t.key, "given twice")
		}
		seen[key] = true
		v := t.value
		switch key {
		case "title":
			if s.Title != nil && creating {
				return invalid("title", "given twice (the words after create are the title)")
			}
			s.Title = str(v)
		case "description":
			s.Description = str(v)
		case "start":
			// "start=2026-03-23 10:00": the time may be the next word.
			if dateOnly.MatchString(v) && i+1 < len(toks) && toks[i+1].bare && timeOfDay.MatchString(toks[i+1].value) {
				v += " " + toks[i+1].value
				i++
			}
			if s.Start != nil {
				return invalid("start", "given twice (start, or date and time)")
			}
			s.Start = str(v)
		case "date":
			if s.Start != nil {
				return invalid("date", "given twice (start, or date and time)")
			}
			tm := "00:00"
			for j := i + 1; j < len(toks); j++ {
				if !toks[j].bare && canonicalKey(toks[j].key) == "time" {
					tm = toks[j].value
				}
			}
			s.Start = str(v + " " + tm)
		case "time":
			if !seen["date"] && !hasKey(toks[i+1:], "date") {
				return invalid("time", "give the date too (date=2026-03-23 time=10:00), or start=\"2026-03-23 10:00\"")
			}
		case "end":
			s.End = str(v)
		case "duration":
			s.Duration = str(v)
		case "timezone":
			s.TimeZone = str(v)
		case "rrule":
			s.RRule = str(v)
		case "repeat":
			s.Repeat = str(v)
		case "count":
			n, err := strconv.Atoi(v)
			if err != nil {
				return invalid("count", "%q is not a number", v)
			}
			s.Count = &n
		case "until":
			s.Until = str(v)
		case "except":
			s.Except = append(s.Except, splitList(v)...)
		case "occurrence":
			s.Occurrence = str(v)
		case "invite":
			s.Invite = append(s.Invite, splitList(v)...)
		case "uninvite":
			s.Uninvite = append(s.Uninvite, splitList(v)...)
		case "participants":
			l := splitList(v)
			s.Participants = &l
		case "level":
			s.Level = str(v)
		case "servers":
			l := splitList(v)
			s.AllowedHomeservers = &l
		case "max":
			n, err := strconv.Atoi(v)
			if err != nil {
				return invalid("max", "%q is not a number", v)
			}
			s.MaxParticipants = &n
		case "booking":
			s.Booking = str(v)
		default:
			return invalid(t.key, "unknown option; known: title, description, start, date, time, end, duration, tz, repeat, count, until, rrule, except, occurrence, invite, uninvite, level, servers, max, booking")
		}
	}
	return nil
}

func hasKey(toks []token, key string) bool {
	for _, t := range toks {
		if !t.bare && canonicalKey(t.key) == key {
			return true
		}
	}
	return false
}

func canonicalKey(k string) string {
	switch k {
	case "desc", "topic":
		return "description"
	case "at", "from":
		return "start"
	case "to":
		return "end"
	case "for", "length":
		return "duration"
	case "tz", "zone":
		return "timezone"
	case "repeats", "every":
		return "repeat"
	case "times":
		return "count"
	case "exdate", "skip":
		return "except"
	case "with", "invitees":
		return "invite"
	case "homeservers", "allowed_homeservers":
		return "servers"
	case "max_participants":
		return "max"
	}
	return k
}

// splitList splits "a,b c" into its non-empty parts.
func splitList(v string) []string {
	var out []string
	for _, p := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == ';' }) {
		out = append(out, p)
	}
	return out
}

// internalFailure is what the bot says about a failure that is not the
// user's (the database, the homeserver): its text can name internal
// addresses, tables or another server's answer, and the room is no place
// for it; the log has it (Bot.explain).
const internalFailure = "something went wrong on my side; the operator's log has the details"

// describeError is a refusal as the bot and the HTTP API say it: the
// field and why, or the refusal's own text; internalFailure for anything
// else.
func describeError(err error) string {
	var fe *fieldError
	switch {
	case errors.As(err, &fe):
		return fmt.Sprintf("%s: %s", fe.field, fe.msg)
	case errors.Is(err, ErrForbidden), errors.Is(err, ErrNotFound):
		return err.Error()
	}
	return internalFailure
}

// isRefusal tells whether err is the user's (describeError says why)
// rather than an internal failure.
func isRefusal(err error) bool {
	var fe *fieldError
	return errors.As(err, &fe) || errors.Is(err, ErrForbidden) || errors.Is(err, ErrNotFound)
}
