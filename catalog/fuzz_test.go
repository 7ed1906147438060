package catalog

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzBookingBody: the admin API's booking body never panics the decoder
// or the checks, and an accepted request re-marshals to the same request.
func FuzzBookingBody(f *testing.F) {
	f.Add([]byte(`{"tier":"public-20-gold","unit":"dateRange","valid_from":"2026-12-01T00:00:00Z","valid_until":"2026-12-31T00:00:00Z","tz":"Europe/Berlin","rooms":["!a:b"],"accept_terms":"` + testTerms + `"}`))
	f.Add([]byte(`{"tier":"kritis-20-gold","unit":"sessions","sessions":3,"valid_from":"2026-12-01T00:00:00Z","valid_until":"2027-01-01T00:00:00Z","sites":["de-ber-1"],"max_concurrent_sessions":2}`))
	f.Add([]byte(`{"org":"x","tier":"","unit":"","rooms":["!\u0000:x"]}`))
	f.Add([]byte(`[]`))
	tier := &Tier{ID: "public-20-gold", MaxParticipants: 20, MaxConcurrent: 4, Sites: []string{"de-ber-1", "default"}}
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		var req bookBody
		if err := decodeStrict(body, &req); err != nil {
			return
		}
		if err := req.check(tier, testTerms, now); err != nil {
			return
		}
		raw, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		var again bookBody
		if err := decodeStrict(raw, &again); err != nil {
			t.Fatalf("accepted request does not re-decode: %v", err)
		}
		if err := again.check(tier, testTerms, now); err != nil {
			t.Fatalf("accepted request fails its own check after re-marshalling: %v", err)
		}
	})
}

// FuzzClaims: whatever an ID token's amr and roles claims hold, reading
// them never panics and MFA is proven only by known factors.
func FuzzClaims(f *testing.F) {
	f.Add([]byte(`{"amr":["pwd","otp"],"roles":["booking-admin"],"acr":"x"}`))
	f.Add([]byte(`{"amr":"pwd otp","roles":"provider"}`))
	f.Add([]byte(`{"amr":[1,null,{"a":"b"}],"roles":{}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var claims map[string]any
		if json.Unmarshal(raw, &claims) != nil {
			return
		}
		amr := stringList(claims["amr"])
		_ = stringList(claims["roles"])
		acr, _ := claims["acr"].(string)
		if mfaProven(amr, acr, nil) {
			known := 0
			for _, m := range amr {
				switch m {
				case "mfa", "pwd", "pin", "kba", "otp", "hwk", "swk", "sms", "tel", "sc", "fpt", "face", "iris", "retina", "vbm":
					known++
				}
			}
			if known == 0 {
				t.Fatalf("MFA proven by %v", amr)
			}
		}
	})
}
