// Package test holds gxconf's integration and end-to-end tests. They run the
// real peers (Dendrite, and the gxconf binary itself) on loopback and are
// skipped only under -short.
package test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/gxfs-conf/gxconf/test/harness"
)

// gxconfBin is the binary under test, built once by TestMain.
var gxconfBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("integration tests skipped under -short")
		os.Exit(0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	dir, err := os.MkdirTemp("", "gxconf-test-bin-")
	if err == nil {
		gxconfBin, err = harness.BuildGxconf(ctx, dir, raceEnabled)
	}
	if err == nil {
		_, err = harness.DendriteBin(ctx)
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test setup failed:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
