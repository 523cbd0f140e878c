package fleet

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/fleet/internal/wire"
)

// writerStats asks the service for its statistics as `nats micro stats`
// does, over the wire, and returns the endpoint's micro figures and data.
func writerStats(t testing.TB, e *fleetEnv, endpoint string) (micro.EndpointStats, endpointData) {
	t.Helper()
	subj, err := micro.ControlSubject(micro.StatsVerb, wire.ServiceName, "")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := e.cnc.Request(subj, nil, 10*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subj, err)
	}
	var st micro.Stats
	if err := json.Unmarshal(msg.Data, &st); err != nil {
		t.Fatalf("stats reply: %v\n%s", err, msg.Data)
	}
	for _, ep := range st.Endpoints {
		if ep.Name != endpoint {
			continue
		}
		var d endpointData
		if err := json.Unmarshal(ep.Data, &d); err != nil {
			t.Fatalf("endpoint %s data %q: %v", endpoint, ep.Data, err)
		}
		return *ep, d
	}
	t.Fatalf("stats reply has no endpoint %q:\n%s", endpoint, msg.Data)
	return micro.EndpointStats{}, endpointData{}
}

// TestWriterServiceStatsCountErrors: requests refused at arrival (a body
// that does not decode, a wait_ms over the maximum) are answered through
// micro, so the service's own num_errors counts them; a refusal decided
// later (a reserved kind, by the journal) is counted in the endpoint's data,
// which counts every answer.
func TestWriterServiceStatsCountErrors(t *testing.T) {
	e := newEnv(t, envOpts{writer: WriterConfig{MaxWait: time.Second}})
	for range 3 {
		msg, err := e.cnc.Request(e.subj.Append, []byte("not msgpack"), 10*time.Second)
		if err != nil {
			t.Fatalf("append request: %v", err)
		}
		if code := msg.Header.Get(micro.ErrorCodeHeader); code != "400" {
			t.Fatalf("bad append body: code %q, want 400", code)
		}
	}
	reserved := wire.EncodeAppendRequest([]engine.Event{{Coordinate: engine.MustCoordinate("e", "s"), Kind: 0x0001}})
	msg, err := e.cnc.Request(e.subj.Append, reserved, 10*time.Second)
	if err != nil {
		t.Fatalf("append request: %v", err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "400" {
		t.Fatalf("reserved kind: code %q, want 400", code)
	}
	if _, err := e.c.Append(testCtx(t), []engine.Event{event(t, "order:1", []byte("ok"))}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	long := wire.EncodePullRequest(wire.PullRequest{Region: engine.RegionAll(), Max: 1, WaitMs: 5000})
	msg, err = e.cnc.Request(e.subj.Pull, long, 10*time.Second)
	if err != nil {
		t.Fatalf("pull request: %v", err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "400" {
		t.Fatalf("wait_ms over the maximum: code %q, want 400", code)
	}

	ms, data := writerStats(t, e, "append")
	if ms.NumRequests != 5 || ms.NumErrors != 3 || ms.LastError == "" {
		t.Errorf("append: micro num_requests %d, num_errors %d, last_error %q; want 5, 3 (the bodies refused at arrival) and the last one's reason",
			ms.NumRequests, ms.NumErrors, ms.LastError)
	}
	if data.NumRequests != 5 || data.NumErrors != 4 {
		t.Errorf("append: data num_requests %d, num_errors %d; want 5 and 4 (every refusal)", data.NumRequests, data.NumErrors)
	}
	if want := "reserved"; !strings.Contains(data.LastError, want) {
		t.Errorf("append: data last_error %q, want the reserved kind's", data.LastError)
	}
	ms, data = writerStats(t, e, "pull")
	if ms.NumErrors != 1 || data.NumErrors != 1 || !strings.Contains(ms.LastError, "wait_ms") {
		t.Errorf("pull: micro num_errors %d (last %q), data num_errors %d; want 1 naming wait_ms", ms.NumErrors, ms.LastError, data.NumErrors)
	}
}

// TestWriterServiceStatsTimeToAnswer: the endpoint data times a request
// from its arrival to its answer, past the micro handler's return: a pull
// held for its wait_ms counts that wait (as an append counts its fsync).
func TestWriterServiceStatsTimeToAnswer(t *testing.T) {
	e := newEnv(t, envOpts{})
	const hold = 300 * time.Millisecond
	held := wire.EncodePullRequest(wire.PullRequest{Region: engine.RegionEntity("nothing-matches"), Max: 1, WaitMs: uint32(hold.Milliseconds())})
	msg, err := e.cnc.Request(e.subj.Pull, held, 10*time.Second)
	if err != nil {
		t.Fatalf("held pull: %v", err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		t.Fatalf("held pull refused: %s %s", code, msg.Header.Get(micro.ErrorHeader))
	}
	// The reply is published before the figures are recorded: poll.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, data := writerStats(t, e, "pull")
		if data.NumRequests == 1 {
			if data.ProcessingTime < hold || data.AverageProcessingTime < hold {
				t.Errorf("held pull: data processing_time %v, average %v; want at least the %v hold", data.ProcessingTime, data.AverageProcessingTime, hold)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pull data num_requests %d, want 1", data.NumRequests)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
