package identity

import (
	"errors"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestWorkloadID(t *testing.T) {
	tests := []struct {
		name   string
		td     spiffeid.TrustDomain
		ns, sa string
		want   string // empty: expect ErrInvalidID
	}{
		{"ok", testTD, "default", "bookinfo-productpage", "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"},
		{"dots and underscores", testTD, "a.b", "x_y", "spiffe://cluster.local/ns/a.b/sa/x_y"},
		{"zero trust domain", spiffeid.TrustDomain{}, "default", "sa", ""},
		{"empty namespace", testTD, "", "sa", ""},
		{"empty service account", testTD, "default", "", ""},
		{"slash in namespace", testTD, "a/b", "sa", ""},
		{"dot segment", testTD, ".", "sa", ""},
		{"dot-dot segment", testTD, "default", "..", ""},
		{"bad character", testTD, "default", "s a", ""},
		{"percent", testTD, "default", "%2F", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := WorkloadID(tt.td, tt.ns, tt.sa)
			if tt.want == "" {
				if !errors.Is(err, ErrInvalidID) {
					t.Fatalf("WorkloadID() = %v, %v; want ErrInvalidID", id, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("WorkloadID() error: %v", err)
			}
			if id.String() != tt.want {
				t.Fatalf("WorkloadID() = %q, want %q", id, tt.want)
			}
			ns, sa, err := ParseWorkloadID(id)
			if err != nil || ns != tt.ns || sa != tt.sa {
				t.Fatalf("ParseWorkloadID() = %q, %q, %v; want round trip", ns, sa, err)
			}
		})
	}
}

func TestParseWorkloadID(t *testing.T) {
	tests := []struct {
		id     string
		ns, sa string // both empty: expect ErrInvalidID
	}{
		{"spiffe://cluster.local/ns/default/sa/web", "default", "web"},
		{"spiffe://td/ns/sa/sa/ns", "sa", "ns"},
		{"spiffe://cluster.local", "", ""},
		{"spiffe://cluster.local/ns/default", "", ""},
		{"spiffe://cluster.local/ns/default/sa", "", ""},
		{"spiffe://cluster.local/ns/default/sa/web/extra", "", ""},
		{"spiffe://cluster.local/namespace/default/sa/web", "", ""},
		{"spiffe://cluster.local/ns/default/serviceaccount/web", "", ""},
		{"spiffe://cluster.local/x/ns/default/sa/web", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			ns, sa, err := ParseWorkloadID(spiffeid.RequireFromString(tt.id))
			if tt.ns == "" {
				if !errors.Is(err, ErrInvalidID) {
					t.Fatalf("ParseWorkloadID() = %q, %q, %v; want ErrInvalidID", ns, sa, err)
				}
				return
			}
			if err != nil || ns != tt.ns || sa != tt.sa {
				t.Fatalf("ParseWorkloadID() = %q, %q, %v; want %q, %q", ns, sa, err, tt.ns, tt.sa)
			}
		})
	}
	if _, _, err := ParseWorkloadID(spiffeid.ID{}); !errors.Is(err, ErrInvalidID) {
		t.Errorf("ParseWorkloadID(zero) error = %v, want ErrInvalidID", err)
	}
}
