// Package atrest encrypts database column values at rest: AES-256-GCM under
// named keys read from files (a Kubernetes Secret mounted as a directory),
// each value tagged with the id of the key that sealed it, so that keys can
// be rotated: new values are sealed with the primary key, older ones stay
// readable while their key is present, and Rotate re-encrypts rows to the
// primary key one row at a time (an interrupted rotation leaves every row
// readable).
//
// It imports no other gxconf package; consumers declare the small
// Seal/Open interface they need.
package atrest
