package credentials

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.mau.fi/util/dbutil"
)

// AuditEntry is one access decision in the audit log.
type AuditEntry struct {
	Seq            int64
	Time           time.Time
	Decision       string // "allow" or "deny" (or "revoke"/"expire" from re-checks)
	UserID         string
	RoomID         string
	Level          Level
	CredentialHash string // comma-separated when several credentials counted
	Reason         string
	PrevHash       string
	Hash           string
}

// genesisHash is the prev_hash of the first row.
var genesisHash = hex.EncodeToString(make([]byte, sha256.Size))

// auditHash chains a row to its predecessor: SHA-256 over length-prefixed
// fields, so that no field boundary can be shifted.
func auditHash(e *AuditEntry) string {
	h := sha256.New()
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], uint64(e.Seq))
	h.Write(buf[:])
	binary.BigEndian.PutUint64(buf[:], uint64(e.Time.UnixMilli()))
	h.Write(buf[:])
	for _, f := range []string{e.Decision, e.UserID, e.RoomID, string(e.Level), e.CredentialHash, e.Reason, e.PrevHash} {
		binary.BigEndian.PutUint64(buf[:], uint64(len(f)))
		h.Write(buf[:])
		h.Write([]byte(f))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// auditLog appends rows; the mutex serialises appends within a process and
// the seq primary key catches concurrent writers in other processes.
type auditLog struct {
	db *dbutil.Database
	mu sync.Mutex
}

func (l *auditLog) append(ctx context.Context, e AuditEntry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		var (
			lastSeq  int64
			lastHash string
		)
		err := l.db.QueryRow(ctx, `SELECT seq, hash FROM credentials_audit ORDER BY seq DESC LIMIT 1`).Scan(&lastSeq, &lastHash)
		if errors.Is(err, sql.ErrNoRows) {
			lastSeq, lastHash = 0, genesisHash
		} else if err != nil {
			return err
		}
		e.Seq = lastSeq + 1
		e.PrevHash = lastHash
		e.Time = time.UnixMilli(e.Time.UnixMilli())
		e.Hash = auditHash(&e)
		_, err = l.db.Exec(ctx, `INSERT INTO credentials_audit
			(seq, ts, decision, user_id, room_id, level, credential_hash, reason, prev_hash, hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			e.Seq, e.Time.UnixMilli(), e.Decision, e.UserID, e.RoomID, string(e.Level), e.CredentialHash, e.Reason, e.PrevHash, e.Hash)
		return err
	})
}

// VerifyAuditChain walks the audit log in order and checks the sequence,
// each row's link to its predecessor and each row's own hash. It returns the
// number of rows checked and an error wrapping ErrAuditTampered naming the
// first bad row. Truncation of the newest rows cannot be detected from the
// table alone; compare the returned count and last hash with an external
// record for that.
func VerifyAuditChain(ctx context.Context, db *dbutil.Database) (int, error) {
	rows, err := db.Query(ctx, `SELECT seq, ts, decision, user_id, room_id, level, credential_hash, reason, prev_hash, hash
		FROM credentials_audit ORDER BY seq`)
	if err != nil {
		return 0, fmt.Errorf("failed to read audit log: %w", err)
	}
	defer rows.Close()
	n := 0
	prev := genesisHash
	for rows.Next() {
		var (
			e     AuditEntry
			ts    int64
			level string
		)
		if err := rows.Scan(&e.Seq, &ts, &e.Decision, &e.UserID, &e.RoomID, &level, &e.CredentialHash, &e.Reason, &e.PrevHash, &e.Hash); err != nil {
			return n, fmt.Errorf("failed to read audit row: %w", err)
		}
		e.Time, e.Level = time.UnixMilli(ts), Level(level)
		n++
		if e.Seq != int64(n) {
			return n, fmt.Errorf("%w: row %d has seq %d (rows missing or reordered)", ErrAuditTampered, n, e.Seq)
		}
		if e.PrevHash != prev {
			return n, fmt.Errorf("%w: row %d does not link to row %d", ErrAuditTampered, e.Seq, e.Seq-1)
		}
		if auditHash(&e) != e.Hash {
			return n, fmt.Errorf("%w: row %d was modified", ErrAuditTampered, e.Seq)
		}
		prev = e.Hash
	}
	return n, rows.Err()
}

// AuditLog appends to the hash-chained audit log; other packages (the
// catalogue's admin actions) write their entries through it so that one
// chain covers them all. Use the verifier's (Verifier.AuditLog) when there
// is one: appends are serialised per AuditLog.
type AuditLog struct{ l *auditLog }

// OpenAuditLog upgrades the credentials tables of db (the audit log lives
// there) and returns an AuditLog on it, for processes without a verifier.
func OpenAuditLog(ctx context.Context, db *dbutil.Database) (*AuditLog, error) {
	st, err := newStore(db, nil)
	if err != nil {
		return nil, err
	}
	if err := st.upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade credentials tables: %w", err)
	}
	return &AuditLog{l: &auditLog{db: st.db}}, nil
}

// Append chains e to the log; Seq, PrevHash and Hash are set here, a zero
// Time is now.
func (a *AuditLog) Append(ctx context.Context, e AuditEntry) error {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	return a.l.append(ctx, e)
}
