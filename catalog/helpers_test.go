package catalog

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream"

	"github.com/gxfs-conf/gxconf/cluster"
	"github.com/gxfs-conf/gxconf/credentials"
)

const testTerms = "0000000000000000000000000000000000000000000000000000000000000001"

// WriteTestKey writes a fresh EC P-256 key as PKCS#8 PEM.
func writeTestKey(t testing.TB, dir string) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	path := filepath.Join(dir, "catalog-key.pem")
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	return path
}

func testConfig(t testing.TB) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Enabled = true
	cfg.BaseURL = "https://vc.bund.example"
	cfg.SigningKeyFile = writeTestKey(t, t.TempDir())
	cfg.Provider = Provider{LegalName: "Bundes-Video GmbH", RegistrationNumberType: "vatID", RegistrationNumber: "DE123456789", CountryCode: "DE"}
	cfg.Levels = map[credentials.Level]LevelOffer{
		credentials.LevelPublic: {TermsURL: "https://vc.bund.example/agb-public.pdf", TermsHash: testTerms, Sites: []string{"de-ber-1", "de-bon-1"}},
		credentials.LevelKritis: {TermsURL: "https://vc.bund.example/agb-kritis.pdf", TermsHash: testTerms, Sites: []string{"de-ber-1"}, PolicyURL: "https://vc.bund.example/policy/kritis.rego"},
		credentials.LevelVSNfD:  {TermsURL: "https://vc.bund.example/agb-vsnfd.pdf", TermsHash: testTerms, Sites: []string{"de-ber-1"}},
	}
	cfg.Admin.Issuer = "https://idp.bund.example"
	cfg.Admin.ClientID = "gxconf-admin"
	cfg.Admin.Organisations = map[string]Organisation{
		"land-nrw": {LegalName: "Land Nordrhein-Westfalen", ID: "did:web:land-nrw.example"},
		"stadt-x":  {LegalName: "Stadt X"},
	}
	return cfg
}

func newTestDB(t testing.TB) *dbutil.Database {
	t.Helper()
	db, err := dbutil.NewFromConfig("", dbutil.Config{PoolConfig: dbutil.PoolConfig{
		Type: "sqlite3-fk-wal", URI: "file:" + filepath.Join(t.TempDir(), "gxconf.db") + "?_txlock=immediate",
		MaxOpenConns: 4, MaxIdleConns: 1,
	}}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// fakeDir is a cluster directory: room → identities.
type fakeDir struct {
	mu    sync.Mutex
	rooms map[string][]string
}

func (d *fakeDir) Participants(_ context.Context, room cluster.RoomName) ([]cluster.ParticipantEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []cluster.ParticipantEntry
	for _, id := range d.rooms[string(room)] {
		out = append(out, cluster.ParticipantEntry{Room: room, Identity: cluster.ParticipantIdentity(id), Node: "n1"})
	}
	return out, nil
}

func (d *fakeDir) set(room string, ids ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rooms[room] = ids
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type env struct {
	c     *Catalog
	db    *dbutil.Database
	dir   *fakeDir
	clock *clock
}

func newEnv(t testing.TB, mutate func(*Config)) *env {
	t.Helper()
	cfg := testConfig(t)
	if mutate != nil {
		mutate(&cfg)
	}
	db := newTestDB(t)
	audit, err := credentials.OpenAuditLog(context.Background(), db, nil, zerolog.Nop())
	require.NoError(t, err)
	dir := &fakeDir{rooms: map[string][]string{}}
	clk := &clock{t: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	c, err := New(context.Background(), Options{
		Config: cfg, DB: db, Audit: audit, Directory: dir, Log: zerolog.New(zerolog.NewTestWriter(t)), Now: clk.now,
	})
	require.NoError(t, err)
	return &env{c: c, db: db, dir: dir, clock: clk}
}

var orgAdmin = Principal{Subject: "https://idp|alice", Org: "land-nrw", Roles: []string{"booking-admin"}}

func (e *env) book(t testing.TB, tier string, mutate func(*BookingRequest)) *Booking {
	t.Helper()
	now := e.clock.now()
	req := BookingRequest{Tier: tier, Unit: UnitDateRange, ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(30 * 24 * time.Hour), TZ: "Europe/Berlin", AcceptTerms: testTerms}
	if mutate != nil {
		mutate(&req)
	}
	b, err := e.c.Book(context.Background(), orgAdmin, "land-nrw", req)
	require.NoError(t, err)
	for _, r := range req.Rooms {
		bound, err := e.c.ConfirmRoom(context.Background(), r, b.ID, "@roomadmin:x")
		require.NoError(t, err)
		require.True(t, bound)
	}
	return b
}
