package strictjson

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDecode(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, tc := range []struct {
		name, in string
		want     error
	}{
		{"object", `{"a":1,"b":[true,null,"x"],"c":{"d":2.5}}`, nil},
		{"duplicate at top", `{"a":1,"a":2}`, ErrDuplicateName},
		{"duplicate nested", `{"a":{"b":1,"b":1}}`, ErrDuplicateName},
		{"duplicate in array element", `[{"x":1},{"y":1,"y":2}]`, ErrDuplicateName},
		{"escaped duplicate", `{"a":1,"\u0061":2}`, ErrDuplicateName},
		{"same name in sibling objects", `{"a":{"b":1},"c":{"b":1}}`, nil},
		{"at the limit", deep(MaxDepth), nil},
		{"one too deep", deep(MaxDepth + 1), ErrTooDeep},
		{"trailing data", `{} {}`, ErrSyntax},
		{"truncated", `{"a":`, ErrSyntax},
		{"empty", ``, ErrSyntax},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Decode([]byte(tc.in))
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
				return
			}
			require.NoError(t, err)
			var std any
			require.NoError(t, json.Unmarshal([]byte(tc.in), &std))
			require.Equal(t, std, v)
		})
	}
}

func TestUnmarshalRefusesCaseVariants(t *testing.T) {
	var h struct {
		Alg string `json:"alg"`
	}
	require.ErrorIs(t, Unmarshal([]byte(`{"alg":"ES256","ALG":"none"}`), &h), ErrDuplicateName)
	require.NoError(t, Unmarshal([]byte(`{"alg":"ES256","kid":"k"}`), &h))
	require.Equal(t, "ES256", h.Alg)
}

type inner struct {
	Room string `json:"room"`
}

type Base struct {
	ID string `json:"id"`
}

type selfDecoding struct{ got string }

func (s *selfDecoding) UnmarshalJSON(b []byte) error { s.got = string(b); return nil }

type doc struct {
	Base
	Status  string            `json:"status"`
	Items   []inner           `json:"items"`
	ByName  map[string]*inner `json:"by_name"`
	Skipped string            `json:"-"`
	Self    selfDecoding      `json:"self"`
	Plain   int
}

func TestUnmarshalRefusesRespelledNames(t *testing.T) {
	for _, bad := range []string{
		`{"STATUS":"x"}`,
		`{"\u017ftatus":"revoked"}`, // ſ folds to s in encoding/json
		`{"items":[{"room":"a"},{"Room":"b"}]}`,
		`{"by_name":{"k":{"rOOm":"b"}}}`,
		`{"Id":"x"}`,
		`{"plain":1}`,
	} {
		var d doc
		err := Unmarshal([]byte(bad), &d)
		require.ErrorIs(t, err, ErrSpelling, bad)
		require.ErrorIs(t, UnmarshalKnown([]byte(bad), &d), ErrSpelling, bad)
	}
	var d doc
	good := `{"id":"i","status":"ok","items":[{"room":"a"}],"by_name":{"K":{"room":"b"}},"self":{"ANY":1},"Plain":2,"extra":true}`
	require.NoError(t, Unmarshal([]byte(good), &d))
	require.Equal(t, doc{Base: Base{ID: "i"}, Status: "ok", Items: []inner{{Room: "a"}}, ByName: map[string]*inner{"K": {Room: "b"}},
		Self: selfDecoding{got: `{"ANY":1}`}, Plain: 2}, d)
	// The error names the member and where it is.
	err := Unmarshal([]byte(`{"items":[{"room":"a"},{"ROOM":"b"}]}`), &d)
	require.ErrorContains(t, err, `"items.1.ROOM" for "items.1.room"`)
}

func TestUnmarshalKnownRefusesUnknownMembers(t *testing.T) {
	var d doc
	require.ErrorIs(t, UnmarshalKnown([]byte(`{"status":"ok","extra":true}`), &d), ErrUnknownName)
	err := UnmarshalKnown([]byte(`{"items":[{"room":"a","floor":2}]}`), &d)
	require.ErrorIs(t, err, ErrUnknownName)
	require.ErrorContains(t, err, `"items.0.floor"`)
	require.ErrorIs(t, UnmarshalKnown([]byte(`{"Skipped":"x"}`), &d), ErrUnknownName)
	require.ErrorIs(t, UnmarshalKnown([]byte(`{"status":"a","status":"b"}`), &d), ErrDuplicateName)
	require.ErrorIs(t, UnmarshalKnown([]byte(`{"status":"a"} {}`), &d), ErrSyntax)
	require.NoError(t, UnmarshalKnown([]byte(`{"id":"i","status":"ok","self":[1]}`), &d))
	require.Equal(t, "i", d.ID)
	// A tagged embedded struct is one member; its fields are not promoted.
	var tg struct {
		Base `json:"base"`
	}
	require.ErrorIs(t, UnmarshalKnown([]byte(`{"id":"x"}`), &tg), ErrUnknownName)
	require.NoError(t, UnmarshalKnown([]byte(`{"base":{"id":"x"}}`), &tg))
	require.Equal(t, "x", tg.ID)
}

func FuzzDecode(f *testing.F) {
	f.Add(`{"a":[1,{"b":"c"}]}`)
	f.Add(`{"a":1,"a":2}`)
	f.Fuzz(func(t *testing.T, in string) {
		v, err := Decode([]byte(in))
		if err != nil {
			return
		}
		// Accepted input re-marshals and decodes to the same value.
		out, err := json.Marshal(v)
		require.NoError(t, err)
		v2, err := Decode(out)
		require.NoError(t, err)
		require.Equal(t, v, v2)
	})
}

// TestErrorsQuoteNamesByPrefix: a refused member name is quoted by a short
// prefix, whatever its length (the errors reach HTTP answers and logs).
func TestErrorsQuoteNamesByPrefix(t *testing.T) {
	long := strings.Repeat("n", 1<<20)
	type known struct {
		Room string `json:"room"`
		Map  map[string]struct {
			ID string `json:"id"`
		} `json:"map"`
	}
	for name, body := range map[string]string{
		"duplicate":         `{"` + long + `":1,"` + long + `":2}`,
		"duplicate by case": `{"` + long + `":1,"` + strings.ToUpper(long) + `":2}`,
		"unknown":           `{"` + long + `":1}`,
		"respelled in map":  `{"map":{"` + long + `":{"ID":"x"}}}`,
	} {
		var v known
		err := UnmarshalKnown([]byte(body), &v)
		require.Error(t, err, name)
		require.Less(t, len(err.Error()), 300, "%s: %.200s", name, err)
		require.Contains(t, err.Error(), "nnnn", name)
	}
}
