package credentials

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gxfs-conf/gxconf/internal/clip"
	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// MountPath is the path prefix the OID4VP handler serves; mount
// [Verifier.Handler] there on the public (focus) listener, e.g.
// mux.Handle(credentials.MountPath, v.Handler()).
const MountPath = "/oid4vp/"

// Request is a presentation request created for a (user, room, purpose).
type Request struct {
	ID      string
	UserID  string
	RoomID  string
	Purpose string
	Level   Level
	// Link is the openid4vp:// authorization request (by reference) for wallets.
	Link string
	// PageURL is the HTML page showing Link as a QR code.
	PageURL string
	// RequestURI serves the signed request object.
	RequestURI string
	// DCQLLink is the same request expressed as an OID4VP 1.0 DCQL query
	// (dcql_query instead of presentation_definition) for wallets that
	// implement DCQL only. Either link consumes the same single-use nonce.
	DCQLLink  string
	ExpiresAt time.Time
}

// CreateRequest creates a presentation request with a single-use nonce. If
// a room-policy lookup is configured (WithRoomPolicy), the request asks for
// the room's required credential types and the resulting attestation keeps
// only the claims that policy reads (plus retain_claims).
func (v *Verifier) CreateRequest(ctx context.Context, userID, roomID, purpose string) (*Request, error) {
	if userID == "" || roomID == "" {
		return nil, errors.New("user and room are required")
	}
	var pol *AccessPolicy
	if v.opts.roomPolicy != nil {
		p, err := v.opts.roomPolicy(ctx, roomID)
		if err != nil {
			return nil, fmt.Errorf("failed to look up room policy: %w", err)
		}
		pol = p
	}
	eff := v.effectivePolicy(pol)
	var types []string
	for _, r := range eff.RequiredCredentials {
		if !slices.Contains(types, r.Type) {
			types = append(types, r.Type)
		}
	}
	paths := append(eff.claimPaths(), v.cfg.RetainClaims...)
	slices.Sort(paths)
	paths = slices.Compact(paths)
	now := v.now()
	sr := &storedRequest{
		ID: randomID(18), Nonce: randomID(24), UserID: userID, RoomID: roomID, Purpose: purpose,
		Level: eff.Level, Types: types, ClaimPaths: paths,
		CreatedAt: now, ExpiresAt: now.Add(v.cfg.OID4VP.NonceTTL), State: "pending",
	}
	if err := v.store.insertRequest(ctx, sr); err != nil {
		return nil, fmt.Errorf("failed to store presentation request: %w", err)
	}
	return v.publicRequest(sr), nil
}

// RequestUnused tells whether the presentation request id can still be
// answered: no response has used its nonce and it has not expired. An
// unknown (or already purged) request is not unused.
func (v *Verifier) RequestUnused(ctx context.Context, id string) (bool, error) {
	sr, err := v.store.getRequest(ctx, id)
	if errors.Is(err, ErrUnknownRequest) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("failed to look up presentation request: %w", err)
	}
	return sr.State == "pending" && v.now().Before(sr.ExpiresAt), nil
}

func (v *Verifier) baseURL() string {
	return strings.TrimRight(v.cfg.OID4VP.PublicBaseURL, "/") + strings.TrimRight(MountPath, "/")
}

// finalClientID is the verifier's client identifier as OID4VP 1.0 spells
// it: a DID with the decentralized_identifier prefix. The Presentation
// Exchange link keeps the drafts' form (client_id_scheme "did", the bare
// DID); the DCQL link, DCQL being 1.0's, uses this one. A configured client
// id that is not a DID is used as it is in both.
func (v *Verifier) finalClientID() string {
	if strings.HasPrefix(v.clientID, "did:") {
		return "decentralized_identifier:" + v.clientID
	}
	return v.clientID
}

func (v *Verifier) publicRequest(sr *storedRequest) *Request {
	reqURI := v.baseURL() + "/request/" + sr.ID
	q := url.Values{}
	q.Set("client_id", v.clientID)
	q.Set("request_uri", reqURI)
	dq := url.Values{}
	dq.Set("client_id", v.finalClientID())
	dq.Set("request_uri", reqURI+"?query=dcql")
	return &Request{
		ID: sr.ID, UserID: sr.UserID, RoomID: sr.RoomID, Purpose: sr.Purpose, Level: sr.Level,
		Link:       "openid4vp://?" + q.Encode(),
		DCQLLink:   "openid4vp://?" + dq.Encode(),
		PageURL:    v.baseURL() + "/page/" + sr.ID,
		RequestURI: reqURI,
		ExpiresAt:  sr.ExpiresAt,
	}
}

// acceptedFormats is the union of the federations' formats (all supported
// when a federation lists none).
func (v *Verifier) acceptedFormats() []string {
	var out []string
	for _, f := range v.cfg.Federations {
		fs := f.Formats
		if len(fs) == 0 {
			fs = supportedFormats
		}
		for _, x := range fs {
			if !slices.Contains(out, x) {
				out = append(out, x)
			}
		}
	}
	if len(out) == 0 {
		out = slices.Clone(supportedFormats)
	}
	return out
}

// presentationDefinition builds a DIF Presentation Exchange v2 definition
// with one input descriptor per requested type.
func (v *Verifier) presentationDefinition(sr *storedRequest) map[string]any {
	algs := supportedAlgs
	formats := map[string]any{}
	for _, f := range v.acceptedFormats() {
		switch f {
		case FormatLDPVC:
			// proof_type only: Presentation Exchange v2's schema allows no
			// other member in an ldp format object (the cryptosuites gxconf
			// verifies are in ldpsuite.go and the README).
			ldp := map[string]any{"proof_type": ldProofTypes}
			formats[FormatLDPVC] = ldp
			formats[FormatLDPVP] = ldp
		case FormatJWTVCJSON, FormatVCJWT, FormatVCLDJWT:
			formats[f] = map[string]any{"alg": algs}
			formats[FormatJWTVPJSON] = map[string]any{"alg": algs}
		case FormatVCSDJWT, FormatDCSDJWT:
			formats[f] = map[string]any{"sd-jwt_alg_values": algs, "kb-jwt_alg_values": algs}
		}
	}
	var descs []any
	types := sr.Types
	if len(types) == 0 {
		types = []string{""}
	}
	for i, t := range types {
		d := map[string]any{"id": fmt.Sprintf("credential-%d", i), "format": formats}
		if t != "" {
			d["name"] = t
			d["constraints"] = map[string]any{"fields": []any{map[string]any{
				"path": []string{"$.type", "$.vc.type", "$.vct"},
				"filter": map[string]any{"anyOf": []any{
					map[string]any{"type": "string", "const": t},
					map[string]any{"type": "array", "contains": map[string]any{"const": t}},
				}},
			}}}
		}
		descs = append(descs, d)
	}
	return map[string]any{"id": sr.ID, "input_descriptors": descs}
}

// dcqlEntry is one credential query: a requested type in one format.
type dcqlEntry struct {
	id, typ, format string
}

// dcqlEntries enumerates the credential queries of a request, one per
// (type, accepted format), so ids are stable between request and response.
func (v *Verifier) dcqlEntries(sr *storedRequest) []dcqlEntry {
	types := sr.Types
	if len(types) == 0 {
		types = []string{""}
	}
	var out []dcqlEntry
	for ti, t := range types {
		for _, f := range v.acceptedFormats() {
			out = append(out, dcqlEntry{id: fmt.Sprintf("c%d_%s", ti, strings.NewReplacer("+", "_", "-", "_").Replace(f)), typ: t, format: f})
		}
	}
	return out
}

// dcqlQuery builds the DCQL query (OID4VP 1.0 §6): a credential query per
// type and format, and a credential set per type requiring any one of them.
func (v *Verifier) dcqlQuery(sr *storedRequest) map[string]any {
	var creds []any
	sets := map[string][]any{}
	var order []string
	for _, e := range v.dcqlEntries(sr) {
		q := map[string]any{"id": e.id, "format": e.format}
		meta := map[string]any{}
		if e.typ != "" {
			switch e.format {
			case FormatVCSDJWT, FormatDCSDJWT:
				meta["vct_values"] = []string{e.typ}
			default:
				meta["type_values"] = [][]string{{"VerifiableCredential", e.typ}}
			}
		}
		q["meta"] = meta
		creds = append(creds, q)
		if _, ok := sets[e.typ]; !ok {
			order = append(order, e.typ)
		}
		sets[e.typ] = append(sets[e.typ], []string{e.id})
	}
	var credentialSets []any
	for _, t := range order {
		credentialSets = append(credentialSets, map[string]any{"options": sets[t], "required": true})
	}
	return map[string]any{"credentials": creds, "credential_sets": credentialSets}
}

// vpFormatsSupported is the client metadata's vp_formats_supported of
// OID4VP 1.0 (Appendix B: the parameters of each credential format).
func (v *Verifier) vpFormatsSupported() map[string]any {
	out := map[string]any{}
	for _, f := range v.acceptedFormats() {
		switch f {
		case FormatLDPVC:
			out[f] = map[string]any{"proof_type_values": ldProofTypes, "cryptosuite_values": ldCryptosuites}
		case FormatJWTVCJSON, FormatVCJWT, FormatVCLDJWT:
			out[f] = map[string]any{"alg_values": supportedAlgs}
		case FormatVCSDJWT, FormatDCSDJWT:
			out[f] = map[string]any{"sd-jwt_alg_values": supportedAlgs, "kb-jwt_alg_values": supportedAlgs}
		}
	}
	return out
}

// requestObject signs the authorization request (OID4VP §5, JAR RFC 9101).
func (v *Verifier) requestObject(sr *storedRequest, dcql bool) (string, error) {
	claims := map[string]any{
		"iss":                     v.clientID,
		"aud":                     "https://self-issued.me/v2",
		"client_id":               v.clientID,
		"client_id_scheme":        "did",
		"response_type":           "vp_token",
		"response_mode":           "direct_post",
		"response_uri":            v.baseURL() + "/response/" + sr.ID,
		"nonce":                   sr.Nonce,
		"state":                   sr.ID,
		"presentation_definition": v.presentationDefinition(sr),
		"client_metadata": map[string]any{
			"client_name": "gxconf",
			"vp_formats":  v.presentationDefinition(sr)["input_descriptors"].([]any)[0].(map[string]any)["format"],
		},
		"iat": sr.CreatedAt.Unix(),
		"exp": sr.ExpiresAt.Unix(),
	}
	if dcql {
		// OID4VP 1.0: the prefixed client identifier, no client_id_scheme,
		// vp_formats_supported (its Appendix B) in the client metadata.
		delete(claims, "presentation_definition")
		delete(claims, "client_id_scheme")
		// iss stays the DID that kid names (wallets compare the two).
		claims["client_id"] = v.finalClientID()
		claims["client_metadata"] = map[string]any{"client_name": "gxconf", "vp_formats_supported": v.vpFormatsSupported()}
		claims["dcql_query"] = v.dcqlQuery(sr)
	}
	return signCompactJWS(v.key, map[string]any{"typ": "oauth-authz-req+jwt", "kid": v.keyID}, claims)
}

// Handler serves the OID4VP endpoints below [MountPath]:
//
//	GET  /oid4vp/request/{id}   signed request object (application/oauth-authz-req+jwt)
//	POST /oid4vp/response/{id}  direct_post: vp_token, presentation_submission, state
//	GET  /oid4vp/page/{id}      HTML page with QR code and link
//	GET  /oid4vp/status/{id}    JSON {state, result} for the page
func (v *Verifier) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+MountPath+"request/{id}", v.serveRequestObject)
	mux.HandleFunc("POST "+MountPath+"response/{id}", v.serveResponse)
	mux.HandleFunc("GET "+MountPath+"page/{id}", v.servePage)
	mux.HandleFunc("GET "+MountPath+"status/{id}", v.serveStatus)
	return mux
}

// maxErrorText bounds an error's text in an OAuth error answer and in the
// audit log's reason.
const maxErrorText = 512

func writeOAuthError(w http.ResponseWriter, status int, code string, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	desc := ReasonCode(err)
	// An internal error's text (a database's or a key store's) is for the
	// log, not for whoever sent the request.
	if err != nil && desc != "internal" {
		// What the wallet sent is quoted by a short prefix where the
		// error is made (clip.Quote); this bounds the rest.
		desc += ": " + clip.Text(err.Error(), maxErrorText)
	}
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// lookupRequest finds the request the path names. An unknown one is 404
// unknown_request; a failed lookup (the database) is 500 and logged, not an
// unknown request, which a wallet would report to its user as a dead link.
func (v *Verifier) lookupRequest(w http.ResponseWriter, r *http.Request) (*storedRequest, bool) {
	sr, err := v.store.getRequest(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, ErrUnknownRequest):
		writeOAuthError(w, http.StatusNotFound, "invalid_request", ErrUnknownRequest)
		return nil, false
	case err != nil:
		v.log.Error().Err(err).Str("path", clip.Text(r.URL.Path, 128)).Msg("Failed to look up presentation request")
		writeOAuthError(w, http.StatusInternalServerError, "server_error", err)
		return nil, false
	}
	return sr, true
}

func (v *Verifier) serveRequestObject(w http.ResponseWriter, r *http.Request) {
	sr, ok := v.lookupRequest(w, r)
	if !ok {
		return
	}
	if sr.State != "pending" || !v.now().Before(sr.ExpiresAt) {
		writeOAuthError(w, http.StatusGone, "invalid_request", ErrRequestExpired)
		return
	}
	jwt, err := v.requestObject(sr, r.URL.Query().Get("query") == "dcql")
	if err != nil {
		v.log.Error().Err(err).Str("request_id", sr.ID).Msg("Failed to sign request object")
		writeOAuthError(w, http.StatusInternalServerError, "server_error", err)
		return
	}
	w.Header().Set("Content-Type", "application/oauth-authz-req+jwt")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(jwt))
}

// serveResponse takes a wallet's direct_post response. What is not a
// response at all is refused (400 invalid_request) before the request is
// touched: anyone who sees the QR code could otherwise use up the request
// with a bare POST. Only a well-formed response consumes the nonce, whatever
// the outcome of its verification.
func (v *Verifier) serveResponse(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	// refuse answers what is not a response at all; logged like every
	// other refusal (the request is not touched).
	refuse := func(status int, err error) {
		v.log.Info().Str("request_id", clip.Text(r.PathValue("id"), 64)).Str("reason", ReasonCode(err)).Err(err).
			Msg("Presentation response refused before use")
		writeOAuthError(w, status, "invalid_request", err)
	}
	// OID4VP 1.0 §8.2: direct_post sends the response form-encoded.
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		refuse(http.StatusBadRequest, fmt.Errorf("%w: the response must be application/x-www-form-urlencoded", ErrMalformed))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, int64(v.cfg.MaxInputBytes)+32<<10)
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			refuse(http.StatusRequestEntityTooLarge, fmt.Errorf("%w: response body", ErrTooLarge))
			return
		}
		refuse(http.StatusBadRequest, fmt.Errorf("%w: %v", ErrMalformed, err))
		return
	}
	if err := checkResponseForm(r.PostForm); err != nil {
		refuse(http.StatusBadRequest, err)
		return
	}
	atts, err := v.processResponse(ctx, r.PathValue("id"), r.PostForm)
	if err != nil {
		status := http.StatusBadRequest
		code := "invalid_request"
		switch {
		case errors.Is(err, ErrTooLarge):
			status = http.StatusRequestEntityTooLarge
		case errors.Is(err, ErrUnknownRequest):
			status = http.StatusNotFound
		case errors.Is(err, ErrReplayed), errors.Is(err, ErrRequestExpired):
			status = http.StatusGone
		case ReasonCode(err) == "internal":
			status, code = http.StatusInternalServerError, "server_error"
		default:
			code = "access_denied"
		}
		ev := v.log.Info()
		if status == http.StatusInternalServerError {
			ev = v.log.Error()
		}
		ev.Str("reason", ReasonCode(err)).Err(err).Msg("Presentation refused")
		writeOAuthError(w, status, code, err)
		return
	}
	for _, a := range atts {
		if v.opts.onAttestation != nil {
			// Recorded is recorded: the integrator hears of it even if
			// the wallet has hung up meanwhile.
			v.opts.onAttestation(context.WithoutCancel(ctx), a)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("{}"))
}

// checkResponseForm refuses a response form with a parameter given more
// than once (RFC 6749 §4.1.2.1 and §5.2: invalid_request; which value counts
// would otherwise depend on the reader) or without a vp_token.
func checkResponseForm(form url.Values) error {
	for name, vals := range form {
		if len(vals) > 1 {
			return fmt.Errorf("%w: parameter %s repeated", ErrMalformed, clip.Quote(name))
		}
	}
	if form.Get("vp_token") == "" {
		return fmt.Errorf("%w: vp_token missing", ErrMalformed)
	}
	return nil
}

// presentationSubmission is DIF PE v2 §6 (only what gxconf checks).
type presentationSubmission struct {
	ID            string `json:"id"`
	DefinitionID  string `json:"definition_id"`
	DescriptorMap []struct {
		ID     string `json:"id"`
		Format string `json:"format"`
		Path   string `json:"path"`
	} `json:"descriptor_map"`
}

// processResponse consumes the request's nonce, verifies the presentation,
// stores attestations and audits the outcome.
func (v *Verifier) processResponse(ctx context.Context, id string, form url.Values) ([]Attestation, error) {
	vpToken := form.Get("vp_token")
	if len(vpToken) > v.cfg.MaxInputBytes {
		return nil, fmt.Errorf("%w: vp_token has %d bytes", ErrTooLarge, len(vpToken))
	}
	sr, err := v.store.getRequest(ctx, id)
	if err != nil {
		return nil, err
	}
	if st := form.Get("state"); st != "" && st != sr.ID {
		return nil, fmt.Errorf("%w: state does not match the request", ErrUnknownRequest)
	}
	now := v.now()
	if sr.State == "pending" && !now.Before(sr.ExpiresAt) {
		return nil, ErrRequestExpired
	}
	// Single use: the nonce is burnt before verification, so neither a
	// replay of a good response nor a retry after a refusal is accepted.
	if err := v.store.claimRequest(ctx, sr.ID); err != nil {
		return nil, err
	}
	// The nonce is burnt: from here on the outcome is recorded whatever
	// the wallet does. A wallet that hangs up (its request's context
	// ends) must not leave the request "processing" without a result,
	// its verification unaudited (the verification's own fetches are
	// bounded by their timeouts).
	ctx = context.WithoutCancel(ctx)
	atts, verr := v.verifyResponse(ctx, sr, vpToken, form.Get("presentation_submission"), now)
	result := ReasonCode(verr)
	decision := "verified"
	var hashes, ids []string
	for _, a := range atts {
		hashes = append(hashes, a.CredentialHash)
		ids = append(ids, a.ID)
	}
	reason := ""
	if verr != nil {
		decision, reason = "refused", result+": "+clip.Text(verr.Error(), maxErrorText)
	}
	// A verification that is not recorded and audited must not admit
	// anyone: its attestations are withdrawn again.
	withdraw := func(err error) ([]Attestation, error) {
		for _, a := range atts {
			if _, ierr := v.store.invalidate(ctx, a.ID, now, "unaudited"); ierr != nil {
				v.log.Error().Err(ierr).Str("attestation_id", a.ID).Msg("Failed to withdraw an unaudited attestation")
			}
		}
		return nil, err
	}
	if err := v.store.finishRequest(ctx, sr.ID, result, ids); err != nil {
		return withdraw(err)
	}
	if err := v.audit.append(ctx, AuditEntry{Time: now, Decision: decision, UserID: sr.UserID, RoomID: sr.RoomID,
		Level: sr.Level, CredentialHash: strings.Join(hashes, ","), Reason: reason}); err != nil {
		return withdraw(fmt.Errorf("failed to append audit entry: %w", err))
	}
	return atts, verr
}

func (v *Verifier) verifyResponse(ctx context.Context, sr *storedRequest, vpToken, submission string, now time.Time) ([]Attestation, error) {
	if vpToken == "" {
		return nil, fmt.Errorf("%w: vp_token missing", ErrMalformed)
	}
	params := PresentationParams{Nonce: sr.Nonce, Audience: v.clientID, Level: sr.Level, Homeserver: serverOf(sr.UserID)}
	if v.finalClientID() != v.clientID {
		// Both spellings name this verifier: 1.0's prefixed one (the DCQL
		// link) and the drafts' bare DID (the Presentation Exchange link).
		params.AltAudience = v.finalClientID()
		if submission == "" {
			params.Audience, params.AltAudience = v.finalClientID(), v.clientID
		}
	}
	var (
		vp  *VerifiedPresentation
		err error
	)
	if submission == "" {
		// No Presentation Exchange submission: a DCQL response.
		vp, err = v.verifyDCQLResponse(ctx, sr, vpToken, params)
	} else {
		vp, err = v.verifyPEResponse(ctx, sr, vpToken, submission, params)
	}
	if err != nil {
		return nil, err
	}
	return v.storeAttestations(ctx, sr, vp, now)
}

// verifyPEResponse handles a Presentation Exchange response (DIF PE v2).
func (v *Verifier) verifyPEResponse(ctx context.Context, sr *storedRequest, vpToken, submission string, params PresentationParams) (*VerifiedPresentation, error) {
	var ps presentationSubmission
	if err := strictjson.Unmarshal([]byte(submission), &ps); err != nil {
		return nil, fmt.Errorf("%w: presentation_submission: %v", ErrSubmissionMismatch, err)
	}
	if ps.DefinitionID != sr.ID || len(ps.DescriptorMap) == 0 {
		return nil, fmt.Errorf("%w: definition_id %s", ErrSubmissionMismatch, clip.Quote(ps.DefinitionID))
	}
	accepted := append(v.acceptedFormats(), FormatLDPVP, FormatJWTVPJSON)
	for _, d := range ps.DescriptorMap {
		if !slices.Contains(accepted, d.Format) {
			return nil, fmt.Errorf("%w: submission format %s", ErrUnsupportedFormat, clip.Quote(d.Format))
		}
	}
	return v.VerifyPresentation(ctx, []byte(vpToken), params)
}

// verifyDCQLResponse handles an OID4VP 1.0 DCQL response: vp_token is a JSON
// object mapping credential query ids to presentations (§8.1).
func (v *Verifier) verifyDCQLResponse(ctx context.Context, sr *storedRequest, vpToken string, params PresentationParams) (*VerifiedPresentation, error) {
	var resp map[string]json.RawMessage
	// Checked strictly first: with a query id twice, which answer counts
	// would depend on the decoder.
	if _, err := strictjson.DecodeObject([]byte(vpToken)); err != nil {
		return nil, fmt.Errorf("%w: vp_token: %v", ErrSubmissionMismatch, err)
	}
	if err := json.Unmarshal([]byte(vpToken), &resp); err != nil || len(resp) == 0 || len(resp) > 16 {
		return nil, fmt.Errorf("%w: presentation_submission missing and vp_token is not a DCQL response", ErrSubmissionMismatch)
	}
	entries := map[string]dcqlEntry{}
	for _, e := range v.dcqlEntries(sr) {
		entries[e.id] = e
	}
	out := &VerifiedPresentation{Format: "dcql"}
	for id, raw := range resp {
		e, ok := entries[id]
		if !ok {
			return nil, fmt.Errorf("%w: unknown credential query id %s", ErrSubmissionMismatch, clip.Quote(id))
		}
		// OID4VP 1.0 §8.1: an array of presentations (drafts: one
		// presentation). No query of this request sets "multiple", so it
		// is exactly one: more would each become an attestation, none
		// would mark the request verified with nothing verified.
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			items = []json.RawMessage{raw}
		}
		if len(items) != 1 {
			return nil, fmt.Errorf("%w: vp_token: credential query %s has %d presentations, the request asks for one",
				ErrSubmissionMismatch, clip.Quote(id), len(items))
		}
		for _, item := range items {
			token := []byte(item)
			var s string
			if json.Unmarshal(item, &s) == nil {
				token = []byte(s)
			}
			vp, err := v.VerifyPresentation(ctx, token, params)
			if err != nil {
				return nil, err
			}
			if out.Holder != "" && out.Holder != vp.Holder {
				return nil, fmt.Errorf("%w: presentations by different holders", ErrHolderBinding)
			}
			out.Holder = vp.Holder
			for _, c := range vp.Credentials {
				if c.Format != e.format || (e.typ != "" && !slices.Contains(c.Types, e.typ)) {
					return nil, fmt.Errorf("%w: query %s wants %s %s, got %s %v", ErrSubmissionMismatch, id, e.format, e.typ, c.Format, c.Types)
				}
			}
			out.Credentials = append(out.Credentials, vp.Credentials...)
		}
	}
	return out, nil
}

// storeAttestations checks that every requested type was presented and
// stores one attestation per credential with only the claims to retain.
func (v *Verifier) storeAttestations(ctx context.Context, sr *storedRequest, vp *VerifiedPresentation, now time.Time) ([]Attestation, error) {
	if len(sr.Types) > 0 {
		for _, t := range sr.Types {
			if !slices.ContainsFunc(vp.Credentials, func(c VerifiedCredential) bool { return slices.Contains(c.Types, t) }) {
				return nil, fmt.Errorf("%w: no %s credential presented", ErrNoCredential, t)
			}
		}
	}
	ttl := v.cfg.level(sr.Level).AttestationTTL
	var out []Attestation
	// All or none: an attestation stored before a later one failed would
	// admit the user although the presentation was refused.
	err := v.store.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for _, vc := range vp.Credentials {
			claims := map[string]any{}
			for _, p := range sr.ClaimPaths {
				if val, ok := claimAt(vc.Claims, p); ok {
					setClaimAt(claims, p, val)
				}
			}
			exp := now.Add(ttl)
			if !vc.ValidUntil.IsZero() && vc.ValidUntil.Before(exp) {
				exp = vc.ValidUntil
			}
			typ := primaryType(vc.Types)
			a := Attestation{
				ID: randomID(12), UserID: sr.UserID, RoomID: sr.RoomID, Federation: vc.Federation, Issuer: vc.Issuer,
				Type: typ, Format: vc.Format, HolderBound: vc.HolderBound, Level: sr.Level, Claims: claims,
				CredentialHash: vc.Hash, Status: vc.Status, VerifiedAt: now, ExpiresAt: exp,
			}
			if err := v.store.insertAttestation(ctx, &a); err != nil {
				return fmt.Errorf("failed to store attestation: %w", err)
			}
			out = append(out, a)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// primaryType picks the most specific type (the last that is not the base type).
func primaryType(types []string) string {
	for i := len(types) - 1; i >= 0; i-- {
		if types[i] != "VerifiableCredential" {
			return types[i]
		}
	}
	return "VerifiableCredential"
}

func (v *Verifier) serveStatus(w http.ResponseWriter, r *http.Request) {
	sr, ok := v.lookupRequest(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]string{"state": requestState(sr, v.now()), "result": sr.Result})
}

// requestState is pending, expired, verified or refused.
func requestState(sr *storedRequest, now time.Time) string {
	switch {
	case sr.State == "pending" && !now.Before(sr.ExpiresAt):
		return "expired"
	case sr.State == "pending", sr.Result == "processing":
		return "pending"
	case sr.Result == "":
		return "verified"
	}
	return "refused"
}
