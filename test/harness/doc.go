// Package harness runs the real peers gxconf's integration tests and demo use:
// a Dendrite v0.13.8 homeserver on loopback with SQLite and gxconf's
// appservice registration, and Matrix users on it.
//
// Dendrite's binaries (dendrite, generate-keys, generate-config) are taken
// from $DENDRITE_BIN_DIR or the repository's .cache/bin, and installed
// there with `go install …@v0.13.8` when missing (`make tools` does this
// ahead of the tests).
package harness
