package engine

import (
	"unicode/utf8"
)

// MaxComponentBytes is the byte limit of an entity, a scope and a
// checkpoint id; a string of exactly this length is legal.
const MaxComponentBytes = 1024

// Byte classes for the single scan of ValidateComponent. Every byte that
// does not need attention is compByteOK, so the common case is one table load
// and one compare per byte.
const (
	compByteOK    uint8 = iota
	compByteNUL         // 0x00
	compByteCtrl        // 0x01-0x1F and 0x7F
	compByteHigh        // 0x80-0xFF: the string needs a UTF-8 check
	compByteSlash       // '/'
	compByteDot         // '.': ".." is a path traversal
	compByteSep         // '|' or '='
)

var componentByteClass = func() (t [256]uint8) {
	t[0] = compByteNUL
	for c := 0x01; c < 0x20; c++ {
		t[c] = compByteCtrl
	}
	t[0x7F] = compByteCtrl
	for c := 0x80; c <= 0xFF; c++ {
		t[c] = compByteHigh
	}
	t['/'] = compByteSlash
	t['.'] = compByteDot
	t['|'] = compByteSep
	t['='] = compByteSep
	return t
}()

// ValidateComponent applies the character rules of coordinates to one
// string component, in order, first failure wins:
//
//  1. a byte scan from the left: 0x00 is ErrNulByte, any other byte below
//     0x20 or 0x7F is ErrControlChar (the first offending byte decides);
//  2. invalid UTF-8 is ErrInvalidUTF8;
//  3. "/" or ".." anywhere is ErrPathTraversal;
//  4. "|" or "=" anywhere is ErrForbiddenSeparator.
//
// A failure is a *ComponentError naming field, with Offset the index of the
// first offending byte (for rules 3 and 4, the earliest occurrence of any of
// the forbidden sequences). Emptiness and length are the caller's business.
// It does not allocate when s is valid.
func ValidateComponent(field, s string) error {
	traversal, separator := -1, -1
	high := false
	for i := 0; i < len(s); i++ {
		switch componentByteClass[s[i]] {
		case compByteOK:
		case compByteNUL:
			return &ComponentError{Field: field, Offset: i, Rule: ErrNulByte}
		case compByteCtrl:
			return &ComponentError{Field: field, Offset: i, Rule: ErrControlChar}
		case compByteHigh:
			high = true
		case compByteSlash:
			if traversal < 0 {
				traversal = i
			}
		case compByteDot:
			if traversal < 0 && i+1 < len(s) && s[i+1] == '.' {
				traversal = i
			}
		case compByteSep:
			if separator < 0 {
				separator = i
			}
		}
	}
	if high && !utf8.ValidString(s) {
		return &ComponentError{Field: field, Offset: firstInvalidUTF8(s), Rule: ErrInvalidUTF8}
	}
	if traversal >= 0 {
		return &ComponentError{Field: field, Offset: traversal, Rule: ErrPathTraversal}
	}
	if separator >= 0 {
		return &ComponentError{Field: field, Offset: separator, Rule: ErrForbiddenSeparator}
	}
	return nil
}

// firstInvalidUTF8 returns the offset of the first byte of s that does not
// start a valid UTF-8 sequence, or -1 if s is valid.
func firstInvalidUTF8(s string) int {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return -1
}

// validateSized checks a required component: empty is errEmpty, more than
// MaxComponentBytes bytes is a *LengthError matching errLong, then the
// character rules of ValidateComponent under the name field.
func validateSized(field, s string, errEmpty, errLong error) error {
	if s == "" {
		return errEmpty
	}
	if len(s) > MaxComponentBytes {
		return &LengthError{Limit: errLong, Len: len(s), Max: MaxComponentBytes}
	}
	return ValidateComponent(field, s)
}
