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
