package config

import (
	"fmt"
	"strings"
)

// FieldError is one invalid field, named by its path in the document
// (for example "backendHttpSettingsCollection[0].port").
type FieldError struct {
	Field       string
	Description string
}

func (e FieldError) Error() string { return e.Field + ": " + e.Description }

// ValidationError lists every invalid field of a gateway document.
type ValidationError struct {
	Errors []FieldError
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invalid gateway: %d error(s)", len(e.Errors))
	for _, fe := range e.Errors {
		b.WriteString("\n  ")
		b.WriteString(fe.Error())
	}
	return b.String()
}
