package caclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc/credentials"
)

// TokenFile is gRPC per-RPC credentials that send the bearer token held in a
// file ("authorization: Bearer <token>"). The file is read on every call, so
// a rotated projected service-account token is picked up without a restart.
// It requires transport security: a token must never travel in clear text.
type TokenFile string

var _ credentials.PerRPCCredentials = TokenFile("")

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (f TokenFile) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	tok, err := f.Token()
	if err != nil {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (TokenFile) RequireTransportSecurity() bool { return true }

// Token reads the token, without surrounding whitespace.
func (f TokenFile) Token() (string, error) {
	if f == "" {
		return "", errors.New("caclient: no token file configured")
	}
	b, err := os.ReadFile(string(f))
	if err != nil {
		return "", fmt.Errorf("caclient: read token: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "", fmt.Errorf("caclient: token file %s is empty", string(f))
	}
	return string(b), nil
}
