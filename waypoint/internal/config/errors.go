package config

import (
	"errors"
	"fmt"
	"strconv"
)

// FieldError is a problem in a resource: Field is the path of the
// offending field, written with the proto field names
// ("services[2].http_routes[0].rules[1].matches[0].path"). Compile returns
// one when it rejects a whole resource.
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

// Warning is a problem Compile contained instead of rejecting the
// resource: the part that holds it (a rule, a route, a service, a policy)
// was left out or replaced by one that fails closed, and the rest of the
// resource applies. Field and Err are as in FieldError.
type Warning struct {
	Field  string
	Err    error
	Effect Effect
}

func (w *Warning) Error() string {
	return w.Field + ": " + w.Err.Error() + " (" + w.Effect.String() + ")"
}

func (w *Warning) Unwrap() error { return w.Err }

// Effect is what Compile did with the part of a resource that holds a
// problem.
type Effect int

const (
	// RuleFailsClosed: the rule is replaced by one without filters or
	// backends, so the requests it selects are answered with HTTP 500
	// rather than forwarded unfiltered or left to a rule written for other
	// requests. It keeps the rule's valid matches; a match that is not
	// valid selects nothing and is left out. When none is valid, nothing
	// says which requests the rule was for, and the replacement matches
	// every request to the route's port that no other rule matches.
	RuleFailsClosed Effect = iota + 1
	// RouteFailsClosed: the route itself is malformed (no name, a bad
	// port); it is replaced by one rule that answers HTTP 500 to every
	// request to its port (every port, if the port is not readable) that
	// no other route's rule matches.
	RouteFailsClosed
	// ServiceDropped: the service is malformed (a bad VIP or port, a VIP
	// or key an earlier service has); it is left out, and the waypoint
	// refuses tunnels to those of its addresses no other service has.
	ServiceDropped
	// PolicyDeniesAll: the policy does not compile; it is replaced by a
	// DENY policy of the same name that matches every request and
	// connection it applies to.
	PolicyDeniesAll
)

func (e Effect) String() string {
	switch e {
	case RuleFailsClosed:
		return "rule replaced by one that answers its requests with HTTP 500"
	case RouteFailsClosed:
		return "route replaced by one that answers the requests no other route matches with HTTP 500"
	case ServiceDropped:
		return "service dropped: the waypoint refuses its traffic"
	case PolicyDeniesAll:
		return "policy replaced by one that denies every request it applies to"
	}
	return "Effect(" + strconv.Itoa(int(e)) + ")"
}

// warnings collects the problems Compile contains.
type warnings []*Warning

// add records err, a *FieldError, with what was done about it.
func (ws *warnings) add(err error, e Effect) {
	w := &Warning{Err: err, Effect: e}
	var fe *FieldError
	if errors.As(err, &fe) {
		w.Field, w.Err = fe.Field, fe.Err
	}
	*ws = append(*ws, w)
}
