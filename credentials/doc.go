// Package credentials is gxconf's SSI verifier: DID resolution, verification of
// verifiable credentials and presentations (ldp_vc, VC-JWT, SD-JWT VC), status
// lists, per-federation trust registries, the OID4VP verifier endpoints,
// attestations, the Rego room-access policy and the hash-chained audit log.
//
// It must not import any other gxconf package.
package credentials
