package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// The writer's disk. Where the run may mount a file system (root, or
// CAP_SYS_ADMIN), the writer's data directory is a small tmpfs of its
// own, and a full disk is real: a filler file takes every free block for a
// few seconds (ENOSPC on the journal's appends, its preallocation, its
// ranges file and a restarting writer's recovery), then is removed and
// space returns. The writer binary is the real one, with no test hook.
//
// Where no file system can be mounted, the run has no disk faults: the
// plan leaves the kind out (so the other kinds make up the count) and the
// summary says disk=none. (The journal's own fault hooks are unexported
// and reach no binary; a file-size rlimit set on the running writer with
// prlimit was tried and did not make its writes fail on this kernel.)
type disk struct {
	dir     string // the writer's data directory
	mounted bool
	mode    string // "tmpfs" or "none"
	why     string // why "none"
}

// diskBytes is the tmpfs size: far more than a run's journal needs.
const diskBytes = 256 << 20

func newDisk(dir, want string) (*disk, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	d := &disk{dir: dir, mode: "none", why: "--disk none"}
	if want == "none" {
		return d, nil
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", diskBytes)); err != nil {
		if want == "tmpfs" {
			return nil, fmt.Errorf("mount tmpfs on %s: %w", dir, err)
		}
		d.why = fmt.Sprintf("cannot mount a tmpfs on %s: %v", dir, err)
		return d, nil
	}
	d.mounted, d.mode = true, "tmpfs"
	return d, nil
}

// unmount unmounts the tmpfs (lazily, if busy).
func (d *disk) unmount() {
	if d.mounted {
		if err := syscall.Unmount(d.dir, 0); err != nil {
			_ = syscall.Unmount(d.dir, syscall.MNT_DETACH)
		}
		d.mounted = false
	}
}

// fill makes the disk full for dur, calling during once it is; it
// returns what it did.
func (d *disk) fill(dur time.Duration, during func()) (string, error) {
	if d.mode != "tmpfs" {
		return "", errors.New("no disk faults: " + d.why)
	}
	path := filepath.Join(d.dir, "chaos-filler")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer func() {
		_ = f.Close()
		_ = os.Remove(path)
	}()
	buf := make([]byte, 1<<20)
	var n int64
	for _, size := range []int{1 << 20, 4 << 10, 1} {
		for {
			w, err := f.Write(buf[:size])
			n += int64(w)
			if err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					return "", err
				}
				break
			}
		}
	}
	during()
	time.Sleep(dur)
	return fmt.Sprintf("tmpfs full (filler %d MiB) for %v", n>>20, dur), nil
}
