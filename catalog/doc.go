// Package catalog is gxconf's service catalogue and booking system: it issues
// the Gaia-X 2511 gx:ServiceOffering credentials of the configured tiers ×
// confidentiality levels with their vk:ConferenceTier companions, serves the
// provider's did:web document and the catalogue, keeps bookings (state
// machine, entitlement credentials with a status list), decides at token
// time whether a room's booking admits another participant, records usage,
// and serves the admin API (OpenID Connect with MFA, Rego ABAC, audit log)
// and its page. Admin API requests without any credentials are refused and
// only counted (gxconf_catalog_admin_anonymous_refusals_total), not audited;
// refusals of credentials or logins that established no identity are
// audited with a fixed reason within a budget (60, then 1/s), the rest
// counted (gxconf_catalog_admin_unaudited_refusals_total);
// cmd/gxconf mounts /catalog/ behind the focus's per-IP rate limit. A page
// login's pending state (PKCE verifier, nonce) is kept in a short-lived
// AES-GCM-sealed cookie bound to the state parameter, not on the server.
//
// Replicas share the database: open sessions and admitted participants are
// stored there, and every check a write depends on runs in a transaction
// holding a PostgreSQL advisory lock of the organisation, room, booking or
// status list it checks (store.locked); the in-process mutex only spares a
// node's own transactions from waiting for each other.
//
// It depends on credentials (audit log, status lists, levels) and cluster
// (where participants are) only; focus, appservice and meetings reach it
// through small interfaces they declare, wired in cmd/gxconf.
package catalog
