//go:build !unix

package upstream

import "time"

// processCPUTime is not available here; benchmarks skip the cpu-ns/op metric.
func processCPUTime() time.Duration { return 0 }
