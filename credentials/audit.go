package credentials

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/gxfs-conf/gxconf/internal/clip"
	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// Decisions of the audit log besides the access decisions "allow" and
// "deny", the presentation results "verified" and "refused", and the
// re-check results "revoke" and "expire".
const (
	// AuditRemove: a user's call participants were removed (they left or
	// were banned, or their credential became invalid); UserID is the user.
	AuditRemove = "remove"
	// AuditPolicyChanged and AuditPolicyRefused: a room admin's change of
	// the room's access policy (admin action); UserID is who changed it.
	AuditPolicyChanged = "policy_changed"
	AuditPolicyRefused = "policy_refused"
	// AuditAdmin: an operator's action on the deployment (drain, key
	// rotation); UserID names the operator or the interface used.
	AuditAdmin = "admin"
)

// AuditEntry is one entry of the audit log: an access decision, a removal
// or an admin action.
type AuditEntry struct {
	Seq            int64
	Time           time.Time
	Decision       string // "allow" or "deny" (or "revoke"/"expire" from re-checks, or an Audit… constant)
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

// auditLog appends rows; the mutex serialises appends within a process, a
// lock on the table (PostgreSQL; SQLite's writers are serialised by
// _txlock=immediate) serialises the replicas sharing the database, and the
// seq primary key refuses a second entry after the same predecessor (a
// fork) whatever happens. Each committed row is also written to ship (when
// set) as one JSON line, in seq order within this process.
type auditLog struct {
	db   *dbutil.Database
	ship io.Writer
	log  zerolog.Logger
	mu   sync.Mutex
}

// maxAuditReason bounds an entry's reason: it may carry text from outside
// (a status list's fetch error, a wallet's answer), and the log is never
// pruned.
const maxAuditReason = 2048

func (l *auditLog) append(ctx context.Context, e AuditEntry) error {
	e.Reason = clip.Text(e.Reason, maxAuditReason)
	l.mu.Lock()
	defer l.mu.Unlock()
	var committed AuditEntry
	err := l.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		var (
			lastSeq  int64
			lastHash string
		)
		if l.db.Dialect == dbutil.Postgres {
			// Without it two replicas read the same last row, and the
			// second insert fails on the seq key: its decision would be
			// refused as unaudited. EXCLUSIVE lets verify read meanwhile.
			if _, err := l.db.Exec(ctx, `LOCK TABLE credentials_audit IN EXCLUSIVE MODE`); err != nil {
				return fmt.Errorf("failed to lock the audit log: %w", err)
			}
		}
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
		committed = e
		_, err = l.db.Exec(ctx, `INSERT INTO credentials_audit
			(seq, ts, decision, user_id, room_id, level, credential_hash, reason, prev_hash, hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			e.Seq, e.Time.UnixMilli(), e.Decision, e.UserID, e.RoomID, string(e.Level), e.CredentialHash, e.Reason, e.PrevHash, e.Hash)
		return err
	})
	if err != nil || l.ship == nil {
		return err
	}
	// The database is the record; a line that fails to ship is a gap that
	// `gxconf audit verify -file` reports, not a reason to undo the entry.
	line, _ := json.Marshal(auditLineOf(committed))
	if _, werr := l.ship.Write(append(line, '\n')); werr != nil {
		l.log.Error().Err(werr).Int64("seq", committed.Seq).Msg("Failed to ship an audit entry")
	}
	return nil
}

// Audit appends e to the audit log (and ships it); the log sets e's Seq,
// PrevHash and Hash. Time defaults to now.
func (v *Verifier) Audit(ctx context.Context, e AuditEntry) error {
	if e.Time.IsZero() {
		e.Time = v.now()
	}
	return v.audit.append(ctx, e)
}

// AuditConfig is the `audit:` section: shipping the audit log.
type AuditConfig struct {
	// Ship writes every audit entry as one JSON line: "" (the database
	// only), "stdout" (apart from the logs, which go to stderr) or "file".
	Ship string `yaml:"ship"`
	// File is the file lines are appended to (ship: file); created 0600.
	File string `yaml:"file"`
}

// Validate reports every problem, each named by its key within the section.
func (c *AuditConfig) Validate() error {
	var errs []error
	switch c.Ship {
	case "", "stdout":
		if c.File != "" {
			errs = append(errs, errors.New("file: needs ship: file"))
		}
	case "file":
		if c.File == "" {
			errs = append(errs, errors.New("file: must be set with ship: file"))
		}
	default:
		errs = append(errs, fmt.Errorf("ship: must be empty, stdout or file, got %q", c.Ship))
	}
	return errors.Join(errs...)
}

// OpenShip opens the configured destination: nil for none; the caller
// closes what it opened (not stdout).
func (c *AuditConfig) OpenShip(stdout io.Writer) (io.Writer, func() error, error) {
	switch c.Ship {
	case "stdout":
		return stdout, func() error { return nil }, nil
	case "file":
		f, err := os.OpenFile(c.File, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("audit.file: %w", err)
		}
		return f, f.Close, nil
	}
	return nil, func() error { return nil }, nil
}

// auditLine is an entry as shipped: one JSON object per line. Time is UTC
// with milliseconds, as hashed.
type auditLine struct {
	Audit          string `json:"audit"`
	Seq            int64  `json:"seq"`
	Time           string `json:"time"`
	Decision       string `json:"decision"`
	UserID         string `json:"user_id"`
	RoomID         string `json:"room_id"`
	Level          string `json:"level"`
	CredentialHash string `json:"credential_hash"`
	Reason         string `json:"reason"`
	PrevHash       string `json:"prev_hash"`
	Hash           string `json:"hash"`
}

// auditLineMarker tells gxconf's audit lines from other JSON lines.
const auditLineMarker = "gxconf"

const auditTimeLayout = "2006-01-02T15:04:05.000Z07:00"

func auditLineOf(e AuditEntry) auditLine {
	return auditLine{Audit: auditLineMarker, Seq: e.Seq, Time: e.Time.UTC().Format(auditTimeLayout), Decision: e.Decision,
		UserID: e.UserID, RoomID: e.RoomID, Level: string(e.Level), CredentialHash: e.CredentialHash, Reason: e.Reason,
		PrevHash: e.PrevHash, Hash: e.Hash}
}

// AuditSource is a shipped audit log to verify: its name (for messages)
// and content.
type AuditSource struct {
	Name string
	R    io.Reader
}

// located is an entry with where it was read.
type located struct {
	e     AuditEntry
	where string // "file:line"
}

// ParseAuditLine decodes one shipped line strictly (unknown fields, a
// missing marker or a malformed time are errors).
func ParseAuditLine(line []byte) (AuditEntry, error) {
	var l auditLine
	if err := strictjson.UnmarshalKnown(line, &l); err != nil {
		return AuditEntry{}, fmt.Errorf("not an audit line: %w", err)
	}
	if l.Audit != auditLineMarker {
		return AuditEntry{}, errors.New("not an audit line: no \"audit\":\"gxconf\" marker")
	}
	t, err := time.Parse(auditTimeLayout, l.Time)
	if err != nil {
		return AuditEntry{}, fmt.Errorf("not an audit line: time: %w", err)
	}
	return AuditEntry{Seq: l.Seq, Time: t, Decision: l.Decision, UserID: l.UserID, RoomID: l.RoomID, Level: Level(l.Level),
		CredentialHash: l.CredentialHash, Reason: l.Reason, PrevHash: l.PrevHash, Hash: l.Hash}, nil
}

// VerifyAuditFiles checks shipped audit logs: in each source every line is
// an audit entry whose hash is its own, with seq increasing line by line;
// together (a cluster's nodes each ship their own entries) the entries form
// one chain without gaps from the first seq found, each linking to its
// predecessor (and to the genesis hash at seq 1). Errors wrap
// ErrAuditTampered and name the file and line. It returns the entries by
// seq.
func VerifyAuditFiles(sources ...AuditSource) ([]AuditEntry, error) {
	bySeq := map[int64]located{}
	for _, src := range sources {
		sc := bufio.NewScanner(src.R)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		line, last := 0, int64(0)
		for sc.Scan() {
			line++
			where := fmt.Sprintf("%s:%d", src.Name, line)
			raw := bytes.TrimSpace(sc.Bytes())
			if len(raw) == 0 {
				continue
			}
			e, err := ParseAuditLine(raw)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrAuditTampered, where, err)
			}
			if auditHash(&e) != e.Hash {
				return nil, fmt.Errorf("%w: %s: seq %d was modified", ErrAuditTampered, where, e.Seq)
			}
			if e.Seq <= last {
				return nil, fmt.Errorf("%w: %s: seq %d comes after seq %d (lines reordered or repeated)", ErrAuditTampered, where, e.Seq, last)
			}
			last = e.Seq
			if prev, ok := bySeq[e.Seq]; ok && prev.e.Hash != e.Hash {
				return nil, fmt.Errorf("%w: %s: seq %d differs from %s", ErrAuditTampered, where, e.Seq, prev.where)
			}
			bySeq[e.Seq] = located{e: e, where: where}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("failed to read %s: %w", src.Name, err)
		}
	}
	seqs := make([]int64, 0, len(bySeq))
	for s := range bySeq {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	out := make([]AuditEntry, 0, len(seqs))
	for i, s := range seqs {
		cur := bySeq[s]
		switch {
		case i == 0 && s == 1 && cur.e.PrevHash != genesisHash:
			return nil, fmt.Errorf("%w: %s: seq 1 does not start the chain", ErrAuditTampered, cur.where)
		case i > 0 && s != seqs[i-1]+1:
			return nil, fmt.Errorf("%w: %s: seq %d follows seq %d (%s): seq %d to %d missing", ErrAuditTampered,
				cur.where, s, seqs[i-1], bySeq[seqs[i-1]].where, seqs[i-1]+1, s-1)
		case i > 0 && cur.e.PrevHash != bySeq[seqs[i-1]].e.Hash:
			return nil, fmt.Errorf("%w: %s: seq %d does not link to seq %d (%s)", ErrAuditTampered, cur.where, s, s-1, bySeq[seqs[i-1]].where)
		}
		out = append(out, cur.e)
	}
	return out, nil
}

// AuditHashAt returns the hash of row seq of the database's audit log, ""
// if there is none.
func AuditHashAt(ctx context.Context, db *dbutil.Database, seq int64) (string, error) {
	var h string
	err := db.QueryRow(ctx, `SELECT hash FROM credentials_audit WHERE seq = $1`, seq).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return h, err
}

// VerifyAuditChain walks the audit log in order and checks the sequence,
// each row's link to its predecessor and each row's own hash. It returns the
// number of rows checked and an error wrapping ErrAuditTampered naming the
// first bad row. The chain has no key: truncation of the newest rows, and a
// chain recomputed from some row on, can only be told from an external
// record (VerifyAuditChainAnchored, or shipped lines).
func VerifyAuditChain(ctx context.Context, db *dbutil.Database) (int, error) {
	head, err := VerifyAuditChainAnchored(ctx, db, nil)
	return head.Rows, err
}

// AuditAnchor is an entry's seq and hash recorded outside the database
// (`gxconf audit verify` prints the last one as SEQ:HASH). As the hash
// covers every earlier entry through the chain, the database must still
// hold that entry unchanged; and after the oldest rows were archived, the
// last archived row is where the rows kept continue (an anchor as well).
type AuditAnchor struct {
	Seq  int64
	Hash string
}

func (a AuditAnchor) String() string { return fmt.Sprintf("%d:%s", a.Seq, a.Hash) }

// ParseAuditAnchor reads SEQ:HASH (a positive seq, 64 lowercase hex digits).
func ParseAuditAnchor(s string) (AuditAnchor, error) {
	seq, hash, ok := strings.Cut(s, ":")
	n, err := strconv.ParseInt(seq, 10, 64)
	if !ok || err != nil || n < 1 || strconv.FormatInt(n, 10) != seq || len(hash) != 2*sha256.Size || strings.ToLower(hash) != hash {
		return AuditAnchor{}, fmt.Errorf("anchor %s: must be SEQ:HASH as `gxconf audit verify` prints it", clip.Quote(s))
	}
	if _, err := hex.DecodeString(hash); err != nil {
		return AuditAnchor{}, fmt.Errorf("anchor %s: must be SEQ:HASH as `gxconf audit verify` prints it", clip.Quote(s))
	}
	return AuditAnchor{Seq: n, Hash: hash}, nil
}

// AuditHead describes a verified chain: how many rows, the first and last
// seq (Last < First: no rows), and the last entry's hash, the anchor to
// record for later checks.
type AuditHead struct {
	Rows        int
	First, Last int64
	LastHash    string
}

// VerifyAuditChainAnchored is VerifyAuditChain that also checks anchors
// recorded earlier: the row of each anchor's seq must be there with the
// anchor's hash (a missing row means the newest entries were removed;
// another hash that the chain was rewritten up to there). The chain starts
// at seq 1 with the genesis hash or, when the oldest rows were archived
// (archived is not nil: the last archived row), at the row after archived,
// linking to its hash. Errors wrap ErrAuditTampered and name the row or the
// anchor.
func VerifyAuditChainAnchored(ctx context.Context, db *dbutil.Database, archived *AuditAnchor, anchors ...AuditAnchor) (AuditHead, error) {
	rows, err := db.Query(ctx, `SELECT seq, ts, decision, user_id, room_id, level, credential_hash, reason, prev_hash, hash
		FROM credentials_audit ORDER BY seq`)
	if err != nil {
		return AuditHead{}, fmt.Errorf("failed to read audit log: %w", err)
	}
	defer rows.Close()
	at := make(map[int64]string, len(anchors))
	for _, a := range anchors {
		if h, ok := at[a.Seq]; ok && h != a.Hash {
			return AuditHead{}, fmt.Errorf("anchors %s and %s name one seq with two hashes", AuditAnchor{a.Seq, h}, a)
		}
		at[a.Seq] = a.Hash
	}
	head := AuditHead{First: 1, LastHash: genesisHash}
	if archived != nil {
		head.First, head.Last, head.LastHash = archived.Seq+1, archived.Seq, archived.Hash
	}
	for rows.Next() {
		var (
			e     AuditEntry
			ts    int64
			level string
		)
		if err := rows.Scan(&e.Seq, &ts, &e.Decision, &e.UserID, &e.RoomID, &level, &e.CredentialHash, &e.Reason, &e.PrevHash, &e.Hash); err != nil {
			return head, fmt.Errorf("failed to read audit row: %w", err)
		}
		e.Time, e.Level = time.UnixMilli(ts), Level(level)
		head.Rows++
		if e.Seq != head.Last+1 {
			return head, fmt.Errorf("%w: row %d has seq %d (rows missing or reordered)", ErrAuditTampered, head.Rows, e.Seq)
		}
		if e.PrevHash != head.LastHash {
			if head.Rows == 1 && archived != nil {
				return head, fmt.Errorf("%w: row %d does not link to the last archived row %s", ErrAuditTampered, e.Seq, archived)
			}
			return head, fmt.Errorf("%w: row %d does not link to row %d", ErrAuditTampered, e.Seq, e.Seq-1)
		}
		if auditHash(&e) != e.Hash {
			return head, fmt.Errorf("%w: row %d was modified", ErrAuditTampered, e.Seq)
		}
		if h, ok := at[e.Seq]; ok && h != e.Hash {
			return head, fmt.Errorf("%w: row %d is not anchor %s (the chain was rewritten up to there)", ErrAuditTampered, e.Seq, AuditAnchor{e.Seq, h})
		}
		head.Last, head.LastHash = e.Seq, e.Hash
	}
	if err := rows.Err(); err != nil {
		return head, err
	}
	for _, a := range anchors {
		switch {
		case archived != nil && a.Seq == archived.Seq:
			if a.Hash != archived.Hash {
				return head, fmt.Errorf("anchor %s and the last archived row %s name one seq with two hashes", a, archived)
			}
		case a.Seq > head.Last:
			return head, fmt.Errorf("%w: anchor %s: the log ends at seq %d (the newest entries were removed)", ErrAuditTampered, a, head.Last)
		case a.Seq < head.First:
			return head, fmt.Errorf("anchor %s: its row was archived (the log starts at seq %d); check it against the archive", a, head.First)
		}
	}
	return head, nil
}

// AuditLog appends to the hash-chained audit log; other packages (the
// catalogue's admin actions) write their entries through it so that one
// chain covers them all. Use the verifier's (Verifier.AuditLog) when there
// is one: appends are serialised per AuditLog.
type AuditLog struct{ l *auditLog }

// OpenAuditLog upgrades the credentials tables of db (the audit log lives
// there) and returns an AuditLog on it, for processes without a verifier
// (the command line's admin actions); ship, when not nil, receives every
// appended entry as a JSON line.
func OpenAuditLog(ctx context.Context, db *dbutil.Database, ship io.Writer, log zerolog.Logger) (*AuditLog, error) {
	st, err := newStore(db, nil, nil)
	if err != nil {
		return nil, err
	}
	if err := st.upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade credentials tables: %w", err)
	}
	return &AuditLog{l: &auditLog{db: st.db, ship: ship, log: log}}, nil
}

// Append chains e to the log; Seq, PrevHash and Hash are set here, a zero
// Time is now.
func (a *AuditLog) Append(ctx context.Context, e AuditEntry) error {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	return a.l.append(ctx, e)
}
