// Package wire is the fleet's wire protocol v1: subjects, limits, the
// messages and their hand-written MessagePack codec, and the sizing of
// replies (PullBudget, EntryOverhead, MaxEntryBytes, EncodePullReplyWithin),
// which has no other owner. Every body is a map with snake_case keys and
// "v": 1; decoders ignore unknown keys, reject a missing v or an unknown
// major version, bound the nesting of skipped values, and report a bad
// request as a *RequestError naming the field and the rule.
package wire
