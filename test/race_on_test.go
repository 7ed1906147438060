//go:build race

package test

// raceEnabled builds the gxconf binary under test with the race detector too.
const raceEnabled = true
