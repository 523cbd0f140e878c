package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

// measure runs one measured step under the run timeout and returns the
// CPU time the whole process (embedded server, writer, workers or pullers
// and producers: both systems run in this process) used during it. When
// cfg.ProfileDir is set it also writes a CPU profile of just that step to
// <ProfileDir>/<name>.pprof.
func measure(ctx context.Context, cfg config, name string, step func(ctx context.Context) error) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.RunTimeout)
	defer cancel()
	cpu0 := processCPU()
	err := profiled(cfg, name, func() error { return step(ctx) })
	return processCPU() - cpu0, err
}

// processCPU returns the user and system CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func profiled(cfg config, name string, step func() error) error {
	if cfg.ProfileDir == "" {
		return step()
	}
	if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
		return err
	}
	file := filepath.Join(cfg.ProfileDir, strings.NewReplacer("/", "-", " ", "_", ",", "", "(", "", ")", "").Replace(name)+".pprof")
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer pprof.StopCPUProfile()
	return step()
}
