package cluster

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a registry starts ends with its Run.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
