package cluster

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a registry starts ends with its Run. go-redis' own dial
// prober (started after repeated dial failures) ends within a second of the
// client's Close, on its own schedule.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}
