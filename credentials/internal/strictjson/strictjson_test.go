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
