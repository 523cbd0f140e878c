//go:build !linux

package engine

import "os"

// syncData is fsync where fdatasync is not available.
func syncData(f *os.File) error { return f.Sync() }
