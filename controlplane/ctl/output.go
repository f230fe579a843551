package ctl

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"golang.org/x/term"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Values of -o.
const (
	outputTable = "table"
	outputJSON  = "json"
	outputYAML  = "yaml"
)

// newTable writes aligned columns, kubectl style. Flush it when done.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
}

// row writes one table row; cells are made safe first.
func row(w io.Writer, cells ...string) {
	for i, c := range cells {
		cells[i] = cell(c)
	}
	rawRow(w, cells...)
}

// rawRow writes one table row of cells already made safe (and perhaps painted).
func rawRow(w io.Writer, cells ...string) {
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

// cell makes a value fit in one table cell: control characters (tabs, newlines, terminal escapes,
// which a worker's error message might hold) become spaces; an empty value becomes "-".
func cell(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if s == "" {
		return "-"
	}
	return s
}

// writeProtoJSON writes m as indented protojson.
func writeProtoJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return failf("encode json: %v", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// age is a duration the way kubectl shows ages: "45s", "12m", "5h", "3d".
func age(d time.Duration) string {
	if d < 0 {
		d = 0 // clock skew between hosts
	}
	switch {
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// ANSI colors of health values. Every code has the same length, so that a painted column stays
// aligned in a tabwriter table (the header is painted with the default color for the same reason).
const (
	ansiGreen   = "\x1b[32m"
	ansiRed     = "\x1b[31m"
	ansiYellow  = "\x1b[33m"
	ansiDefault = "\x1b[39m"
	ansiReset   = "\x1b[0m"
)

// paint wraps s in an ANSI color when color is on.
func paint(color bool, code, s string) string {
	if !color {
		return s
	}
	return code + s + ansiReset
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}
