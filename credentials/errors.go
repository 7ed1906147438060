package credentials

import (
	"errors"

	"github.com/gxfs-conf/gxconf/credentials/did"
	"github.com/gxfs-conf/gxconf/credentials/statuslist"
)

// Refusal reasons. Every refusal returned by the verifier wraps exactly one of
// these sentinels (with detail appended), so callers can test with errors.Is
// and render a stable code with [ReasonCode].
var (
	ErrMalformed             = errors.New("malformed input")
	ErrTooLarge              = errors.New("input too large")
	ErrUnsupportedFormat     = errors.New("unsupported credential format")
	ErrAlgNotAllowed         = errors.New("signature algorithm not allowed")
	ErrBadSignature          = errors.New("signature invalid")
	ErrUnknownContext        = errors.New("JSON-LD context not pinned")
	ErrWrongNonce            = errors.New("nonce or challenge mismatch")
	ErrWrongAudience         = errors.New("audience or domain mismatch")
	ErrReplayed              = errors.New("presentation response already used")
	ErrUnknownRequest        = errors.New("unknown presentation request")
	ErrRequestExpired        = errors.New("presentation request expired")
	ErrExpired               = errors.New("credential expired")
	ErrNotYetValid           = errors.New("credential not yet valid")
	ErrRevoked               = errors.New("credential revoked or suspended")
	ErrStatusUnavailable     = errors.New("status list unavailable or stale")
	ErrStatusListInvalid     = errors.New("status list invalid")
	ErrUntrustedIssuer       = errors.New("issuer not trusted")
	ErrIssuerNotTrustedType  = errors.New("issuer not trusted for this credential type")
	ErrHomeserverNotCovered  = errors.New("issuer's federation does not cover the user's homeserver")
	ErrFormatNotAccepted     = errors.New("credential format not accepted by federation")
	ErrDIDMethodNotAccepted  = errors.New("DID method not accepted by federation")
	ErrHolderBinding         = errors.New("holder binding failed")
	ErrMissingKeyBinding     = errors.New("key binding JWT missing")
	ErrBadDisclosure         = errors.New("selective disclosure invalid")
	ErrDIDResolution         = errors.New("DID resolution failed")
	ErrPrivateAddress        = did.ErrPrivateAddress
	ErrNoCredential          = errors.New("presentation contains no acceptable credential")
	ErrSubmissionMismatch    = errors.New("presentation submission does not match the request")
	ErrInvalidPolicy         = errors.New("invalid access policy")
	ErrPolicyChangeForbidden = errors.New("access policy change not permitted")
	ErrAuditTampered         = errors.New("audit chain broken")
)

var reasonCodes = []struct {
	err  error
	code string
}{
	{ErrTooLarge, "too_large"},
	{statuslist.ErrTooLarge, "status_list_too_large"},
	{ErrUnsupportedFormat, "unsupported_format"},
	{ErrAlgNotAllowed, "alg_not_allowed"},
	{ErrBadSignature, "bad_signature"},
	{ErrUnknownContext, "unknown_context"},
	{ErrWrongNonce, "wrong_nonce"},
	{ErrWrongAudience, "wrong_audience"},
	{ErrReplayed, "replayed"},
	{ErrUnknownRequest, "unknown_request"},
	{ErrRequestExpired, "request_expired"},
	{ErrExpired, "expired"},
	{ErrNotYetValid, "not_yet_valid"},
	{ErrRevoked, "revoked"},
	{ErrStatusUnavailable, "status_unavailable"},
	{ErrStatusListInvalid, "status_list_invalid"},
	{ErrUntrustedIssuer, "untrusted_issuer"},
	{ErrIssuerNotTrustedType, "issuer_not_trusted_for_type"},
	{ErrHomeserverNotCovered, "homeserver_not_in_federation"},
	{ErrFormatNotAccepted, "format_not_accepted"},
	{ErrDIDMethodNotAccepted, "did_method_not_accepted"},
	{ErrHolderBinding, "holder_binding"},
	{ErrMissingKeyBinding, "missing_key_binding"},
	{ErrBadDisclosure, "bad_disclosure"},
	{ErrPrivateAddress, "private_address"},
	{ErrDIDResolution, "did_resolution"},
	{did.ErrResolution, "did_resolution"},
	{ErrNoCredential, "no_credential"},
	{ErrSubmissionMismatch, "submission_mismatch"},
	{ErrInvalidPolicy, "invalid_policy"},
	{ErrPolicyChangeForbidden, "policy_change_forbidden"},
	{ErrAuditTampered, "audit_tampered"},
	{ErrMalformed, "malformed"},
}

// ReasonCode maps an error from this package to a short stable code such as
// "wrong_nonce" or "revoked", suitable for HTTP error bodies and audit rows.
// Unknown errors map to "internal".
func ReasonCode(err error) string {
	if err == nil {
		return ""
	}
	for _, rc := range reasonCodes {
		if errors.Is(err, rc.err) {
			return rc.code
		}
	}
	return "internal"
}
