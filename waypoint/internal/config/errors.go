package config

import (
	"errors"
	"fmt"
	"strconv"
)

// FieldError is why Compile rejected a resource: Field is the path of the
// offending field in the resource, written with the proto field names
// ("services[2].http_routes[0].rules[1].matches[0].path").
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

func (e *FieldError) Unwrap() error { return e.Err }

// field is the path of a field being compiled; its methods name a child.
type field string

func (f field) child(name string) field {
	if f == "" {
		return field(name)
	}
	return f + "." + field(name)
}

func (f field) index(name string, i int) field {
	return f.child(name + "[" + strconv.Itoa(i) + "]")
}

// errorf returns a *FieldError for f.
func (f field) errorf(format string, args ...any) error {
	return &FieldError{Field: string(f), Err: fmt.Errorf(format, args...)}
}

// wrap returns err as a *FieldError for f.
func (f field) wrap(err error) error {
	return &FieldError{Field: string(f), Err: err}
}

// errMissing marks an absent element of a repeated message field, which a
// decoded resource never has but a hand-built one may.
var errMissing = errors.New("missing")
