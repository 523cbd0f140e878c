// Package deliverytest holds the worker scenarios of the test
// catalogue, written against an Env (a source, the journal behind it and a
// checkpoint store) so that every supervision rule is checked identically
// on every backend: engine/delivery runs them on a local journal with the
// memory and file checkpoint stores, fleet and kvckpt on a remote source
// over NATS with the JetStream KV store.
//
// The scenarios are filed by catalogue section, so a failing case points to
// one small file: ckp.go (CK-04, CKP-*), wrk.go (WRK-*), gap.go (GAP-10)
// and rst.go (RST-*); helpers.go holds what they share, scenarios.go the
// list in catalogue order.
package deliverytest
