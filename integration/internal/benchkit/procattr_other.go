//go:build !linux

package benchkit

import "syscall"

// childAttr: no parent-death signal outside Linux.
func childAttr() *syscall.SysProcAttr { return nil }
