package integration

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestImportArrows keeps the layout's arrows (which package may import
// which), so that an arrow cannot quietly come back: each production
// package's dependencies (`go list -deps`, tests excluded) may hold only
// the module packages it lists, and only the writer's side links
// nats-server.
func TestImportArrows(t *testing.T) {
	const mod = "github.com/batfleet/batfleet/"
	internals := []string{"internal/fsx", "internal/msgpackutil"}
	rules := []struct {
		pkg   string
		allow []string // module packages it may depend on (transitively)
	}{
		{"engine", internals},
		{"engine/journal", append([]string{"engine"}, internals...)},
		{"engine/checkpoint", append([]string{"engine"}, internals...)},
		{"engine/delivery", append([]string{"engine", "engine/checkpoint"}, internals...)},
		{"kvckpt", append([]string{"engine", "engine/checkpoint"}, internals...)},
		{"fleet/internal/wire", append([]string{"engine"}, internals...)},
		{"fleet", append([]string{"engine", "engine/journal", "engine/checkpoint", "engine/delivery", "kvckpt", "fleet/internal/wire"}, internals...)},
	}
	for _, r := range rules {
		t.Run(r.pkg, func(t *testing.T) {
			for _, dep := range goListDeps(t, mod+r.pkg) {
				rel, ours := strings.CutPrefix(dep, mod)
				if ours && rel != r.pkg && !slices.Contains(r.allow, rel) {
					t.Errorf("%s depends on %s; its arrows allow only %v", r.pkg, rel, r.allow)
				}
				if strings.HasPrefix(dep, "github.com/nats-io/nats-server") {
					t.Errorf("%s links nats-server (%s); only the writer's embedded default may", r.pkg, dep)
				}
			}
		})
	}
	t.Run("only the writer links nats-server", func(t *testing.T) {
		for _, pkg := range []string{"cmd/worker", "internal/workerapp"} {
			for _, dep := range goListDeps(t, mod+pkg) {
				if strings.HasPrefix(dep, "github.com/nats-io/nats-server") {
					t.Fatalf("%s links %s", pkg, dep)
				}
			}
		}
	})
}

func goListDeps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr)
	}
	return strings.Fields(string(out))
}
