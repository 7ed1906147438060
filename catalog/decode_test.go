package catalog

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The admin API reads a booking body's members only under their exact
// names, each once, including those of the embedded BookingRequest.
func TestBookingBodyIsReadExactly(t *testing.T) {
	var req bookBody
	require.NoError(t, decodeStrict([]byte(`{"org":"o","tier":"t","sites":["a"],"valid_from":"2026-12-01T00:00:00Z"}`), &req))
	require.Equal(t, "o", req.Org)
	require.Equal(t, "t", req.Tier)
	require.Equal(t, []string{"a"}, req.Sites)
	for _, bad := range []string{
		`{"org":"o","ORG":"p"}`,
		`{"Tier":"t"}`,
		`{"\u017fites":["a"]}`,
		`{"org":"o","org":"p"}`,
		`{"org":"o"} {}`,
		`{"org":"o","colour":1}`,
	} {
		require.ErrorIs(t, decodeStrict([]byte(bad), &req), ErrInvalid, bad)
	}
}
