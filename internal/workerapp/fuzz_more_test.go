package workerapp

import (
	"strconv"
	"strings"
	"testing"

	"github.com/batfleet/batfleet/engine/delivery"
)

// FuzzParseExecAnswer: an --exec child's answer line is bytes from another
// process. ParseExecAnswer never panics; it accepts exactly the three
// words and "fail [SEQ] [TEXT]", and a named SEQ is the decimal it read.
func FuzzParseExecAnswer(f *testing.F) {
	for _, s := range []string{"continue", " stop\n", "rollback", "fail", "fail 17", "fail 17 bad entry", "fail x y",
		"fail 18446744073709551616", "fail\t\t3\tz", "continue now", "", "\x00", "fail 0099"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		action, failure, err := ParseExecAnswer(line)
		word, rest := cutWord(strings.TrimSpace(line))
		if err != nil {
			if word == "fail" && !strings.Contains(err.Error(), "SEQ") {
				t.Fatalf("%q refused: %v", line, err)
			}
			return
		}
		switch action {
		case delivery.Continue, delivery.Stop, delivery.StopWithRollback:
			if rest != "" || failure != (ExecFailure{}) {
				t.Fatalf("%q accepted as %v with %+v", line, action, failure)
			}
		case delivery.Failed:
			if word != "fail" {
				t.Fatalf("%q accepted as a failure", line)
			}
			if failure.Named {
				arg, _ := cutWord(rest)
				if n, err := strconv.ParseUint(arg, 10, 64); err != nil || n != failure.Seq {
					t.Fatalf("%q named seq %d", line, failure.Seq)
				}
			}
		default:
			t.Fatalf("%q gave action %v", line, action)
		}
	})
}
