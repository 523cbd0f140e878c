package fleet

import "github.com/batfleet/batfleet/fleet/internal/wire"

// MaxEntryBytes returns the largest journal entry (entity, scope and
// payload bytes together) whose pull reply fits under a NATS server max
// payload of maxPayload bytes: the journal.Config.MaxEntryBytes to open a
// journal with before serving it with NewWriter (which refuses a journal
// that accepts larger entries). With the default 1 MiB it is 982,936.
func MaxEntryBytes(maxPayload int64) int { return wire.MaxEntryBytes(maxPayload) }
