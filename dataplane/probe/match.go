package probe

import (
	"fmt"
	"strconv"
	"strings"
)

// Status code bounds accepted in match ranges.
const (
	MinStatusCode = 100
	MaxStatusCode = 599
)

// defaultStatus is the range used when Match.Status is empty (Azure's default).
var defaultStatus = [][2]int{{200, 399}}

// Match is what a probe response must satisfy to be healthy.
type Match struct {
	Status [][2]int // inclusive ranges; empty means 200-399
	Body   string   // substring required in the first 64 KiB of the body; "" = any
}

// StatusOK reports whether code lies in one of the ranges (200-399 when
// there are none). It does not allocate.
func (m Match) StatusOK(code int) bool {
	rs := m.Status
	if len(rs) == 0 {
		rs = defaultStatus
	}
	for _, r := range rs {
		if code >= r[0] && code <= r[1] {
			return true
		}
	}
	return false
}

// String formats the accepted status codes as configured: "200-399", or
// "200-299,401" for several ranges (a range of one code is written as the
// code).
func (m Match) String() string {
	rs := m.Status
	if len(rs) == 0 {
		return "200-399"
	}
	b := make([]byte, 0, 8*len(rs))
	for i, r := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(r[0]), 10)
		if r[1] != r[0] {
			b = append(b, '-')
			b = strconv.AppendInt(b, int64(r[1]), 10)
		}
	}
	return string(b)
}

// ParseStatusRanges parses match.statusCodes entries, each "200" or
// "200-399" (inclusive, within 100-599), into Match.Status. No entries give
// nil, which Match reads as 200-399. Do it once per configuration, not per
// probe.
func ParseStatusRanges(codes []string) ([][2]int, error) {
	if len(codes) == 0 {
		return nil, nil
	}
	out := make([][2]int, 0, len(codes))
	for _, c := range codes {
		a, b, isRange := strings.Cut(c, "-")
		lo, err1 := strconv.Atoi(strings.TrimSpace(a))
		hi := lo
		var err2 error
		if isRange {
			hi, err2 = strconv.Atoi(strings.TrimSpace(b))
		}
		switch {
		case err1 != nil || err2 != nil:
			return nil, fmt.Errorf("%q is not a status code or range like \"200-399\"", c)
		case lo < MinStatusCode || hi > MaxStatusCode || lo > hi:
			return nil, fmt.Errorf("%q is out of range %d-%d", c, MinStatusCode, MaxStatusCode)
		}
		out = append(out, [2]int{lo, hi})
	}
	return out, nil
}
