package credentials

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The adversarial JSON-LD corpus: credentials and presentations issued and
// signed by the Node harness (@digitalbazaar/vc, jsonld.js), respelled here
// in Go without changing their RDF (so their proofs still verify), then
// presented through the OID4VP flow. gxconf must refuse every respelling
// rather than read a field the issuer did not sign.

const (
	credNS   = "https://www.w3.org/2018/credentials#"
	undefNS  = "https://www.w3.org/ns/credentials/undefined-term#"
	xsdDate  = "http://www.w3.org/2001/XMLSchema#dateTime"
	otherDID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
)

func decodeCred(t testing.TB, raw json.RawMessage) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	return m
}

// renameToIRI moves m[key] to the absolute IRI iri, as a typed value object
// when typ is set (the context's type coercion does not apply to an IRI key).
func renameToIRI(m map[string]any, key, iri, typ string) {
	v := m[key]
	delete(m, key)
	if typ != "" {
		v = map[string]any{"@value": v, "@type": typ}
	}
	m[iri] = v
}

func addInlineContext(m map[string]any, def map[string]any) {
	m["@context"] = append(m["@context"].([]any), def)
}

func subjectOf(m map[string]any) map[string]any { return m["credentialSubject"].(map[string]any) }

// sameRDF asserts that the respelling did not change what the proof covers.
func sameRDF(t testing.TB, a, b map[string]any) {
	t.Helper()
	strip := func(m map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range m {
			if k != "proof" {
				out[k] = v
			}
		}
		return out
	}
	ca, err := canonicalize(strip(a))
	require.NoError(t, err)
	cb, err := canonicalize(strip(b))
	require.NoError(t, err)
	require.Equal(t, ca, cb, "the respelling must keep the signed RDF")
}

func TestLDPRespellingsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Node credential harness")
	}
	e := newTestEnv(t, nil, nil, nil)
	e.rooms[kritisRoom] = kritisPolicy()
	hour := time.Hour.Milliseconds()
	nowMs := time.Now().UnixMilli()
	// Each respelling is tried on a credential signed by @digitalbazaar/vc
	// (Ed25519Signature2020, issuer w3c) and on one signed with jsonld.js and
	// jose (JsonWebSignature2020, did:web issuer web).
	for _, issuer := range []string{"w3c", "web"} {
		e.h.call(t, "list", map[string]any{"name": "adv-r0-" + issuer, "issuer": issuer, "kind": "bitstring", "revoked": []int{0}}, nil)
	}

	for _, tc := range []struct {
		name  string
		room  string
		issue map[string]any
		// respell rewrites the issued credential; it returns extra
		// credentials for the presentation, if any.
		respell func(t *testing.T, m map[string]any) []json.RawMessage
		want    string
	}{
		{"credentialStatus as an absolute IRI hides a revocation", kritisRoom,
			map[string]any{"format": "ldp_vc", "status": map[string]any{"list": "adv-r0", "index": 0}},
			func(t *testing.T, m map[string]any) []json.RawMessage {
				renameToIRI(m, "credentialStatus", credNS+"credentialStatus", "")
				return nil
			}, "malformed"},
		{"expirationDate as an IRI with a value object hides the expiry", kritisRoom,
			map[string]any{"format": "ldp_vc", "validFrom": nowMs - 3*hour, "validUntil": nowMs - hour},
			func(t *testing.T, m map[string]any) []json.RawMessage {
				renameToIRI(m, "expirationDate", credNS+"expirationDate", xsdDate)
				return nil
			}, "malformed"},
		{"issuanceDate as an IRI with a value object hides a future start", kritisRoom,
			map[string]any{"format": "ldp_vc", "validFrom": nowMs + 24*hour},
			func(t *testing.T, m map[string]any) []json.RawMessage {
				renameToIRI(m, "issuanceDate", credNS+"issuanceDate", xsdDate)
				return nil
			}, "malformed"},
		{"inline context relabels the type into a trusted one", kritisRoom,
			map[string]any{"format": "ldp_vc", "type": "DoctorCredential"},
			func(t *testing.T, m map[string]any) []json.RawMessage {
				addInlineContext(m, map[string]any{"EmployeeCredential": undefNS + "DoctorCredential"})
				m["type"] = []any{"VerifiableCredential", "EmployeeCredential"}
				return nil
			}, "malformed"},
		{"inline context swaps two signed claim values", kritisRoom,
			map[string]any{"format": "ldp_vc", "claims": map[string]any{"sector": "chemie", "memberOf": "energie"}},
			func(t *testing.T, m map[string]any) []json.RawMessage {
				addInlineContext(m, map[string]any{"sector": undefNS + "memberOf", "memberOf": undefNS + "sector"})
				s := subjectOf(m)
				s["sector"], s["memberOf"] = s["memberOf"], s["sector"]
				return nil
			}, "malformed"},
		{"claim as a value object", kritisRoom,
			map[string]any{"format": "ldp_vc"},
			func(t *testing.T, m map[string]any) []json.RawMessage {
				s := subjectOf(m)
				s["sector"] = map[string]any{"@value": s["sector"]}
				return nil
			}, "malformed"},
		{"claim under its absolute IRI", kritisRoom,
			map[string]any{"format": "ldp_vc"},
			func(t *testing.T, m map[string]any) []json.RawMessage {
				renameToIRI(subjectOf(m), "memberOf", undefNS+"memberOf", "")
				return nil
			}, "malformed"},
		{"@id for the subject id makes someone else's credential a bearer credential", publicRoom,
			map[string]any{"format": "ldp_vc", "subject": otherDID},
			func(t *testing.T, m map[string]any) []json.RawMessage {
				s := subjectOf(m)
				s["@id"] = s["id"]
				delete(s, "id")
				return nil
			}, "malformed"},
		{"expired participant credential of a trust anchor, expiry respelled", kritisRoom,
			map[string]any{"format": "ldp_vc", "issuer": "untrusted"},
			func(t *testing.T, m map[string]any) []json.RawMessage {
				p := decodeCred(t, e.h.issue(t, map[string]any{"format": "ldp_vc", "issuer": "w3c", "type": "ParticipantCredential",
					"subject": e.h.info.Issuers["untrusted"], "validFrom": nowMs - 3*hour, "validUntil": nowMs - hour}))
				orig := decodeCred(t, must(json.Marshal(p)))
				renameToIRI(p, "expirationDate", credNS+"expirationDate", xsdDate)
				sameRDF(t, orig, p)
				return []json.RawMessage{must(json.Marshal(p))}
			}, "malformed"},
		{"proof.expires respelled as an IRI", kritisRoom,
			map[string]any{"format": "ldp_vc", "proofExpires": nowMs - hour},
			func(t *testing.T, m map[string]any) []json.RawMessage {
				renameToIRI(m["proof"].(map[string]any), "expires", "https://w3id.org/security#expiration", xsdDate)
				return nil
			}, "malformed"},
	} {
		issuers := []string{"w3c", "web"}
		if fixed, ok := tc.issue["issuer"].(string); ok {
			issuers = []string{fixed} // a case for one issuer only
		}
		for _, issuer := range issuers {
			issue := map[string]any{"issuer": issuer}
			for k, v := range tc.issue {
				issue[k] = v
			}
			if st, ok := issue["status"].(map[string]any); ok {
				issue["status"] = map[string]any{"list": st["list"].(string) + "-" + issuer, "index": st["index"]}
			}
			runRespelling(t, e, issuer+"/"+tc.name, tc.room, issue, tc.respell, tc.want)
		}
	}
	t.Run("the undoctored credentials are accepted", func(t *testing.T) {
		for _, issuer := range []string{"w3c", "web"} {
			for _, room := range []string{kritisRoom, publicRoom} {
				r := e.h.present(t, e.request(t, newUser(), room).Link, e.h.issue(t, map[string]any{"format": "ldp_vc", "issuer": issuer}), "ldp_vp", nil)
				require.Equal(t, http.StatusOK, r.Status, r.Body)
			}
		}
	})

	t.Run("inline context signed by the issuer", func(t *testing.T) {
		// Signed as is by @digitalbazaar/vc: refused all the same, because
		// with an inline context the term a policy reads is not pinned.
		r := e.h.present(t, e.request(t, newUser(), kritisRoom).Link,
			e.h.issue(t, map[string]any{"format": "ldp_vc", "inlineVocab": true}), "ldp_vp", nil)
		require.Equal(t, "malformed", errorCode(t, r.Body), r.Body)
	})

	t.Run("presentation fields respelled", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			respell func(vp map[string]any)
		}{
			{"holder as an absolute IRI", func(vp map[string]any) {
				vp[credNS+"holder"] = map[string]any{"@id": vp["holder"]}
				delete(vp, "holder")
			}},
			{"type as @type", func(vp map[string]any) {
				vp["@type"] = vp["type"]
				delete(vp, "type")
			}},
			{"proof challenge as an absolute IRI", func(vp map[string]any) {
				p := vp["proof"].(map[string]any)
				p["https://w3id.org/security#challenge"] = p["challenge"]
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				req := e.request(t, newUser(), kritisRoom)
				r := e.h.present(t, req.Link, e.h.issue(t, map[string]any{"format": "ldp_vc"}), "ldp_vp", map[string]any{"dryRun": true})
				var vp map[string]any
				require.NoError(t, json.Unmarshal([]byte(r.Form["vp_token"]), &vp))
				tc.respell(vp)
				r.Form["vp_token"] = string(must(json.Marshal(vp)))
				status, body := e.post(t, r.ResponseURI, r.Form)
				require.NotEqual(t, http.StatusOK, status, body)
				require.Equal(t, "malformed", errorCode(t, body), body)
			})
		}
	})

	t.Run("duplicate member name in a signed presentation", func(t *testing.T) {
		req := e.request(t, newUser(), kritisRoom)
		r := e.h.present(t, req.Link, e.h.issue(t, map[string]any{"format": "ldp_vc"}), "ldp_vp", map[string]any{"dryRun": true})
		tok := r.Form["vp_token"]
		require.Contains(t, tok, `"credentialSubject":{`)
		r.Form["vp_token"] = strings.Replace(tok, `"credentialSubject":{`, `"credentialSubject":{"sector":"wasser",`, 1)
		status, body := e.post(t, r.ResponseURI, r.Form)
		require.NotEqual(t, http.StatusOK, status, body)
		require.Equal(t, "malformed", errorCode(t, body), body)
	})
}

// TestLDPProofExpires: a Data Integrity proof past its "expires" is refused
// on a credential and on a presentation.
func TestLDPProofExpires(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Node credential harness")
	}
	e := newTestEnv(t, nil, nil, nil)
	e.rooms[kritisRoom] = kritisPolicy()
	past, future := time.Now().Add(-time.Hour).UnixMilli(), time.Now().Add(time.Hour).UnixMilli()
	for _, tc := range []struct {
		name          string
		issuer        string
		vcExp, vpExp  int64
		wantOK        bool
		wantErrorCode string
	}{
		{"credential proof expired (Ed25519Signature2020)", "w3c", past, 0, false, "expired"},
		{"credential proof expired (JsonWebSignature2020)", "web", past, 0, false, "expired"},
		{"presentation proof expired", "w3c", 0, past, false, "expired"},
		{"proofs not yet expired", "w3c", future, future, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			issue := map[string]any{"format": "ldp_vc", "issuer": tc.issuer}
			if tc.vcExp != 0 {
				issue["proofExpires"] = tc.vcExp
			}
			var extra map[string]any
			if tc.vpExp != 0 {
				extra = map[string]any{"proofExpires": tc.vpExp}
			}
			r := e.h.present(t, e.request(t, newUser(), kritisRoom).Link, e.h.issue(t, issue), "ldp_vp", extra)
			if tc.wantOK {
				require.Equal(t, http.StatusOK, r.Status, r.Body)
				return
			}
			require.NotEqual(t, http.StatusOK, r.Status, r.Body)
			require.Equal(t, tc.wantErrorCode, errorCode(t, r.Body), r.Body)
		})
	}
}

// TestStatusListRespellingAndReasons: an expired status list is a status
// list problem (not "expired", which would blame the user's credential), and
// a signed status list respelled to hide its expiry is refused as well.
func TestStatusListRespellingAndReasons(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Node credential harness")
	}
	e := newTestEnv(t, nil, nil, nil)
	e.rooms[kritisRoom] = kritisPolicy()
	hour := time.Hour.Milliseconds()
	nowMs := time.Now().UnixMilli()
	present := func(t *testing.T, list string) presentResult {
		return e.h.present(t, e.request(t, newUser(), kritisRoom).Link,
			e.h.issue(t, map[string]any{"format": "ldp_vc", "status": map[string]any{"list": list, "index": 3}}), "ldp_vp", nil)
	}
	for _, tc := range []struct{ name, list string }{
		{"expired status list", "stale"},
		{"status list not yet valid", "early"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := map[string]any{"name": tc.list, "issuer": "w3c", "kind": "bitstring"}
			if tc.list == "stale" {
				args["validFrom"], args["validUntil"] = nowMs-3*hour, nowMs-hour
			} else {
				args["validFrom"] = nowMs + 24*hour
			}
			e.h.call(t, "list", args, nil)
			r := present(t, tc.list)
			require.NotEqual(t, http.StatusOK, r.Status, r.Body)
			require.Equal(t, "status_list_invalid", errorCode(t, r.Body), r.Body)
		})
	}
	t.Run("expired status list with its expiry respelled", func(t *testing.T) {
		var out struct {
			Credential map[string]any `json:"credential"`
		}
		e.h.call(t, "list", map[string]any{"name": "respelled", "issuer": "w3c", "kind": "bitstring",
			"validFrom": nowMs - 3*hour, "validUntil": nowMs - hour}, &out)
		orig := decodeCred(t, must(json.Marshal(out.Credential)))
		renameToIRI(out.Credential, "expirationDate", credNS+"expirationDate", xsdDate)
		sameRDF(t, orig, out.Credential)
		e.h.call(t, "serveList", map[string]any{"name": "respelled", "credential": out.Credential}, nil)
		r := present(t, "respelled")
		require.NotEqual(t, http.StatusOK, r.Status, r.Body)
		require.Equal(t, "status_list_invalid", errorCode(t, r.Body), r.Body)
	})
}

// runRespelling issues a credential, respells it, presents it and requires
// the refusal want with no attestation stored.
func runRespelling(t *testing.T, e *testEnv, name, room string, issue map[string]any,
	respell func(t *testing.T, m map[string]any) []json.RawMessage, want string) {
	t.Run(name, func(t *testing.T) {
		user := newUser()
		req := e.request(t, user, room)
		m := decodeCred(t, e.h.issue(t, issue))
		orig := decodeCred(t, must(json.Marshal(m)))
		extra := respell(t, m)
		sameRDF(t, orig, m)
		var opts map[string]any
		if extra != nil {
			opts = map[string]any{"extraCredentials": extra}
		}
		r := e.h.present(t, req.Link, must(json.Marshal(m)), "ldp_vp", opts)
		require.NotEqual(t, http.StatusOK, r.Status, "respelled credential accepted: %s", r.Body)
		require.Equal(t, want, errorCode(t, r.Body), r.Body)
		atts, err := e.v.Attestations(context.Background(), user)
		require.NoError(t, err)
		require.Empty(t, atts)
	})
}

// TestLDPProofSuitesRefused: Ed25519Signature2018 and DataIntegrityProof
// proofs signed by the harness (@digitalbazaar's suites), then relabelled or
// respelled here; each must be refused with the reason named, and the
// undoctored ones accepted.
func TestLDPProofSuitesRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Node credential harness")
	}
	e := newTestEnv(t, nil, nil, nil)
	e.rooms[kritisRoom] = kritisPolicy()
	proofOf := func(m map[string]any) map[string]any { return m["proof"].(map[string]any) }
	for _, tc := range []struct {
		name    string
		issue   map[string]any
		present map[string]any
		doctor  func(m map[string]any)
		want    string // "" accepted
	}{
		{"Ed25519Signature2018 accepted", map[string]any{"issuer": "ed2018"}, nil, nil, ""},
		{"eddsa-rdfc-2022 accepted", map[string]any{"issuer": "eddsa", "vc2": true}, nil, nil, ""},
		{"ecdsa-rdfc-2019 P-384 accepted", map[string]any{"issuer": "p384"}, nil, nil, ""},
		{"Ed25519Signature2018 claim changed", map[string]any{"issuer": "ed2018"}, nil,
			func(m map[string]any) { subjectOf(m)["sector"] = "wasser" }, "bad_signature"},
		{"eddsa-rdfc-2022 claim changed", map[string]any{"issuer": "eddsa", "vc2": true}, nil,
			func(m map[string]any) { subjectOf(m)["sector"] = "wasser" }, "bad_signature"},
		{"ecdsa-rdfc-2019 P-256 claim changed", map[string]any{"issuer": "p256", "vc2": true}, nil,
			func(m map[string]any) { subjectOf(m)["sector"] = "wasser" }, "bad_signature"},
		{"ecdsa-rdfc-2019 P-384 validity changed", map[string]any{"issuer": "p384"}, nil,
			func(m map[string]any) { m["issuanceDate"] = "2020-01-01T00:00:00Z" }, "bad_signature"},
		{"eddsa proof relabelled ecdsa-rdfc-2019 (Ed25519 key)", map[string]any{"issuer": "eddsa", "vc2": true}, nil,
			func(m map[string]any) { proofOf(m)["cryptosuite"] = "ecdsa-rdfc-2019" }, "alg_not_allowed"},
		{"ecdsa proof relabelled eddsa-rdfc-2022 (P-256 key)", map[string]any{"issuer": "p256", "vc2": true}, nil,
			func(m map[string]any) { proofOf(m)["cryptosuite"] = "eddsa-rdfc-2022" }, "alg_not_allowed"},
		{"a cryptosuite gxconf does not verify", map[string]any{"issuer": "eddsa", "vc2": true}, nil,
			func(m map[string]any) { proofOf(m)["cryptosuite"] = "eddsa-jcs-2022" }, "unsupported_format"},
		{"DataIntegrityProof without cryptosuite", map[string]any{"issuer": "eddsa", "vc2": true}, nil,
			func(m map[string]any) { delete(proofOf(m), "cryptosuite") }, "malformed"},
		{"DataIntegrityProof relabelled Ed25519Signature2020", map[string]any{"issuer": "eddsa", "vc2": true}, nil,
			func(m map[string]any) { proofOf(m)["type"] = "Ed25519Signature2020" }, "malformed"},
		{"proof @context a prefix of the document's", map[string]any{"issuer": "eddsa", "vc2": true}, nil,
			func(m map[string]any) { proofOf(m)["@context"] = []any{ContextCredentialsV2} }, "malformed"},
		{"proof @context the document's, as a list", map[string]any{"issuer": "eddsa", "vc2": true}, nil,
			func(m map[string]any) { proofOf(m)["@context"] = m["@context"] }, ""},
		{"proofValue not base58btc", map[string]any{"issuer": "p256", "vc2": true}, nil,
			func(m map[string]any) {
				p := proofOf(m)
				p["proofValue"] = "u" + p["proofValue"].(string)[1:]
			}, "bad_signature"},
		{"Ed25519Signature2018 with an ES256 JWS header", map[string]any{"issuer": "ed2018"}, nil,
			func(m map[string]any) {
				p := proofOf(m)
				parts := strings.Split(p["jws"].(string), ".")
				parts[0] = "eyJhbGciOiJFUzI1NiIsImI2NCI6ZmFsc2UsImNyaXQiOlsiYjY0Il19" // {"alg":"ES256","b64":false,"crit":["b64"]}
				p["jws"] = strings.Join(parts, ".")
			}, "alg_not_allowed"},
		{"presentation proof eddsa-rdfc-2022 with another challenge", map[string]any{"issuer": "eddsa", "vc2": true},
			map[string]any{"vpSuite": "eddsa-rdfc-2022", "nonce": "not-the-nonce"}, nil, "wrong_nonce"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			issue := map[string]any{"format": "ldp_vc"}
			for k, v := range tc.issue {
				issue[k] = v
			}
			cred := e.h.issue(t, issue)
			if tc.doctor != nil {
				m := decodeCred(t, cred)
				tc.doctor(m)
				var err error
				cred, err = json.Marshal(m)
				require.NoError(t, err)
			}
			user := newUser()
			r := e.h.present(t, e.request(t, user, kritisRoom).Link, cred, "ldp_vp", tc.present)
			if tc.want == "" {
				require.Equal(t, http.StatusOK, r.Status, r.Body)
				require.True(t, e.authorize(t, user, kritisRoom).Allow)
				return
			}
			require.NotEqual(t, http.StatusOK, r.Status, r.Body)
			require.Equal(t, tc.want, errorCode(t, r.Body), r.Body)
			require.False(t, e.authorize(t, user, kritisRoom).Allow)
		})
	}

	t.Run("federation without EdDSA refuses eddsa-rdfc-2022", func(t *testing.T) {
		es := newTestEnv(t, e.h, e.tls, func(c *Config) { c.Federations[0].Algs = []string{"ES256"} })
		es.rooms[kritisRoom] = kritisPolicy()
		r := es.h.present(t, es.request(t, newUser(), kritisRoom).Link,
			es.h.issue(t, map[string]any{"format": "ldp_vc", "issuer": "eddsa", "vc2": true}), "ldp_vp",
			map[string]any{"vpSuite": "eddsa-rdfc-2022"})
		require.Equal(t, "alg_not_allowed", errorCode(t, r.Body), r.Body)
	})
}

// TestCanonicalPresentationGraphs: in a VC 2.0 presentation each embedded
// credential is a graph of its own, as in a VC 1.1 one (json-gold needs
// presentationGraphs for the first).
func TestCanonicalPresentationGraphs(t *testing.T) {
	for _, ctx := range []string{ContextCredentialsV1, ContextCredentialsV2} {
		t.Run(ctx, func(t *testing.T) {
			vc := map[string]any{
				"@context": []any{ctx, "https://www.w3.org/ns/credentials/undefined-terms/v2"},
				"id":       "urn:uuid:c1", "type": []any{"VerifiableCredential", "EmployeeCredential"},
				"issuer": otherDID, "credentialSubject": map[string]any{"id": otherDID, "sector": "energie"},
			}
			vp := map[string]any{
				"@context": []any{ctx}, "type": []any{"VerifiablePresentation"}, "holder": otherDID,
				"verifiableCredential": []any{vc},
			}
			nq, err := canonicalize(vp)
			require.NoError(t, err)
			var inGraph, vcTriples int
			graph := ""
			for _, line := range strings.Split(strings.TrimSpace(nq), "\n") {
				if strings.HasPrefix(line, "<urn:uuid:c1> ") {
					vcTriples++
					f := strings.Fields(strings.TrimSuffix(line, " ."))
					if g := f[len(f)-1]; strings.HasPrefix(g, "_:") {
						inGraph++
						graph = g
					}
				}
			}
			require.Equal(t, 4, vcTriples, nq)
			require.Equal(t, vcTriples, inGraph, "the credential's statements are in a graph of their own:\n%s", nq)
			require.Contains(t, nq, "<https://www.w3.org/2018/credentials#verifiableCredential> "+graph+" .", nq)
			_, changed := vp["verifiableCredential"].([]any)[0].(map[string]any)["@graph"]
			require.False(t, changed, "the document itself is not changed")
		})
	}
}

func TestSameContexts(t *testing.T) {
	v1, v2 := ContextCredentialsV1, ContextCredentialsV2
	require.True(t, sameContexts(v2, []any{v2}), "a string and a list of it")
	require.True(t, sameContexts([]any{v2, v1}, []any{v2, v1}))
	require.False(t, sameContexts([]any{v2, v1}, []any{v1, v2}), "order")
	require.False(t, sameContexts([]any{v2}, []any{v2, v1}), "a prefix")
	require.False(t, sameContexts(nil, []any{v2}))
	require.False(t, sameContexts(42, 42), "not a context")
}
