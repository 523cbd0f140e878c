package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine/checkpoint"
	"github.com/batfleet/batfleet/kvckpt"
)

// ckptRev is one revision of a checkpoint key, read back from the
// bucket's stream (which keeps every revision: createCheckpointBucket).
type ckptRev struct {
	rev     uint64
	id      string // the checkpoint id
	deleted bool   // a delete or purge
	rec     checkpoint.Record
	err     error // the value does not decode
	at      time.Time
}

// readHistory reads every revision of the checkpoint bucket, in order.
func readHistory(ctx context.Context, js jetstream.JetStream) ([]ckptRev, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var st jetstream.Stream
	var err error
	for range 100 {
		if st, err = js.Stream(ctx, "KV_"+ckptBucket); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	if info.State.FirstSeq > 1 {
		return nil, fmt.Errorf("the bucket's stream starts at revision %d: history lost", info.State.FirstSeq)
	}
	prefix := "$KV." + ckptBucket + "." + journalName + "."
	var out []ckptRev
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		var m *jetstream.RawStreamMsg
		for attempt := 0; ; attempt++ {
			m, err = st.GetMsg(ctx, seq)
			if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) || attempt == 20 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, fmt.Errorf("revision %d missing from the bucket's stream", seq)
		}
		if err != nil {
			return nil, fmt.Errorf("revision %d: %w", seq, err)
		}
		token, ok := strings.CutPrefix(m.Subject, prefix)
		if !ok {
			continue // another journal's key (none in a run)
		}
		id, err := kvckpt.ParseKeyToken(token)
		if err != nil {
			return nil, fmt.Errorf("revision %d: key %q: %w", seq, m.Subject, err)
		}
		r := ckptRev{rev: seq, id: id, at: m.Time}
		if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			r.deleted = true
		} else {
			r.rec, r.err = checkpoint.Decode(m.Data)
		}
		out = append(out, r)
	}
	return out, nil
}

// ord orders checkpoint positions: not started comes before every seq.
func ord(pos uint64, started bool) uint64 {
	if !started {
		return 0
	}
	return pos + 1
}
