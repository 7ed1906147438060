package did

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Test vector from the did:key spec (Ed25519, §"Ed25519 Test Vectors").
const edDIDKey = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"

func TestResolveDIDKey(t *testing.T) {
	r := NewResolver(Options{})
	ctx := context.Background()
	doc, err := r.Resolve(ctx, edDIDKey)
	require.NoError(t, err)
	require.Equal(t, edDIDKey, doc.ID)
	vm, key, err := r.ResolveKey(ctx, edDIDKey+"#z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", AssertionMethod)
	require.NoError(t, err)
	require.Equal(t, "Ed25519VerificationKey2020", vm.Type)
	require.Len(t, key.(ed25519.PublicKey), 32)
	_, _, err = r.ResolveKey(ctx, edDIDKey, Authentication)
	require.NoError(t, err, "a bare DID with one key resolves")
	_, _, err = r.ResolveKey(ctx, edDIDKey+"#other", AssertionMethod)
	require.ErrorIs(t, err, ErrNoKey)

	// P-256 did:key (spec test vector).
	_, key, err = r.ResolveKey(ctx, "did:key:zDnaerDaTF5BXEavCrfRZEk316dpbLsfPDZ3WJ5hRTPFU2169", AssertionMethod)
	require.NoError(t, err)
	require.Equal(t, "P-256", key.(*ecdsa.PublicKey).Curve.Params().Name)

	for _, bad := range []string{"did:key:", "did:key:zzzz", "did:key:x123", "did:key:z6Mk:extra", "did:example:123", "notadid"} {
		_, err := r.Resolve(ctx, bad)
		require.ErrorIs(t, err, ErrResolution, bad)
	}
}

func TestResolveDIDJWK(t *testing.T) {
	// did:jwk spec example (P-256).
	d := "did:jwk:eyJjcnYiOiJQLTI1NiIsImt0eSI6IkVDIiwieCI6ImFjYklRaXVNczNpOF91c3pFakoydHBUdFJNNEVVM3l6OTFQSDZDZEgyVjAiLCJ5IjoiX0tjeUxqOXZXTXB0bm1LdG00NkdxRHo4d2Y3NEk1TEtncmwyR3pIM25TRSJ9"
	r := NewResolver(Options{})
	vm, key, err := r.ResolveKey(context.Background(), d+"#0", AssertionMethod)
	require.NoError(t, err)
	require.Equal(t, "JsonWebKey2020", vm.Type)
	require.IsType(t, &ecdsa.PublicKey{}, key)
	// A private JWK is refused.
	_, err = r.Resolve(context.Background(), "did:jwk:eyJrdHkiOiJPS1AiLCJjcnYiOiJFZDI1NTE5IiwieCI6IjExcVlBWUt4Q3JmVlNfN1R5V1FIT2c3aGN2UGFwaU1scndJYWFQY0hVUm8iLCJkIjoibldHeHpzM09GQ0RwZ0tQTjJHa2w3bkNlYkZqVUN4QWtCdjdNWVZfUElJbyJ9")
	require.ErrorIs(t, err, ErrResolution)
}

func TestWebURL(t *testing.T) {
	for in, want := range map[string]string{
		"did:web:w3c-ccg.github.io":                   "https://w3c-ccg.github.io/.well-known/did.json",
		"did:web:w3c-ccg.github.io:user:alice":        "https://w3c-ccg.github.io/user/alice/did.json",
		"did:web:example.com%3A3000:user:alice":       "https://example.com:3000/user/alice/did.json",
		"did:web:127.0.0.1%3A8443:issuers:web":        "https://127.0.0.1:8443/issuers/web/did.json",
		"did:web:example.com:path%20with%20space:doc": "https://example.com/path%20with%20space/doc/did.json",
	} {
		got, err := WebURL(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got)
	}
	for _, bad := range []string{"did:web:", "did:web:a:..:b", "did:web:user@host", "did:web:host%2Fpath", "did:web:a::b"} {
		_, err := WebURL(bad)
		require.Error(t, err, bad)
	}
}

func TestIsPublic(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
		"0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "224.0.0.1", "64:ff9b::a00:1", "240.0.0.1"} {
		require.False(t, IsPublic(netip.MustParseAddr(a)), a)
	}
	for _, a := range []string{"8.8.8.8", "2a00:1450:4001::1", "1.1.1.1"} {
		require.True(t, IsPublic(netip.MustParseAddr(a)), a)
	}
}

// TestGuardedClientRefusesLoopback shows the dial-time check: the refusal
// happens after resolution, before any connection is made.
func TestGuardedClientRefusesLoopback(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hits.Add(1) }))
	defer srv.Close()
	c := NewGuardedClient(2*time.Second, false, nil)
	for _, u := range []string{srv.URL, strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)} {
		_, err := Fetch(context.Background(), c, u, 1024, "*/*")
		require.ErrorIs(t, err, ErrPrivateAddress, u)
	}
	require.Zero(t, hits.Load())
}

func TestResolveWebWithCacheAndLimits(t *testing.T) {
	var hits atomic.Int32
	var body atomic.Value
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(body.Load().(string)))
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	d := "did:web:" + strings.Replace(host, ":", "%3A", 1)
	doc := map[string]any{
		"id": d,
		"verificationMethod": []any{map[string]any{"id": "#k", "type": "Multikey", "controller": d,
			"publicKeyMultibase": "z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"}},
		"assertionMethod": []any{"#k"},
	}
	raw, _ := json.Marshal(doc)
	body.Store(string(raw))
	pool := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	r := NewResolver(Options{AllowPrivateAddresses: true, RootCAs: pool, MaxDocumentBytes: 2048})
	ctx := context.Background()
	_, key, err := r.ResolveKey(ctx, d+"#k", AssertionMethod)
	require.NoError(t, err)
	require.IsType(t, ed25519.PublicKey{}, key)
	_, err = r.Resolve(ctx, d)
	require.NoError(t, err)
	require.Equal(t, int32(1), hits.Load(), "second resolution is cached")

	big := NewResolver(Options{AllowPrivateAddresses: true, RootCAs: pool, MaxDocumentBytes: 2048})
	body.Store(string(raw) + strings.Repeat(" ", 4096))
	_, err = big.Resolve(ctx, d)
	require.ErrorIs(t, err, ErrTooLarge)

	wrong := NewResolver(Options{AllowPrivateAddresses: true, RootCAs: pool})
	body.Store(strings.Replace(string(raw), `"id":"did:web`, `"id":"did:web:evil`, 1))
	_, err = wrong.Resolve(ctx, d)
	require.ErrorIs(t, err, ErrResolution)
}

func FuzzParseDocument(f *testing.F) {
	f.Add([]byte(`{"id":"did:web:a","verificationMethod":[{"id":"#k","type":"JsonWebKey2020","controller":"did:web:a","publicKeyJwk":{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}],"assertionMethod":["#k"],"authentication":[{"id":"did:web:a#e","type":"Multikey","publicKeyMultibase":"z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"}]}`))
	f.Add([]byte(`{"id":"did:key:x","assertionMethod":["did:key:x#y"]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := ParseDocument(data, "")
		if err != nil {
			return
		}
		for _, rel := range []Relationship{AssertionMethod, Authentication} {
			for _, vm := range doc.Methods(rel) {
				_, _ = vm.PublicKey()
			}
		}
		// Accepted input re-marshals and parses to the same document.
		again, err := json.Marshal(doc)
		require.NoError(t, err)
		doc2, err := ParseDocument(again, doc.ID)
		require.NoError(t, err)
		require.Equal(t, doc.ID, doc2.ID)
		require.Len(t, doc2.VerificationMethod, len(doc.VerificationMethod))
	})
}

func FuzzResolveOffline(f *testing.F) {
	f.Add(edDIDKey)
	f.Add("did:jwk:eyJrdHkiOiJPS1AiLCJjcnYiOiJFZDI1NTE5IiwieCI6IjExcVlBWUt4Q3JmVlNfN1R5V1FIT2c3aGN2UGFwaU1scndJYWFQY0hVUm8ifQ")
	f.Add("did:key:zDnaerDaTF5BXEavCrfRZEk316dpbLsfPDZ3WJ5hRTPFU2169")
	r := NewResolver(Options{})
	f.Fuzz(func(t *testing.T, d string) {
		if MethodName(d) == "web" {
			_, _ = WebURL(d)
			return
		}
		doc, err := r.Resolve(context.Background(), d)
		if err != nil {
			return
		}
		for _, vm := range doc.Methods(AssertionMethod) {
			_, _ = vm.PublicKey()
		}
	})
}

func TestParseDocumentStrict(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat(`}`, 40)
	for _, tc := range []struct{ name, doc string }{
		{"relationship twice", `{"id":"did:web:a","assertionMethod":["did:web:a#k"],"assertionMethod":[]}`},
		{"id twice", `{"id":"did:web:a","id":"did:web:b"}`},
		{"name in two letter cases", `{"id":"did:web:a","ID":"did:web:b"}`},
		{"nested too deep", `{"id":"did:web:a","service":` + deep + `}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseDocument([]byte(tc.doc), "")
			require.ErrorIs(t, err, ErrResolution)
		})
	}
	_, err := NewResolver(Options{}).Resolve(context.Background(), `did:jwk:`+base64.RawURLEncoding.EncodeToString([]byte(`{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","x":"AAAA"}`)))
	require.ErrorIs(t, err, ErrResolution)
}
