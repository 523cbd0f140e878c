package engine

import "fmt"

// MaxJournalNameBytes is the longest journal name.
const MaxJournalNameBytes = 64

// ValidateJournalName reports whether name is a legal journal name: 1 to
// 64 bytes of [A-Za-z0-9_-]. Journal names are NATS subject tokens
// (batfleet.<journal>.pull) and KV key prefixes, so nothing else is
// allowed. A failure matches ErrInvalidJournalName.
func ValidateJournalName(name string) error {
	if name == "" || len(name) > MaxJournalNameBytes {
		return fmt.Errorf("%w %q: must be 1 to %d characters of [A-Za-z0-9_-]", ErrInvalidJournalName, name, MaxJournalNameBytes)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("%w %q: byte %d (%q) is not one of [A-Za-z0-9_-]", ErrInvalidJournalName, name, i, c)
		}
	}
	return nil
}
