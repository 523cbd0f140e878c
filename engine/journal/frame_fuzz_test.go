package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/batfleet/batfleet/engine"
)

// errWantFrameError stands for "a *frameError" in the wantErr column of
// the frame tables: decodeFrame returns a fresh *frameError, so it is
// matched with errors.As, not errors.Is.
var errWantFrameError = errors.New("test: want a *frameError")

// checkFrameErr fails t unless err is what want describes: nil, a frame
// sentinel (errors.Is), or errWantFrameError (errors.As to *frameError).
func checkFrameErr(t testing.TB, err, want error) {
	t.Helper()
	if want == errWantFrameError {
		var fe *frameError
		if !errors.As(err, &fe) {
			t.Fatalf("error = %v, want a *frameError", err)
		}
		return
	}
	switch {
	case want == nil && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("error = %v, want one matching %v", err, want)
	}
}

// frameTestEvent encodes one event frame.
func frameTestEvent(flags uint8, kind engine.Kind, clock uint32, seq uint64, wallMs int64, id byte, entity, scope string, payload []byte) []byte {
	rec := eventRecord{flags: flags, kind: kind, clock: clock, seq: seq, wallMs: wallMs, payload: payload}
	for i := range rec.id {
		rec.id[i] = id + byte(i)
	}
	b, _ := appendEventFrame(nil, &rec, entity, scope)
	return b
}

// resealFrame returns a copy of the frame at the start of data whose
// CRC-32C is recomputed over the body its length field names, so a
// damaged body is judged on its structure rather than rejected by the
// checksum. ok is false when data is too short for that body.
func resealFrame(data []byte) (sealed []byte, ok bool) {
	if len(data) < frameHeaderLen {
		return nil, false
	}
	n := binary.LittleEndian.Uint32(data)
	if uint64(n) > uint64(len(data)-frameHeaderLen) {
		return nil, false
	}
	out := bytes.Clone(data)
	end := frameHeaderLen + int(n)
	binary.LittleEndian.PutUint32(out[4:], crc32.Checksum(out[frameHeaderLen:end], castagnoli))
	return out, true
}

// frameWithByte returns a copy of b with b[i] replaced by v.
func frameWithByte(b []byte, i int, v byte) []byte {
	out := bytes.Clone(b)
	out[i] = v
	return out
}

// frameWithXor returns a copy of b with b[i] xor mask.
func frameWithXor(b []byte, i int, mask byte) []byte {
	out := bytes.Clone(b)
	out[i] ^= mask
	return out
}

// frameCase is one decodeFrame case; the valid ones double as fuzz seeds.
type frameCase struct {
	name    string
	input   []byte
	wantErr error
	// For valid frames: the expected decode.
	wantTyp   byte
	wantSize  int
	wantSeq   uint64 // events
	wantA     uint64 // markers
	wantB     uint64
	wantFlags uint8
}

func frameCases(tb testing.TB) []frameCase {
	tb.Helper()
	maxEntity := strings.Repeat("e", engine.MaxComponentBytes)
	maxScope := strings.Repeat("s", engine.MaxComponentBytes)
	single := frameTestEvent(0, engine.KindData, 7, 42, 1_700_000_000_000, 1, "entity:frame", "scope:frame", []byte("hello"))
	keyed := frameTestEvent(eventFlagKeyed, 0x1abc, 0, 1, 5, 0x10, "entity:keyed", "s", []byte{0, 1, 2, 0xff})
	fenced := frameTestEvent(eventFlagFenced, engine.KindData, 3, 9, 6, 0x20, "e", "s", []byte("fenced"))
	fencedKeyed := frameTestEvent(eventFlagFenced|eventFlagKeyed, 0xf001, 1<<32-1, 1<<63, -1, 0x30, "a:b:c", "x y", []byte("both"))
	empty := frameTestEvent(0, engine.KindData, 0, 0, 0, 0, "e", "s", nil)
	maxLen := frameTestEvent(0, engine.KindData, 1, 2, 3, 0x40, maxEntity, maxScope, bytes.Repeat([]byte{0xa5}, 300))
	lifecycle := frameTestEvent(0, engine.KindOpenCompleted, 0, 0, 1, 0x50, "batfleet:store", "batfleet:lifecycle", []byte{0x80})
	begin := appendMarkerFrame(nil, frameBatchBegin, 5, 3)
	commit := appendMarkerFrame(nil, frameBatchCommit, 5, 3)
	fence := appendMarkerFrame(nil, frameFenceCommit, 7, 9)
	bigMarker := appendMarkerFrame(nil, frameBatchBegin, 1<<64-8, 8)
	group := make([]byte, groupFrameLen)
	putGroupFrame(group, 5, 9, 1234)
	groupBackwards := make([]byte, groupFrameLen)
	putGroupFrame(groupBackwards, 9, 5, 10)

	// Structurally broken frames with a correct checksum.
	badVersion, _ := resealFrame(frameWithByte(single, frameHeaderLen+1, 2))
	versionZero, _ := resealFrame(frameWithByte(begin, frameHeaderLen+1, 0))
	unknownType, _ := resealFrame(frameWithByte(single, frameHeaderLen, 9))
	typeZero, _ := resealFrame(frameWithByte(commit, frameHeaderLen, 0))
	markerAsEvent, _ := resealFrame(frameWithByte(begin, frameHeaderLen, frameEvent))
	eventAsMarker, _ := resealFrame(frameWithByte(single, frameHeaderLen, frameBatchCommit))
	entityTooLong, _ := resealFrame(frameWithByte(single, frameHeaderLen+6, 0xff))
	payloadShort, _ := resealFrame(frameWithByte(single, frameHeaderLen+46, 4))
	tinyEvent := func() []byte {
		b := make([]byte, frameHeaderLen+10)
		binary.LittleEndian.PutUint32(b, 10)
		b[frameHeaderLen], b[frameHeaderLen+1] = frameEvent, frameVersion
		s, _ := resealFrame(b)
		return s
	}()
	header := func(n uint32) []byte {
		b := make([]byte, frameHeaderLen+4)
		binary.LittleEndian.PutUint32(b, n)
		return b
	}

	return []frameCase{
		{name: "event single", input: single, wantTyp: frameEvent, wantSize: len(single), wantSeq: 42},
		{name: "group", input: group, wantTyp: frameGroup, wantSize: groupFrameLen, wantA: 5, wantB: 9},
		{name: "group with end before first", input: groupBackwards, wantErr: errWantFrameError},
		{name: "event keyed", input: keyed, wantTyp: frameEvent, wantSize: len(keyed), wantSeq: 1, wantFlags: eventFlagKeyed},
		{name: "event fenced", input: fenced, wantTyp: frameEvent, wantSize: len(fenced), wantSeq: 9, wantFlags: eventFlagFenced},
		{name: "event fenced and keyed", input: fencedKeyed, wantTyp: frameEvent, wantSize: len(fencedKeyed), wantSeq: 1 << 63, wantFlags: eventFlagFenced | eventFlagKeyed},
		{name: "event empty payload", input: empty, wantTyp: frameEvent, wantSize: len(empty)},
		{name: "event max-length entity and scope", input: maxLen, wantTyp: frameEvent, wantSize: len(maxLen), wantSeq: 2},
		{name: "event lifecycle", input: lifecycle, wantTyp: frameEvent, wantSize: len(lifecycle)},
		{name: "batch begin", input: begin, wantTyp: frameBatchBegin, wantSize: len(begin), wantA: 5, wantB: 3},
		{name: "batch commit", input: commit, wantTyp: frameBatchCommit, wantSize: len(commit), wantA: 5, wantB: 3},
		{name: "fence commit", input: fence, wantTyp: frameFenceCommit, wantSize: len(fence), wantA: 7, wantB: 9},
		{name: "marker with large values", input: bigMarker, wantTyp: frameBatchBegin, wantSize: len(bigMarker), wantA: 1<<64 - 8, wantB: 8},
		{name: "frame followed by more data", input: append(bytes.Clone(single), begin...), wantTyp: frameEvent, wantSize: len(single), wantSeq: 42},
		{name: "frame followed by zeros", input: append(bytes.Clone(commit), make([]byte, 64)...), wantTyp: frameBatchCommit, wantSize: len(commit), wantA: 5, wantB: 3},

		{name: "short: empty input", input: nil, wantErr: errFrameShort},
		{name: "short: partial header", input: single[:frameHeaderLen-1], wantErr: errFrameShort},
		{name: "short: header only", input: single[:frameHeaderLen], wantErr: errFrameShort},
		{name: "short: event cut in its payload", input: single[:len(single)-1], wantErr: errFrameShort},
		{name: "short: event cut in its fixed fields", input: single[:frameHeaderLen+20], wantErr: errFrameShort},
		{name: "short: marker cut", input: begin[:len(begin)-3], wantErr: errFrameShort},
		{name: "short: length past the data", input: header(1 << 20), wantErr: errFrameShort},

		{name: "crc: flipped crc byte", input: frameWithXor(single, 5, 0x01), wantErr: errFrameCRC},
		{name: "crc: flipped payload byte", input: frameWithXor(single, len(single)-1, 0x80), wantErr: errFrameCRC},
		{name: "crc: flipped seq byte", input: frameWithXor(keyed, frameHeaderLen+14, 0x04), wantErr: errFrameCRC},
		{name: "crc: flipped marker value", input: frameWithXor(fence, frameHeaderLen+12, 0x01), wantErr: errFrameCRC},
		{name: "crc: flipped type byte", input: frameWithXor(commit, frameHeaderLen, 0x03), wantErr: errFrameCRC},
		{name: "crc: zero checksum", input: func() []byte { b := bytes.Clone(begin); clear(b[4:8]); return b }(), wantErr: errFrameCRC},

		{name: "invalid: zero length", input: make([]byte, 4096), wantErr: errWantFrameError},
		{name: "invalid: zero length header only", input: make([]byte, frameHeaderLen), wantErr: errWantFrameError},
		{name: "invalid: length 1", input: header(1), wantErr: errWantFrameError},
		{name: "invalid: length over 2^28", input: header(maxFrameBodyLen + 1), wantErr: errWantFrameError},
		{name: "invalid: length 0xffffffff", input: header(0xffffffff), wantErr: errWantFrameError},
		{name: "invalid: frame version 2", input: badVersion, wantErr: errWantFrameError},
		{name: "invalid: frame version 0", input: versionZero, wantErr: errWantFrameError},
		{name: "invalid: unknown type 9", input: unknownType, wantErr: errWantFrameError},
		{name: "invalid: type 0", input: typeZero, wantErr: errWantFrameError},
		{name: "invalid: marker body as event", input: markerAsEvent, wantErr: errWantFrameError},
		{name: "invalid: event body as marker", input: eventAsMarker, wantErr: errWantFrameError},
		{name: "invalid: event body too short", input: tinyEvent, wantErr: errWantFrameError},
		{name: "invalid: entity length past the body", input: entityTooLong, wantErr: errWantFrameError},
		{name: "invalid: payload length too small", input: payloadShort, wantErr: errWantFrameError},
	}
}

// reencodeFrame encodes a decoded frame again with the writer's encoders.
func reencodeFrame(t testing.TB, fr *decodedFrame) []byte {
	t.Helper()
	switch fr.typ {
	case frameEvent:
		out, payloadOff := appendEventFrame(nil, &fr.rec, string(fr.rec.entity), string(fr.rec.scope))
		if payloadOff != fr.payloadOff {
			t.Fatalf("payload offset: decoded %d, encoder puts it at %d", fr.payloadOff, payloadOff)
		}
		return out
	case frameBatchBegin, frameBatchCommit, frameFenceCommit:
		return appendMarkerFrame(nil, fr.typ, fr.a, fr.b)
	case frameGroup:
		out := make([]byte, groupFrameLen)
		putGroupFrame(out, fr.a, fr.b, fr.c)
		return out
	}
	t.Fatalf("decodeFrame accepted unknown frame type %d", fr.typ)
	return nil
}

// checkFrameDecode is the decoder property shared by the table test and
// the fuzz target: decodeFrame never panics; an error is one of the three
// classes; a success covers at most the input, survives re-encoding byte
// for byte and decodes the same from exactly its own bytes.
func checkFrameDecode(t testing.TB, data []byte) (decodedFrame, error) {
	t.Helper()
	var fr decodedFrame
	err := decodeFrame(data, &fr)
	if err != nil {
		var fe *frameError
		if !errors.Is(err, errFrameShort) && !errors.Is(err, errFrameCRC) && !errors.As(err, &fe) {
			t.Fatalf("decodeFrame error %T %v is none of errFrameShort, errFrameCRC, *frameError", err, err)
		}
		return fr, err
	}
	if fr.size < frameHeaderLen+2 || fr.size > len(data) {
		t.Fatalf("decoded size %d, input %d bytes", fr.size, len(data))
	}
	if got := reencodeFrame(t, &fr); !bytes.Equal(got, data[:fr.size]) {
		t.Fatalf("re-encoded frame differs from its input\n input % x\n again % x", data[:fr.size], got)
	}
	if fr.typ == frameEvent {
		p := data[fr.payloadOff : fr.payloadOff+len(fr.rec.payload)]
		if !bytes.Equal(p, fr.rec.payload) || fr.payloadOff+len(fr.rec.payload) != fr.size {
			t.Fatalf("payload offset %d does not locate the payload at the end of the frame", fr.payloadOff)
		}
	}
	var exact decodedFrame
	if err := decodeFrame(data[:fr.size:fr.size], &exact); err != nil {
		t.Fatalf("frame decodes from a longer buffer but not from its own %d bytes: %v", fr.size, err)
	}
	if err := decodeFrame(data[:fr.size-1], &exact); !errors.Is(err, errFrameShort) {
		t.Fatalf("frame less its last byte: error %v, want errFrameShort", err)
	}
	return fr, nil
}

func TestFrameRoundTrip(t *testing.T) {
	for _, tc := range frameCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			fr, err := checkFrameDecode(t, tc.input)
			checkFrameErr(t, err, tc.wantErr)
			if tc.wantErr != nil {
				return
			}
			if fr.typ != tc.wantTyp || fr.size != tc.wantSize {
				t.Fatalf("type %d size %d, want type %d size %d", fr.typ, fr.size, tc.wantTyp, tc.wantSize)
			}
			switch fr.typ {
			case frameEvent:
				if fr.rec.seq != tc.wantSeq || fr.rec.flags != tc.wantFlags {
					t.Fatalf("seq %d flags %#x, want seq %d flags %#x", fr.rec.seq, fr.rec.flags, tc.wantSeq, tc.wantFlags)
				}
			default:
				if fr.a != tc.wantA || fr.b != tc.wantB {
					t.Fatalf("values (%d, %d), want (%d, %d)", fr.a, fr.b, tc.wantA, tc.wantB)
				}
			}
		})
	}

	t.Run("event fields", func(t *testing.T) {
		payload := []byte("payload bytes")
		rec := eventRecord{flags: eventFlagKeyed | eventFlagFenced, kind: 0x2abc, clock: 77, seq: 1234567, wallMs: 1_700_000_000_123, payload: payload}
		copy(rec.id[:], "0123456789abcdef")
		data, payloadOff := appendEventFrame([]byte("prefix"), &rec, "entity:fields", "scope:fields")
		data = data[len("prefix"):]
		payloadOff -= len("prefix")
		fr, err := checkFrameDecode(t, data)
		if err != nil {
			t.Fatal(err)
		}
		got := fr.rec
		if got.flags != rec.flags || got.kind != rec.kind || got.clock != rec.clock || got.seq != rec.seq ||
			got.wallMs != rec.wallMs || got.id != rec.id || string(got.entity) != "entity:fields" ||
			string(got.scope) != "scope:fields" || !bytes.Equal(got.payload, payload) {
			t.Fatalf("decoded %+v, want %+v with entity:fields@scope:fields", got, rec)
		}
		if fr.payloadOff != payloadOff || fr.size != eventFrameLen(len("entity:fields"), len("scope:fields"), len(payload)) {
			t.Fatalf("payloadOff %d size %d, want %d and %d", fr.payloadOff, fr.size, payloadOff,
				eventFrameLen(len("entity:fields"), len("scope:fields"), len(payload)))
		}
	})

	t.Run("frames in sequence", func(t *testing.T) {
		var stream []byte
		stream = appendMarkerFrame(stream, frameBatchBegin, 10, 2)
		stream, _ = appendEventFrame(stream, &eventRecord{kind: engine.KindData, seq: 10, payload: []byte("a")}, "e", "s")
		stream, _ = appendEventFrame(stream, &eventRecord{kind: engine.KindData, seq: 11}, "e", "s")
		stream = appendMarkerFrame(stream, frameBatchCommit, 10, 2)
		var types []byte
		for pos := 0; pos < len(stream); {
			fr, err := checkFrameDecode(t, stream[pos:])
			if err != nil {
				t.Fatalf("frame at %d: %v", pos, err)
			}
			types = append(types, fr.typ)
			pos += fr.size
		}
		if want := []byte{frameBatchBegin, frameEvent, frameEvent, frameBatchCommit}; !bytes.Equal(types, want) {
			t.Fatalf("frame types %v, want %v", types, want)
		}
	})
}

func FuzzFrameDecode(f *testing.F) {
	for _, tc := range frameCases(f) {
		f.Add(tc.input)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = checkFrameDecode(t, data)
		// The checksum hides the rest of the decoder from random bytes:
		// also decode the input with its checksum made to match.
		if sealed, ok := resealFrame(data); ok {
			_, _ = checkFrameDecode(t, sealed)
		}
	})
}

// TestFrameReservedBytes: doc.go defines the reserved bytes of every frame
// body (byte 3 of an event, bytes 2-3 of a marker) as zero, and the writer
// always writes zero. A frame with a valid checksum and a non-zero reserved
// byte was not written by this format version; decodeFrame must refuse it
// (a *frameError) instead of accepting a frame that does not re-encode to
// its own bytes. FuzzFrameDecode found this (testdata/fuzz/FuzzFrameDecode).
func TestFrameReservedBytes(t *testing.T) {
	single := frameTestEvent(0, engine.KindData, 7, 42, 1, 1, "entity:frame", "scope:frame", []byte("hello"))
	begin := appendMarkerFrame(nil, frameBatchBegin, 5, 3)
	fence := appendMarkerFrame(nil, frameFenceCommit, 7, 9)
	reseal := func(b []byte) []byte {
		s, ok := resealFrame(b)
		if !ok {
			t.Fatal("reseal failed")
		}
		return s
	}
	cases := []struct {
		name    string
		input   []byte
		wantErr error
	}{
		{name: "event reserved byte 3", input: reseal(frameWithByte(single, frameHeaderLen+3, 0x30)), wantErr: errWantFrameError},
		{name: "batch begin reserved byte 2", input: reseal(frameWithByte(begin, frameHeaderLen+2, 1)), wantErr: errWantFrameError},
		{name: "fence commit reserved byte 3", input: reseal(frameWithByte(fence, frameHeaderLen+3, 0x80)), wantErr: errWantFrameError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var fr decodedFrame
			checkFrameErr(t, decodeFrame(tc.input, &fr), tc.wantErr)
		})
	}
}
