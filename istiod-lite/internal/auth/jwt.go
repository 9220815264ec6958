package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// maxTokenSize bounds what is decoded; service-account tokens are ~1 KiB.
const maxTokenSize = 16 << 10

// jwtExpiry checks that token has a JWT's shape (three base64url parts,
// header and payload JSON objects) and returns its "exp" claim, zero when
// it has none (legacy Secret-based service-account tokens). The signature
// is not verified: the TokenReview does that; the expiry only bounds how
// long an answer is cached.
func jwtExpiry(token string) (time.Time, error) {
	if len(token) > maxTokenSize {
		return time.Time{}, fmt.Errorf("token is not a JWT: longer than %d bytes", maxTokenSize)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return time.Time{}, errors.New("token is not a JWT: want three dot-separated parts")
	}
	if _, err := decodeObject(parts[0]); err != nil {
		return time.Time{}, fmt.Errorf("token is not a JWT: header: %w", err)
	}
	payload, err := decodeObject(parts[1])
	if err != nil {
		return time.Time{}, fmt.Errorf("token is not a JWT: payload: %w", err)
	}
	raw, ok := payload["exp"]
	if !ok || bytes.Equal(raw, []byte("null")) {
		return time.Time{}, nil
	}
	var exp float64
	if err := json.Unmarshal(raw, &exp); err != nil || math.IsNaN(exp) || exp <= 0 || exp > 1e12 {
		return time.Time{}, fmt.Errorf("token is not a JWT: exp claim %.40q is not a time", raw)
	}
	sec, frac := math.Modf(exp)
	return time.Unix(int64(sec), int64(frac*1e9)), nil
}

func decodeObject(part string) (map[string]json.RawMessage, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(part, "="))
	if err != nil {
		return nil, fmt.Errorf("not base64url: %w", err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return nil, errors.New("not a JSON object")
	}
	return m, nil
}
