package writerapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/fleet"
	"github.com/batfleet/batfleet/internal/cli"
)

// DefaultInfoTimeout bounds `writer info`'s request to the writer.
const DefaultInfoTimeout = 5 * time.Second

// InfoConfig configures `writer info`.
type InfoConfig struct {
	NATS    cli.NATSFlags
	Journal string
	// Data, when set, is the writer's data directory on this machine: the
	// report adds the journal's disk use, and when no writer answers, says
	// what the directory alone tells (journal id, disk use).
	Data    string
	JSON    bool
	Timeout time.Duration // the request to the writer; 0 means DefaultInfoTimeout
	Out     io.Writer
	Log     hclog.Logger
}

// InfoReport is what `writer info` prints (--json: this object).
type InfoReport struct {
	Journal string `json:"journal"`
	// Running is whether a writer answered; without one, only JournalID,
	// Dir and DiskBytes are known (read from --data, never opened: opening
	// a journal writes to it).
	Running         bool           `json:"running"`
	JournalID       string         `json:"journal_id"`
	Incarnation     string         `json:"incarnation,omitempty"`
	Started         string         `json:"started,omitempty"` // RFC 3339, this incarnation's start
	Epoch           uint64         `json:"epoch"`
	Visible         uint64         `json:"visible"` // the visible bound: seqs below it (and outside cancelled ranges) are visible
	Events          uint64         `json:"events"`
	CancelledRanges []engine.Range `json:"cancelled_ranges"`
	Dir             string         `json:"dir,omitempty"`
	DiskBytes       *int64         `json:"disk_bytes,omitempty"` // the journal directory's files; only with --data
}

// Info runs `writer info`: it asks the journal's writer over NATS and, with
// Data, adds the journal directory's disk use; with no writer answering it
// falls back to what Data alone tells.
func Info(ctx context.Context, cfg InfoConfig) (InfoReport, error) {
	if err := engine.ValidateJournalName(cfg.Journal); err != nil {
		return InfoReport{}, cli.Usagef("--journal: %v", err)
	}
	if cfg.Timeout < 0 {
		return InfoReport{}, cli.Usagef("--timeout must be > 0 (got %v)", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultInfoTimeout
	}
	dir := ""
	if cfg.Data != "" {
		dir = filepath.Join(cfg.Data, "journals", cfg.Journal)
	}
	rep, werr := describeWriter(ctx, cfg)
	switch {
	case werr == nil && dir == "":
	case werr == nil:
		if err := addLocal(&rep, dir, true); err != nil {
			return InfoReport{}, err
		}
	case dir == "" || ctx.Err() != nil:
		return InfoReport{}, werr
	default:
		cfg.Log.Debug("no writer answered; reading the data directory", "error", werr)
		rep = InfoReport{Journal: cfg.Journal, CancelledRanges: []engine.Range{}}
		if err := addLocal(&rep, dir, false); err != nil {
			return InfoReport{}, fmt.Errorf("%w; and %w", werr, err)
		}
	}
	if cfg.JSON {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return rep, err
		}
		_, err = fmt.Fprintf(cfg.Out, "%s\n", b)
		return rep, err
	}
	return rep, writeInfoTable(cfg.Out, rep)
}

// describeWriter asks the journal's writer for its info.
func describeWriter(ctx context.Context, cfg InfoConfig) (InfoReport, error) {
	nc, err := cfg.NATS.Connect(cfg.NATS.URL, "batfleet-writer-info", cfg.Log, nats.MaxReconnects(0))
	if err != nil {
		return InfoReport{}, &cli.NATSError{Err: err}
	}
	defer nc.Close()
	client, err := fleet.NewClient(nc, fleet.ClientConfig{Journal: cfg.Journal, Timeout: cfg.Timeout, Logger: cfg.Log})
	if err != nil {
		return InfoReport{}, err
	}
	defer client.Close()
	rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	in, err := client.Describe(rctx)
	if err != nil {
		if errors.Is(err, fleet.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			return InfoReport{}, fmt.Errorf("no writer answers for journal %q at %s within %v (is `writer serve --journal %s` running? --data DIR reads a stopped writer's directory): %w",
				cfg.Journal, cfg.NATS.URL, cfg.Timeout, cfg.Journal, err)
		}
		return InfoReport{}, fmt.Errorf("writer info for journal %q: %w", cfg.Journal, err)
	}
	rep := InfoReport{
		Journal: in.Journal, Running: true, JournalID: in.JournalID.String(), Incarnation: in.Incarnation.String(),
		Epoch: in.Epoch, Visible: in.Visible, Events: in.Events, CancelledRanges: in.CancelledRanges,
	}
	if rep.CancelledRanges == nil {
		rep.CancelledRanges = []engine.Range{}
	}
	if in.StartedMs > 0 {
		rep.Started = time.UnixMilli(in.StartedMs).UTC().Format(time.RFC3339)
	}
	return rep, nil
}

// journalIDFile is the journal directory's id file (engine/journal doc.go,
// "Directory layout").
const journalIDFile = "journal_id"

// addLocal adds what the journal directory tells without opening the
// journal: its id and disk use. With running, the directory must hold the
// journal the writer serves.
func addLocal(rep *InfoReport, dir string, running bool) error {
	data, err := os.ReadFile(filepath.Join(dir, journalIDFile))
	if errors.Is(err, fs.ErrNotExist) {
		return cli.Usagef("--data: %s holds no journal (no %s file)", dir, journalIDFile)
	}
	if err != nil {
		return fmt.Errorf("--data: %w", err)
	}
	id, err := engine.ParseID128(strings.TrimSpace(string(data)))
	if err != nil {
		return fmt.Errorf("--data: %s: %w", filepath.Join(dir, journalIDFile), err)
	}
	if running && id.String() != rep.JournalID {
		return cli.Usagef("--data: %s holds journal id %s, but the writer serves journal id %s (another machine's or an old directory?)",
			dir, id, rep.JournalID)
	}
	rep.JournalID = id.String()
	var total int64
	err = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			total += fi.Size()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("--data: disk use of %s: %w", dir, err)
	}
	rep.Dir, rep.DiskBytes = dir, &total
	return nil
}

func writeInfoTable(out io.Writer, r InfoReport) error {
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("journal", r.Journal)
	row("journal id", r.JournalID)
	if r.Running {
		row("incarnation", r.Incarnation)
		if r.Started != "" {
			row("started", r.Started)
		}
		row("epoch", fmt.Sprint(r.Epoch))
		row("visible", fmt.Sprintf("%d (seqs below it are visible)", r.Visible))
		row("events", fmt.Sprint(r.Events))
		cancelled := "none"
		if len(r.CancelledRanges) > 0 {
			parts := make([]string, len(r.CancelledRanges))
			for i, c := range r.CancelledRanges {
				parts[i] = fmt.Sprintf("[%d, %d)", c.Start, c.End)
			}
			cancelled = strings.Join(parts, " ")
		}
		row("cancelled", cancelled)
	} else {
		row("writer", "not running (incarnation, visible, events and cancelled ranges need a running writer)")
	}
	if r.DiskBytes != nil {
		row("disk use", fmt.Sprintf("%s (%d bytes) in %s", humanBytes(*r.DiskBytes), *r.DiskBytes, r.Dir))
	}
	return tw.Flush()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
