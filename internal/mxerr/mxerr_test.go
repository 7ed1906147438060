package mxerr

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
)

func TestSays(t *testing.T) {
	const internal = "dial tcp 10.1.2.3:8008: connection refused"
	refused := mautrix.HTTPError{
		Message:   "failed to PUT state",
		RespError: &mautrix.RespError{ErrCode: "M_FORBIDDEN", Err: "you may not " + strings.Repeat("x", 500)},
	}
	for name, c := range map[string]struct {
		err  error
		want string
	}{
		"transport":         {mautrix.HTTPError{Message: "failed to PUT state", WrappedError: errors.New(internal)}, NoAnswer},
		"transport pointer": {fmt.Errorf("wrapped: %w", &mautrix.HTTPError{WrappedError: errors.New(internal)}), NoAnswer},
		"plain":             {errors.New(internal), NoAnswer},
		"matrix error":      {fmt.Errorf("wrapped: %w", refused), "M_FORBIDDEN: you may not x"},
		"matrix pointer":    {&refused, "M_FORBIDDEN: you may not x"},
		"code only":         {mautrix.HTTPError{RespError: &mautrix.RespError{ErrCode: "M_UNKNOWN"}}, "M_UNKNOWN: "},
		"no code":           {mautrix.HTTPError{RespError: &mautrix.RespError{Err: internal}}, NoAnswer},
	} {
		t.Run(name, func(t *testing.T) {
			got := Says(c.err)
			require.True(t, strings.HasPrefix(got, c.want), "%q", got)
			require.NotContains(t, got, "10.1.2.3")
			require.LessOrEqual(t, len(got), MaxSays+8, "clipped") // clip.Text may add an ellipsis
		})
	}
}
