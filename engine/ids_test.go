package engine

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func TestUUIDv7Layout(t *testing.T) {
	const ms = int64(0x0123456789ab)
	var rnd [16]byte
	for i := range rnd {
		rnd[i] = 0xff
	}
	u := UUIDv7(ms, rnd)
	if got := int64(binary.BigEndian.Uint64(u[0:8]) >> 16); got != ms {
		t.Fatalf("time field %#x, want %#x", got, ms)
	}
	if u[6]>>4 != 7 || u[8]>>6 != 2 {
		t.Fatalf("version %d, variant %b; want 7 and 10", u[6]>>4, u[8]>>6)
	}
	if u[6]&0x0f != 0x0f || u[7] != 0xff || u[8]&0x3f != 0x3f || u[15] != 0xff {
		t.Fatalf("random bits not kept: % x", u)
	}
	var zero [16]byte
	if z := UUIDv7(ms, zero); z[6] != 0x70 || z[8] != 0x80 {
		t.Fatalf("zero randomness: % x", z)
	}
	if a, b := NewID128(), NewID128(); a == b {
		t.Fatalf("two random ids are equal: %s", a)
	}
}

func TestValidateJournalName(t *testing.T) {
	for _, ok := range []string{"main", "a", "A_b-9", strings.Repeat("x", 64)} {
		if err := ValidateJournalName(ok); err != nil {
			t.Errorf("ValidateJournalName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("x", 65), "a.b", "a b", "a*", "a>", "é", "a/b"} {
		if err := ValidateJournalName(bad); !errors.Is(err, ErrInvalidJournalName) {
			t.Errorf("ValidateJournalName(%q) = %v, want ErrInvalidJournalName", bad, err)
		}
	}
}
