package focus

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/credentials"
)

// recordingAuditor keeps the entries the focus audits.
type recordingAuditor struct {
	mu      sync.Mutex
	entries []credentials.AuditEntry
}

func (r *recordingAuditor) Audit(_ context.Context, e credentials.AuditEntry) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entries = append(r.entries, e)
	return nil
}

// TestNonMemberRefusalIsAudited: a token request refused because the user
// is not in the room is an access decision in the audit log; a member's
// request is decided (and audited) by the access policy, not here.
func TestNonMemberRefusalIsAudited(t *testing.T) {
	audit := &recordingAuditor{}
	h := newHarnessOpts(t, nil, func(o *Options) { o.Audit = audit })
	h.hs.issue("tok-alice", "@alice:local.test")
	h.hs.issue("tok-mallory", "@mallory:local.test")
	resp, _ := h.post(t, "/get_token", tokenBody("tok-mallory", "local.test", "@mallory:local.test"))
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	resp, _ = h.post(t, "/get_token", tokenBody("tok-alice", "local.test", "@alice:local.test"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	audit.mu.Lock()
	defer audit.mu.Unlock()
	require.Len(t, audit.entries, 1)
	e := audit.entries[0]
	require.Equal(t, "deny", e.Decision)
	require.Equal(t, "@mallory:local.test", e.UserID)
	require.Equal(t, "!room:local.test", e.RoomID)
	require.Equal(t, "not a member of the room", e.Reason)
}
