package benchkit

import "syscall"

// childAttr makes a child process die with the harness.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
