package credentials

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/lib/pq"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"

	testharness "github.com/gxfs-conf/gxconf/test/harness"
)

// TestAuditConcurrentNodes: the replicas of a cluster share one PostgreSQL
// and append to the one chain at the same time. Every append succeeds (an
// access decision whose entry fails is refused), no two entries share a
// predecessor, and the nodes' shipped lines together verify against the
// database.
func TestAuditConcurrentNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	ctx := context.Background()
	pg, err := testharness.StartPostgres(ctx)
	require.NoError(t, err, "PostgreSQL (scripts/deps.sh installs it)")
	t.Cleanup(pg.Stop)

	const nodes, workers, perWorker = 2, 4, 25
	logs := make([]*AuditLog, nodes)
	ships := make([]*syncBuffer, nodes)
	var first *dbutil.Database
	for i := range logs {
		db, err := dbutil.NewWithDialect(pg.URI, "postgres")
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		if first == nil {
			first = db
		}
		ships[i] = &syncBuffer{}
		logs[i], err = OpenAuditLog(ctx, db, ships[i], zerolog.Nop())
		require.NoError(t, err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, nodes*workers*perWorker)
	for n := range nodes {
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perWorker {
					errs <- logs[n].Append(ctx, AuditEntry{Decision: "allow", UserID: fmt.Sprintf("@u%d-%d:b", n, w),
						RoomID: "!r:b", Reason: fmt.Sprint(i)})
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			t.Log(err)
		}
	}
	require.Zero(t, failed, "appends that failed")

	rows, err := VerifyAuditChain(ctx, first)
	require.NoError(t, err)
	require.Equal(t, nodes*workers*perWorker, rows)
	var srcs []AuditSource
	for i, s := range ships {
		srcs = append(srcs, AuditSource{Name: fmt.Sprintf("node%d.jsonl", i), R: bytes.NewReader(s.Bytes())})
	}
	shipped, err := VerifyAuditFiles(srcs...)
	require.NoError(t, err)
	require.Len(t, shipped, rows)
	for _, e := range shipped {
		h, err := AuditHashAt(ctx, first, e.Seq)
		require.NoError(t, err)
		require.Equal(t, h, e.Hash)
	}
}

// syncBuffer is a bytes.Buffer for one node's shipped lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// TestAuditAnchors: the chain has no key, so someone who can write the
// database can remove its newest entries or recompute it from any row on,
// and the chain alone still verifies; an anchor (seq and hash of an entry)
// recorded outside the database finds both. Archiving the oldest rows
// continues from the last archived row's anchor, which deleting the oldest
// rows without it does not.
func TestAuditAnchors(t *testing.T) {
	ctx := context.Background()
	fill := func(t *testing.T) (*store, []AuditAnchor) {
		t.Helper()
		log, st := newAuditStore(t)
		for i := range 5 {
			require.NoError(t, log.append(ctx, AuditEntry{Time: time.Now(), Decision: "allow", UserID: "@a:b", RoomID: "!r:b",
				Reason: fmt.Sprint(i)}))
		}
		var anchors []AuditAnchor
		for seq := int64(1); seq <= 5; seq++ {
			h, err := AuditHashAt(ctx, st.db, seq)
			require.NoError(t, err)
			anchors = append(anchors, AuditAnchor{Seq: seq, Hash: h})
		}
		for _, trg := range []string{"credentials_audit_no_update", "credentials_audit_no_delete"} {
			_, err := st.db.Exec(ctx, `DROP TRIGGER `+trg)
			require.NoError(t, err)
		}
		return st, anchors
	}

	t.Run("head", func(t *testing.T) {
		st, anchors := fill(t)
		head, err := VerifyAuditChainAnchored(ctx, st.db, nil)
		require.NoError(t, err)
		require.Equal(t, AuditHead{Rows: 5, First: 1, Last: 5, LastHash: anchors[4].Hash}, head)
		_, err = VerifyAuditChainAnchored(ctx, st.db, nil, anchors[4], anchors[1])
		require.NoError(t, err)
	})
	t.Run("newest removed", func(t *testing.T) {
		st, anchors := fill(t)
		_, err := st.db.Exec(ctx, `DELETE FROM credentials_audit WHERE seq >= 4`)
		require.NoError(t, err)
		n, err := VerifyAuditChain(ctx, st.db)
		require.NoError(t, err, "the chain alone cannot tell")
		require.Equal(t, 3, n)
		_, err = VerifyAuditChainAnchored(ctx, st.db, nil, anchors[4])
		require.ErrorIs(t, err, ErrAuditTampered)
		require.ErrorContains(t, err, "anchor 5:"+anchors[4].Hash+": the log ends at seq 3 (the newest entries were removed)")
	})
	t.Run("recomputed", func(t *testing.T) {
		st, anchors := fill(t)
		// Rewrite seq 2 and recompute every hash from there on.
		prev := anchors[0].Hash
		for seq := int64(2); seq <= 5; seq++ {
			var (
				e     AuditEntry
				ts    int64
				level string
			)
			require.NoError(t, st.db.QueryRow(ctx, `SELECT seq, ts, decision, user_id, room_id, level, credential_hash, reason
				FROM credentials_audit WHERE seq = $1`, seq).Scan(&e.Seq, &ts, &e.Decision, &e.UserID, &e.RoomID, &level, &e.CredentialHash, &e.Reason))
			e.Time, e.Level, e.PrevHash = time.UnixMilli(ts), Level(level), prev
			if seq == 2 {
				e.Decision = "deny"
			}
			e.Hash = auditHash(&e)
			_, err := st.db.Exec(ctx, `UPDATE credentials_audit SET decision = $1, prev_hash = $2, hash = $3 WHERE seq = $4`,
				e.Decision, e.PrevHash, e.Hash, seq)
			require.NoError(t, err)
			prev = e.Hash
		}
		n, err := VerifyAuditChain(ctx, st.db)
		require.NoError(t, err, "the chain alone cannot tell")
		require.Equal(t, 5, n)
		_, err = VerifyAuditChainAnchored(ctx, st.db, nil, anchors[0])
		require.NoError(t, err, "rows before the rewrite are unchanged")
		_, err = VerifyAuditChainAnchored(ctx, st.db, nil, anchors[3])
		require.ErrorIs(t, err, ErrAuditTampered)
		require.ErrorContains(t, err, "row 4 is not anchor 4:"+anchors[3].Hash+" (the chain was rewritten up to there)")
	})
	t.Run("archived", func(t *testing.T) {
		st, anchors := fill(t)
		_, err := st.db.Exec(ctx, `DELETE FROM credentials_audit WHERE seq <= 2`)
		require.NoError(t, err)
		_, err = VerifyAuditChain(ctx, st.db)
		require.ErrorContains(t, err, "row 1 has seq 3 (rows missing or reordered)")
		head, err := VerifyAuditChainAnchored(ctx, st.db, &anchors[1], anchors[4])
		require.NoError(t, err)
		require.Equal(t, AuditHead{Rows: 3, First: 3, Last: 5, LastHash: anchors[4].Hash}, head)
		_, err = VerifyAuditChainAnchored(ctx, st.db, &anchors[0])
		require.ErrorContains(t, err, "row 1 has seq 3 (rows missing or reordered)")
		wrong := AuditAnchor{Seq: 2, Hash: anchors[0].Hash}
		_, err = VerifyAuditChainAnchored(ctx, st.db, &wrong)
		require.ErrorIs(t, err, ErrAuditTampered)
		require.ErrorContains(t, err, "row 3 does not link to the last archived row 2:"+anchors[0].Hash)
		_, err = VerifyAuditChainAnchored(ctx, st.db, &anchors[1], anchors[0])
		require.NotErrorIs(t, err, ErrAuditTampered)
		require.ErrorContains(t, err, "its row was archived (the log starts at seq 3)")
		// Deleting one more row is not hidden by the archive's anchor.
		_, err = st.db.Exec(ctx, `DELETE FROM credentials_audit WHERE seq = 3`)
		require.NoError(t, err)
		_, err = VerifyAuditChainAnchored(ctx, st.db, &anchors[1])
		require.ErrorIs(t, err, ErrAuditTampered)
		require.ErrorContains(t, err, "row 1 has seq 4")
		// All rows archived: nothing left, the archive's anchor is the head.
		_, err = st.db.Exec(ctx, `DELETE FROM credentials_audit`)
		require.NoError(t, err)
		head, err = VerifyAuditChainAnchored(ctx, st.db, &anchors[4], anchors[4])
		require.NoError(t, err)
		require.Equal(t, AuditHead{First: 6, Last: 5, LastHash: anchors[4].Hash}, head)
		_, err = VerifyAuditChainAnchored(ctx, st.db, &anchors[4], AuditAnchor{Seq: 5, Hash: anchors[0].Hash})
		require.ErrorContains(t, err, "name one seq with two hashes")
	})
	t.Run("parse", func(t *testing.T) {
		h := strings.Repeat("ab", 32)
		a, err := ParseAuditAnchor("12:" + h)
		require.NoError(t, err)
		require.Equal(t, AuditAnchor{Seq: 12, Hash: h}, a)
		require.Equal(t, "12:"+h, a.String())
		for _, bad := range []string{"", "12", "12:", ":" + h, "0:" + h, "-1:" + h, "x:" + h, "+12:" + h, "012:" + h, "12:" + strings.ToUpper(h),
			"12:" + h[:62], "12:" + h + "ab", "12:" + strings.Repeat("zz", 32), "12:" + h + "\n", " 12:" + h} {
			_, err := ParseAuditAnchor(bad)
			require.Error(t, err, "%q", bad)
		}
	})
}

// FuzzParseAuditAnchor: no panic; an accepted anchor prints as it was read.
func FuzzParseAuditAnchor(f *testing.F) {
	f.Add("12:" + strings.Repeat("ab", 32))
	f.Add("1:" + genesisHash)
	f.Add("9223372036854775807:" + strings.Repeat("0", 64))
	f.Add("+1:" + strings.Repeat("0", 64))
	f.Add("01:" + strings.Repeat("0", 64))
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAuditAnchor(s)
		if err != nil {
			return
		}
		if a.String() != s {
			t.Fatalf("%q read as %q", s, a)
		}
	})
}
