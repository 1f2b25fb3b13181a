package meta_test

import (
	"testing"

	"go.uber.org/goleak"
)

// No goroutine may outlive a test: not the Store's (leadership watchers, lease
// keep-alives, the etcd client) nor the embedded server's.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
