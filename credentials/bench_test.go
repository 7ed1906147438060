package credentials

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// BenchmarkVerifyPresentation measures full verification of one wallet
// response per format (proofs, JSON-LD canonicalisation, trust, validity,
// holder binding; DID documents and status lists come from the warm caches,
// as they do in steady state). The credentials come from the Node harness:
//
//	go test -run '^$' -bench BenchmarkVerifyPresentation -benchtime 200x ./credentials/
func BenchmarkVerifyPresentation(b *testing.B) {
	e := newTestEnv(b, nil, nil, nil)
	e.rooms[kritisRoom] = kritisPolicy()
	e.h.call(b, "list", map[string]any{"name": "bench", "issuer": "w3c", "kind": "bitstring"}, nil)
	for _, tc := range []struct {
		name, format, issuer, present string
		status                        map[string]any
	}{
		{"ldp_vp+Ed25519Signature2020+status", "ldp_vc", "w3c", "ldp_vp", map[string]any{"list": "bench", "index": 9}},
		{"ldp_vp+JsonWebSignature2020", "ldp_vc", "web", "ldp_vp", nil},
		{"jwt_vp_json+jwt_vc_json", "jwt_vc_json", "web", "jwt_vp_json", nil},
		{"jwt_vp_json+vc+jwt", "vc+jwt", "web", "jwt_vp_json", nil},
		{"dc+sd-jwt+kb", "dc+sd-jwt", "web", "sd-jwt", nil},
	} {
		b.Run(tc.name, func(b *testing.B) {
			req := e.request(b, newUser(), kritisRoom)
			args := map[string]any{"format": tc.format, "issuer": tc.issuer}
			if tc.status != nil {
				args["status"] = tc.status
			}
			r := e.h.present(b, req.Link, e.h.issue(b, args), tc.present, map[string]any{"dryRun": true})
			sr, err := e.v.store.getRequest(context.Background(), req.ID)
			require.NoError(b, err)
			token := []byte(r.Form["vp_token"])
			p := PresentationParams{Nonce: sr.Nonce, Audience: e.v.ClientID(), Level: LevelKritis}
			_, err = e.v.VerifyPresentation(context.Background(), token, p) // warm caches
			require.NoError(b, err)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := e.v.VerifyPresentation(context.Background(), token, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
