package journal

import (
	"os"
	"syscall"
)

// syncData makes f's written data durable with fdatasync: it flushes the
// data pages and any metadata needed to read them back (a size change),
// but not timestamps. On a preallocated segment that is the data alone.
func syncData(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}
