package writerapp

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/batfleet/batfleet/engine"
)

func TestParseEventLine(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    engine.Event
		wantErr error  // matched with errors.Is, when set
		wantMsg string // a substring of the error (the field it names)
	}{
		{
			name: "text payload",
			line: `{"entity":"order:1","scope":"shop","kind":4097,"payload":"hello"}`,
			want: engine.Event{Coordinate: engine.MustCoordinate("order:1", "shop"), Kind: 0x1001, Payload: []byte("hello")},
		},
		{
			name: "base64 payload",
			line: `{"entity":"order:1","scope":"shop","payload_base64":"/wAB"}`,
			want: engine.Event{Coordinate: engine.MustCoordinate("order:1", "shop"), Kind: engine.KindData, Payload: []byte{0xff, 0x00, 0x01}},
		},
		{
			name: "kind as a hex string",
			line: `{"entity":"e","scope":"s","kind":"0x2001"}`,
			want: engine.Event{Coordinate: engine.MustCoordinate("e", "s"), Kind: 0x2001},
		},
		{
			name: "kind as a decimal string",
			line: `{"entity":"e","scope":"s","kind":"8193"}`,
			want: engine.Event{Coordinate: engine.MustCoordinate("e", "s"), Kind: 0x2001},
		},
		{
			name: "default kind and no payload",
			line: `{"entity":"e","scope":"s"}`,
			want: engine.Event{Coordinate: engine.MustCoordinate("e", "s"), Kind: engine.KindData},
		},
		{
			name: "empty text payload",
			line: `{"entity":"e","scope":"s","payload":""}`,
			want: engine.Event{Coordinate: engine.MustCoordinate("e", "s"), Kind: engine.KindData, Payload: []byte{}},
		},
		{
			name: "unicode payload",
			line: `{"scope":"s","entity":"e","payload":"h\u00e9\n"}`,
			want: engine.Event{Coordinate: engine.MustCoordinate("e", "s"), Kind: engine.KindData, Payload: []byte("hé\n")},
		},
		{
			name: "object payload stored as its JSON text",
			line: `{"entity":"e","scope":"s","payload":{"total": 12.5, "items":["a"]}}`,
			want: engine.Event{Coordinate: engine.MustCoordinate("e", "s"), Kind: engine.KindData, Payload: []byte(`{"total": 12.5, "items":["a"]}`)},
		},
		{
			name: "array payload stored as its JSON text",
			line: `{"entity":"e","scope":"s","payload":[1,2,{"x":null}]}`,
			want: engine.Event{Coordinate: engine.MustCoordinate("e", "s"), Kind: engine.KindData, Payload: []byte(`[1,2,{"x":null}]`)},
		},
		{
			name: "null payload is no payload",
			line: `{"entity":"e","scope":"s","payload":null}`,
			want: engine.Event{Coordinate: engine.MustCoordinate("e", "s"), Kind: engine.KindData},
		},

		{name: "scope star", line: `{"entity":"e","scope":"*"}`, wantMsg: `scope: "*" is refused: no region can select it`},
		{name: "number payload", line: `{"entity":"e","scope":"s","payload":42}`, wantMsg: "payload: 42 is neither a string nor a JSON object or array"},
		{name: "bool payload", line: `{"entity":"e","scope":"s","payload":true}`, wantMsg: "payload: true is neither"},
		{name: "object payload and base64", line: `{"entity":"e","scope":"s","payload":{},"payload_base64":"eA=="}`, wantMsg: "payload and payload_base64 are exclusive"},
		{name: "reserved system kind", line: `{"entity":"e","scope":"s","kind":1}`, wantMsg: "kind: 0x0001 is reserved"},
		{name: "reserved effect kind", line: `{"entity":"e","scope":"s","kind":"0xD001"}`, wantMsg: "is reserved"},
		{name: "kind out of range", line: `{"entity":"e","scope":"s","kind":65536}`, wantMsg: `kind: "65536" is not a 16-bit kind`},
		{name: "negative kind", line: `{"entity":"e","scope":"s","kind":-1}`, wantMsg: "kind: "},
		{name: "kind not a number", line: `{"entity":"e","scope":"s","kind":"data"}`, wantMsg: `kind: "data"`},
		{name: "kind a fraction", line: `{"entity":"e","scope":"s","kind":4097.5}`, wantMsg: "kind: "},
		{name: "unknown field", line: `{"entity":"e","scope":"s","payloads":"x"}`, wantMsg: `unknown field "payloads"`},
		{name: "both payloads", line: `{"entity":"e","scope":"s","payload":"x","payload_base64":"eA=="}`, wantMsg: "payload and payload_base64 are exclusive"},
		{name: "bad base64", line: `{"entity":"e","scope":"s","payload_base64":"%%%"}`, wantMsg: "payload_base64: "},
		{name: "missing entity", line: `{"scope":"s"}`, wantErr: engine.ErrEmptyEntity, wantMsg: "entity/scope: "},
		{name: "missing scope", line: `{"entity":"e"}`, wantErr: engine.ErrEmptyScope, wantMsg: "entity/scope: "},
		{name: "entity with a separator", line: `{"entity":"a|b","scope":"s"}`, wantErr: engine.ErrForbiddenSeparator, wantMsg: "entity"},
		{name: "entity with a path", line: `{"entity":"../x","scope":"s"}`, wantErr: engine.ErrPathTraversal, wantMsg: "entity"},
		{name: "entity not a string", line: `{"entity":7,"scope":"s"}`, wantMsg: "entity"},
		{name: "not JSON", line: `entity=e scope=s`, wantMsg: "not a JSON event object"},
		{name: "an array", line: `[{"entity":"e","scope":"s"}]`, wantMsg: "not a JSON event object"},
		{name: "trailing data", line: `{"entity":"e","scope":"s"} {"entity":"f","scope":"s"}`, wantMsg: "after the event object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEventLine([]byte(tt.line))
			if tt.wantErr != nil || tt.wantMsg != "" {
				if err == nil {
					t.Fatalf("ParseEventLine(%s) = %+v, want an error", tt.line, got)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("ParseEventLine(%s) = %v, want %v", tt.line, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("ParseEventLine(%s) = %q, want it to contain %q", tt.line, err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseEventLine(%s): %v", tt.line, err)
			}
			if got.Coordinate != tt.want.Coordinate || got.Kind != tt.want.Kind || !bytes.Equal(got.Payload, tt.want.Payload) ||
				(got.Payload == nil) != (tt.want.Payload == nil) || !got.Key.IsZero() {
				t.Errorf("ParseEventLine(%s) = %+v, want %+v", tt.line, got, tt.want)
			}
		})
	}
}

// FuzzParseEventLine: any line either fails or gives an event an append
// accepts (a valid coordinate, a kind that is not reserved).
func FuzzParseEventLine(f *testing.F) {
	for _, s := range []string{
		`{"entity":"order:1","scope":"shop","kind":4097,"payload":"hello"}`,
		`{"entity":"order:1","scope":"shop","payload_base64":"/wAB"}`,
		`{"entity":"e","scope":"s","kind":"0x2001"}`,
		`{"entity":"e","scope":"s","kind":1}`,
		`{"entity":"a|b","scope":"s"}`,
		`{"entity":"e","scope":"s"} {}`,
		`{"entity":"e","scope":"s","payload":{"a":[1]}}`,
		`{"entity":"e","scope":"*"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		ev, err := ParseEventLine(line)
		if err != nil {
			return
		}
		if ev.Kind.IsReserved() {
			t.Errorf("accepted reserved kind %v from %q", ev.Kind, line)
		}
		if _, err := engine.NewCoordinate(ev.Coordinate.Entity(), ev.Coordinate.Scope()); err != nil {
			t.Errorf("accepted invalid coordinate from %q: %v", line, err)
		}
		if ev.Coordinate.Scope() == "*" {
			t.Errorf("accepted scope \"*\" from %q", line)
		}
	})
}
