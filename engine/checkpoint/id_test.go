package checkpoint

import (
	"errors"
	"strings"
	"testing"

	"github.com/batfleet/batfleet/engine"
)

var (
	idKiB      = strings.Repeat("x", engine.MaxComponentBytes)
	idKiBPlus1 = strings.Repeat("x", engine.MaxComponentBytes+1)
)

// checkErr fails t unless err matches want (nil means success).
func checkErr(t testing.TB, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("error = %v, want one matching %v", err, want)
	}
}

// checkpointIDCases are the CK-01 to CK-03 cases (also fuzz seeds).
var checkpointIDCases = []struct {
	name    string
	id      string
	wantErr error
}{
	// CK-01
	{name: "CK01 empty", id: "", wantErr: ErrIDEmpty},
	{name: "CK01 1025 bytes", id: idKiBPlus1, wantErr: ErrIDTooLong},
	{name: "CK01 1024 bytes", id: idKiB},
	// CK-02
	{name: "CK02 dotdot path", id: "../../etc/passwd", wantErr: engine.ErrPathTraversal},
	{name: "CK02 slash", id: "with/slash", wantErr: engine.ErrPathTraversal},
	{name: "CK02 nul", id: "with\x00nul", wantErr: engine.ErrNulByte},
	{name: "CK02 control", id: "with\x01ctrl", wantErr: engine.ErrControlChar},
	{name: "CK02 pipe", id: "scope|fact", wantErr: engine.ErrForbiddenSeparator},
	{name: "CK02 equals", id: "scope=fact", wantErr: engine.ErrForbiddenSeparator},
	{name: "CK02 del", id: "x\x7f", wantErr: engine.ErrControlChar},
	{name: "CK02 invalid utf8", id: "x\xc3", wantErr: engine.ErrInvalidUTF8},
	{name: "CK02 long before chars", id: "/" + idKiB, wantErr: ErrIDTooLong},
	// CK-03
	{name: "CK03 dash", id: "witness-cursor"},
	{name: "CK03 dot", id: "a.b"},
	{name: "CK03 space", id: "a b"},
	{name: "CK03 non-ascii", id: "名前"},
	{name: "CK03 colon at", id: "x:y@z"},
	{name: "CK03 backslash", id: `a\b`},
	{name: "CK03 star", id: "*"},
	{name: "CK03 gt", id: ">"},
	{name: "CK03 1024 bytes", id: strings.Repeat("é", engine.MaxComponentBytes/2)},
}

func runCheckpointIDCases(t *testing.T, prefix string) {
	t.Helper()
	for _, tc := range checkpointIDCases {
		if !strings.HasPrefix(tc.name, prefix) {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateID(tc.id)
			checkErr(t, err, tc.wantErr)
			if tc.wantErr != nil {
				checkErr(t, err, ErrInvalidID)
			}
		})
	}
}

// Catalogue: CK-01.
func TestCK01_CheckpointIDLength(t *testing.T) {
	runCheckpointIDCases(t, "CK01")
	t.Run("length error fields", func(t *testing.T) {
		err := ValidateID(idKiBPlus1)
		var le *engine.LengthError
		if !errors.As(err, &le) || *le != (engine.LengthError{Limit: ErrIDTooLong, Len: 1025, Max: 1024}) {
			t.Fatalf("error %v, want engine.LengthError{1025, 1024}", err)
		}
	})
}

// Catalogue: CK-02.
func TestCK02_CheckpointIDCharacters(t *testing.T) {
	runCheckpointIDCases(t, "CK02")
	t.Run("component error fields", func(t *testing.T) {
		err := ValidateID("with\x00nul")
		var ce *engine.ComponentError
		if !errors.As(err, &ce) || *ce != (engine.ComponentError{Field: "checkpoint id", Offset: 4, Rule: engine.ErrNulByte}) {
			t.Fatalf("error %v, want engine.ComponentError{checkpoint id, 4, NUL}", err)
		}
	})
}

// Catalogue: CK-03.
func TestCK03_CheckpointIDValid(t *testing.T) {
	runCheckpointIDCases(t, "CK03")
}
