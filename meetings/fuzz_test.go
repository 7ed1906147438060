package meetings

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzParseCommand: no panic on any command text; what parses, applies
// without panicking.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		`create Weekly round start="2026-03-23 10:00" duration=1h repeat=weekly count=10 except=2026-03-30 @bob:hs.test`,
		`create x date=2026-04-01 time=14:30 end=16:00 rrule=FREQ=MONTHLY;BYDAY=1MO;UNTIL=20270101T000000Z`,
		`update abcdefgh title="a b" uninvite=@b:c level=kritis servers=a,b max=3`,
		`cancel abcdefgh 2026-03-30`, `tz Europe/Berlin`, `feed reset`, `list`, `"`, `create ""=`, "create \x00a=b",
	} {
		f.Add(s)
	}
	cfg := DefaultConfig()
	f.Fuzz(func(t *testing.T, text string) {
		c, err := ParseCommand(text)
		if err != nil {
			return
		}
		m := &Meeting{Organiser: "@alice:hs.test"}
		if _, _, err := c.Spec.apply(m, "Europe/Berlin", &cfg, "hs.test"); err == nil {
			mustEncode(t, m)
		}
	})
}

// FuzzDecodeSpec: no panic; an accepted body re-marshals and decodes to
// the same spec, and applying it does not panic.
func FuzzDecodeSpec(f *testing.F) {
	for _, s := range []string{
		`{"title":"Weekly","start":"2026-03-23T10:00","duration":"1h","rrule":"FREQ=WEEKLY;COUNT=4","except":["2026-03-30"],"invite":["@bob:hs.test"],"timezone":"Europe/Berlin"}`,
		`{"title":"x","start":"2026-10-25 02:30","repeat":"daily","until":"2026-12-31","level":"vs-nfd","max_participants":5}`,
		`{"participants":["@a:b"],"allowed_homeservers":["*"],"count":3,"repeat":"weekdays"}`,
		`{}`, `[]`, `{"title":1}`, `{"start":"2026-03-23T10:00"}{}`,
	} {
		f.Add([]byte(s))
	}
	cfg := DefaultConfig()
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := DecodeSpec(body)
		if err != nil {
			return
		}
		again, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("accepted spec does not marshal: %v", err)
		}
		s2, err := DecodeSpec(again)
		if err != nil {
			t.Fatalf("re-marshalled spec not accepted: %v (%s)", err, again)
		}
		b2, _ := json.Marshal(s2)
		if string(b2) != string(again) {
			t.Fatalf("spec changed on round trip: %s vs %s", again, b2)
		}
		m := &Meeting{Organiser: "@alice:hs.test"}
		if _, _, err := s.apply(m, "Europe/Berlin", &cfg, "hs.test"); err == nil {
			mustEncode(t, m)
		}
		_, _ = DecodeUpdate(body)
	})
}

// mustEncode: whatever was accepted becomes a valid calendar file.
func mustEncode(t *testing.T, m *Meeting) {
	t.Helper()
	m.UID, m.ID = "u@x", "abcdefgh"
	if _, err := CalendarFile(m, MethodRequest, time.Time{}, "https://x/", time.Unix(0, 0)); err != nil {
		t.Fatalf("an accepted meeting does not encode: %v", err)
	}
}
