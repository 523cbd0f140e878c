package wire

import "github.com/batfleet/batfleet/engine"

// CountSubject returns the subject of journal's count endpoint. It is
// apart from Subjects so that the struct, which tests build literally,
// keeps its shape.
func CountSubject(journal string) string { return "batfleet." + journal + ".count" }

// CountRequest asks how many entries of Region follow Position (from the
// beginning when Started is false): what a pull from there would deliver,
// counted by the writer from its index without sending an entry.
type CountRequest struct {
	Region   engine.Region
	Position uint64
	Started  bool
}

// EncodeCountRequest encodes r.
func EncodeCountRequest(r CountRequest) []byte {
	b := make([]byte, 0, 96)
	b = AppendMapLen(b, 4)
	b = AppendUint(AppendStr(b, "v"), ProtocolVersion)
	b = appendRegion(AppendStr(b, "region"), r.Region)
	b = AppendUint(AppendStr(b, "position"), r.Position)
	b = AppendBool(AppendStr(b, "started"), r.Started)
	return b
}

// DecodeCountRequest decodes and validates a count request. Errors are
// *RequestError naming the field and the rule.
func DecodeCountRequest(data []byte) (CountRequest, error) {
	var req CountRequest
	err := decodeRequest(data, func(r *reader, key string) error {
		if done, err := decodeCursorField(r, key, &req.Region, &req.Position, &req.Started); done {
			return err
		}
		r.skip()
		return nil
	})
	if err != nil {
		return req, err
	}
	if err := req.Region.Validate(); err != nil {
		return req, BadField("region", "%v", err)
	}
	return req, nil
}

// CountReply answers a count request.
type CountReply struct {
	JournalID   engine.ID128
	Incarnation engine.ID128
	Epoch       uint64
	Visible     uint64 // the visible bound counted up to
	Count       uint64 // matching entries after the position
	OldestMs    int64  // wall time of the first of them; 0 when Count is 0
}

// EncodeCountReply encodes c.
func EncodeCountReply(c CountReply) []byte {
	b := make([]byte, 0, 160)
	b = AppendMapLen(b, 7)
	b = AppendUint(AppendStr(b, "v"), ProtocolVersion)
	b = AppendStr(AppendStr(b, "journal_id"), c.JournalID.String())
	b = AppendStr(AppendStr(b, "incarnation"), c.Incarnation.String())
	b = AppendUint(AppendStr(b, "epoch"), c.Epoch)
	b = AppendUint(AppendStr(b, "visible"), c.Visible)
	b = AppendUint(AppendStr(b, "count"), c.Count)
	b = AppendInt(AppendStr(b, "oldest_ms"), c.OldestMs)
	return b
}

// DecodeCountReply decodes a count reply.
func DecodeCountReply(data []byte) (CountReply, error) {
	var c CountReply
	err := DecodeReply(data, "count reply", func(r *reader, key string) {
		switch key {
		case "journal_id":
			c.JournalID = decodeID(r, key)
		case "incarnation":
			c.Incarnation = decodeID(r, key)
		case "epoch":
			c.Epoch = r.uint()
		case "visible":
			c.Visible = r.uint()
		case "count":
			c.Count = r.uint()
		case "oldest_ms":
			c.OldestMs = r.int()
		default:
			r.skip()
		}
	})
	return c, err
}
