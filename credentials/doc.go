// Package credentials is gxconf's SSI verifier: DID resolution, verification of
// verifiable credentials and presentations (ldp_vc, VC-JWT, SD-JWT VC), status
// lists, per-federation trust registries, the OID4VP verifier endpoints,
// attestations, the Rego room-access policy and the hash-chained audit log.
//
// It must not import any other gxconf package. Sub-packages: did (did:key,
// did:jwk, did:web resolution with SSRF guards), statuslist (bitstring
// decoding, W3C and XFSC bit orders) and internal/strictjson, the one decoder
// for untrusted JSON (duplicate member names refused, one nesting limit).
//
// What the verifier reads must be what the issuer signed: JSON-LD documents
// are accepted only in the compacted form of their pinned contexts
// (ldpform.go), a JWT's exp/nbf and a proof's expires always bound validity,
// and no issuer's DID is resolved before the issuer is found in a trust
// registry (or vouched for by a trust anchor in the same presentation).
//
// Wiring, in short:
//
//	v, err := credentials.New(ctx, cfg, db, log,
//		credentials.WithRoomPolicy(lookupAccessState),        // de.gxconf.access of a room
//		credentials.WithOnAttestation(onVerified),            // user presented a credential
//		credentials.WithOnInvalidated(onRevokedOrExpired))    // kick from SFU, bot explains
//	mux.Handle(credentials.MountPath, v.Handler())        // on the focus listener: /oid4vp/…
//	go v.Run(ctx)                                          // re-check loop
//	d, err := v.Authorize(ctx, credentials.AccessRequest{…}) // before every token; audited
//	req, err := v.CreateRequest(ctx, user, room, "call")    // when d.Missing is not empty: DM req.PageURL
//	n, err := credentials.VerifyAuditChain(ctx, db)         // `gxconf audit verify`
//
// The Verifier owns its tables through the dbutil upgrade table
// "credentials_version"; claims are AES-256-GCM encrypted with at_rest_key.
// Concurrency: the Verifier holds no per-request state in memory except the
// DID and status-list caches (mutex-guarded); nonces are consumed in the
// database, so several processes may share one database.
package credentials
