//go:build !unix

package l4

import "time"

// processCPUTime is not available here; benchmarks skip the cpu-ns/op metric.
func processCPUTime() time.Duration { return 0 }
