package identity

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// WorkloadID returns spiffe://<td>/ns/<namespace>/sa/<serviceAccount>.
func WorkloadID(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, fmt.Errorf("%w: empty trust domain", ErrInvalidID)
	}
	if err := spiffeid.ValidatePathSegment(namespace); err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: namespace %q: %w", ErrInvalidID, namespace, err)
	}
	if err := spiffeid.ValidatePathSegment(serviceAccount); err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: service account %q: %w", ErrInvalidID, serviceAccount, err)
	}
	id, err := spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %w", ErrInvalidID, err)
	}
	return id, nil
}

// ParseWorkloadID returns the namespace and service account named by a
// workload ID. It fails unless the path is exactly /ns/<ns>/sa/<sa>.
func ParseWorkloadID(id spiffeid.ID) (namespace, serviceAccount string, err error) {
	if id.IsZero() {
		return "", "", fmt.Errorf("%w: empty ID", ErrInvalidID)
	}
	// A valid spiffeid.ID has no empty, "." or ".." segments, so only the
	// shape needs checking here.
	seg := strings.Split(id.Path(), "/")
	if len(seg) != 5 || seg[0] != "" || seg[1] != "ns" || seg[3] != "sa" {
		return "", "", fmt.Errorf("%w: %q: path %q is not /ns/<namespace>/sa/<service account>", ErrInvalidID, id, id.Path())
	}
	return seg[2], seg[4], nil
}
