package credentials

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

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
