package focus

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The vectors are lk-jwt-service's published ones (helper_test.go).
func TestDerivationVectors(t *testing.T) {
	require.Equal(t, "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc", LiveKitRoomAlias("!roomid:example.com", "slot1234"))
	require.Equal(t, "J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU", LiveKitIdentity("@alice:example.com", "DEVICE123", "memberABC"))
	require.Equal(t, "@alice:example.com:DEVICE123", LegacyLiveKitIdentity("@alice:example.com", "DEVICE123"))
}

func TestDerivationIsInjective(t *testing.T) {
	// The JSON array keeps ["a","b:c"] and ["a:b","c"] apart, which a plain
	// concatenation would not.
	require.NotEqual(t, LiveKitRoomAlias("a", "b:c"), LiveKitRoomAlias("a:b", "c"))
	// No HTML escaping: "<" hashes as itself, as JSON.stringify does.
	require.Equal(t, hashJSONArray("<"), hashJSONArray("<"))
	require.NotEqual(t, hashJSONArray(`\u003c`), hashJSONArray("<"))
	for _, alias := range []string{LiveKitRoomAlias("!r:x", LegacySlotID), LiveKitIdentity("@u:x", "D", "m")} {
		require.Len(t, alias, 43, "unpadded base64 of 32 bytes")
		require.NotContains(t, alias, "=")
	}
}
