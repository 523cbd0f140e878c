package kvckpt

import (
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/batfleet/batfleet/engine/checkpoint"
)

// encodeID maps a checkpoint id to the id part of a KV key.
func encodeID(id string) string {
	if isVerbatim(id) {
		return id
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(id))
}

// decodeID reverses encodeID. It accepts exactly what encodeID writes for
// a valid checkpoint id: other spellings of the same bytes (a verbatim id
// in encoded form, base64 with non-zero padding bits) or an invalid id
// would let one checkpoint appear under two keys, or list an id that Load
// refuses.
func decodeID(s string) (string, error) {
	if rest, ok := strings.CutPrefix(s, "="); ok {
		b, err := base64.RawURLEncoding.DecodeString(rest)
		if err != nil {
			return "", fmt.Errorf("kvckpt: key part %q: %w", s, err)
		}
		id := string(b)
		if encodeID(id) != s {
			return "", fmt.Errorf("kvckpt: key part %q is not the encoding of a checkpoint id", s)
		}
		if err := checkpoint.ValidateID(id); err != nil {
			return "", fmt.Errorf("kvckpt: key part %q: %w", s, err)
		}
		return id, nil
	}
	if s == "" || !isVerbatim(s) {
		return "", fmt.Errorf("kvckpt: key part %q is not an encoded checkpoint id", s)
	}
	if err := checkpoint.ValidateID(s); err != nil {
		return "", fmt.Errorf("kvckpt: key part %q: %w", s, err) // too long
	}
	return s, nil
}

func isVerbatim(id string) bool {
	if id == "" {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// KeyToken returns id as one KV key token, as the store writes checkpoint
// ids into keys: verbatim when it is made of [A-Za-z0-9_-] only, else "="
// and its base64url encoding. Other keyed records of a fleet (consumer
// group members) use it too.
func KeyToken(id string) string { return encodeID(id) }

// ParseKeyToken reverses KeyToken for a valid checkpoint id.
func ParseKeyToken(s string) (string, error) { return decodeID(s) }
