package workerapp

import (
	"strings"
	"testing"
	"time"

	"github.com/batfleet/batfleet/engine/delivery"
)

func TestParseRestart(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		want    delivery.RestartPolicy
		wantMsg string
	}{
		{name: "once", spec: "once", want: delivery.RestartOnce{}},
		{name: "empty is once", spec: "", want: delivery.RestartOnce{}},
		{name: "bounded", spec: "bounded:3/1m", want: delivery.RestartBounded{MaxRestarts: 3, Within: time.Minute}},
		{name: "bounded zero", spec: "bounded:0/30s", want: delivery.RestartBounded{MaxRestarts: 0, Within: 30 * time.Second}},
		{name: "bounded compound duration", spec: "bounded:10/1h30m", want: delivery.RestartBounded{MaxRestarts: 10, Within: 90 * time.Minute}},

		{name: "unknown policy", spec: "always", wantMsg: "want once or bounded:N/DURATION"},
		{name: "bounded without count", spec: "bounded", wantMsg: "want once or bounded:N/DURATION"},
		{name: "bounded without duration", spec: "bounded:3", wantMsg: "want once or bounded:N/DURATION"},
		{name: "count not a number", spec: "bounded:x/1m", wantMsg: "N must be a whole number"},
		{name: "negative count", spec: "bounded:-1/1m", wantMsg: "N must be a whole number"},
		{name: "bad duration", spec: "bounded:3/soon", wantMsg: "DURATION must be like"},
		{name: "negative duration", spec: "bounded:3/-1m", wantMsg: "DURATION must be like"},
		{name: "duration without unit", spec: "bounded:3/60", wantMsg: "DURATION must be like"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRestart(tt.spec)
			if tt.wantMsg != "" {
				if err == nil {
					t.Fatalf("ParseRestart(%q) = %#v, want an error", tt.spec, got)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), "--restart") {
					t.Errorf("ParseRestart(%q) = %q, want it to name --restart and contain %q", tt.spec, err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRestart(%q): %v", tt.spec, err)
			}
			if got != tt.want {
				t.Errorf("ParseRestart(%q) = %#v, want %#v", tt.spec, got, tt.want)
			}
		})
	}
}
