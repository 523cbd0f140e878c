package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/kvckpt"
)

// The fleet of a run.
const (
	journalName = "main"
	groupName   = "g"
	groupParts  = 8
	session     = 2 * time.Second
	ckptBucket  = kvckpt.DefaultBucket
	producers   = 3
	members     = 3
	entities    = 40
)

// plainWorker is one plain checkpoint worker: its region as the CLI takes
// it and as the checker matches it.
type plainWorker struct {
	checkpoint string
	spec       string
	region     engine.Region
}

var plainWorkers = []plainWorker{
	{"w-s0", "scope=s0", engine.RegionScope("s0")},
	{"w-s1-low", "scope=s1,entity=k1", engine.RegionScope("s1").WithEntity("k1")},
	{"w-data", "category=1", engine.RegionAll().WithCategory(1)},
}

// groupRegion is the group's region (members' --region).
var (
	groupSpec   = "scope=s2"
	groupRegion = engine.RegionScope("s2")
)

// bins are the binaries a run starts.
type bins struct {
	writer, worker, natsServer, self string
}

// buildBins builds writer, worker and nats-server into dir (the module's
// root is root) and returns them with this program's own path (the
// producers' binary).
func buildBins(ctx context.Context, root, dir string) (bins, error) {
	self, err := os.Executable()
	if err != nil {
		return bins{}, err
	}
	for _, b := range [][]string{{"./cmd/writer", "./cmd/worker"}, {"github.com/nats-io/nats-server/v2"}} {
		cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", dir + string(filepath.Separator)}, b...)...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return bins{}, fmt.Errorf("go build %v: %v\n%s", b, err, out)
		}
	}
	return bins{
		writer: filepath.Join(dir, "writer"), worker: filepath.Join(dir, "worker"),
		natsServer: filepath.Join(dir, "nats-server"), self: self,
	}, nil
}

// moduleRoot walks up from the working directory to go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// natsCmd is the external nats-server, always on the same port and store.
func natsCmd(b bins, port int, store string) func(*incarnation) *exec.Cmd {
	return func(*incarnation) *exec.Cmd {
		return exec.Command(b.natsServer, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", store)
	}
}

// connectDirect connects to the server itself (not through a proxy): the
// run's own observer.
func connectDirect(url string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name("chaos-observer"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// historyPerKey is how many revisions of each checkpoint key the bucket
// keeps: all of a run's, so the checker reads the complete history.
const historyPerKey = 1 << 24

// createCheckpointBucket creates the checkpoint bucket before any worker,
// keeping every revision of every key (a KV bucket's history is at most 64
// when created through the KV API; the stream itself takes more).
func createCheckpointBucket(ctx context.Context, js jetstream.JetStream) error {
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: ckptBucket, History: 64, Storage: jetstream.FileStorage})
	if err != nil {
		return err
	}
	st, err := js.Stream(ctx, "KV_"+kv.Bucket())
	if err != nil {
		return err
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgsPerSubject = historyPerKey
	_, err = js.UpdateStream(ctx, cfg)
	return err
}

// waitNATS waits until the server answers JetStream requests.
func waitNATS(ctx context.Context, js jetstream.JetStream, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := js.AccountInfo(actx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-server not ready after %v: %w", limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
