package engine

import (
	"errors"
	"fmt"
	"hash/fnv"
	"testing"
)

// Catalogue: GRP-01 (the model's half): buckets are FNV-1a 64 of the
// entity's bytes mod 1024; partition i of P holds buckets
// [i·1024/P, (i+1)·1024/P); 10,000 entities spread over 16 partitions
// within 1/16 ± 20 %; every entity in exactly one partition.
func TestGRP01_Partitioning(t *testing.T) {
	for _, e := range []string{"order:1", "alice", "é", ""} {
		h := fnv.New64a()
		h.Write([]byte(e))
		if got, want := Bucket(e), uint16(h.Sum64()%1024); got != want {
			t.Fatalf("Bucket(%q) = %d, want %d", e, got, want)
		}
	}
	// Golden values: the bucket of an entity is persistent (partition
	// checkpoints hold positions of the entities of their buckets).
	for e, want := range map[string]uint16{"order:1": 594, "alice": 263, "é": 513, "": 805} {
		if Bucket(e) != want {
			t.Fatalf("Bucket(%q) moved", e)
		}
	}
	const P, N = 16, 10_000
	counts := make([]int, P)
	for i := range N {
		e := fmt.Sprintf("order:%d", i)
		owners := 0
		for p := range P {
			if (Partition{Index: uint16(p), Count: P}).Holds(Bucket(e)) {
				counts[p]++
				owners++
			}
		}
		if owners != 1 {
			t.Fatalf("entity %q is in %d partitions", e, owners)
		}
	}
	for p, n := range counts {
		if want := N / P; n < want*8/10 || n > want*12/10 {
			t.Errorf("partition %d holds %d entities, want %d ± 20 %%", p, n, want)
		}
	}
	for _, tc := range []struct {
		p      Partition
		lo, hi uint16
	}{{Partition{0, 1}, 0, 1024}, {Partition{3, 16}, 192, 256}, {Partition{1023, 1024}, 1023, 1024}, {Partition{1, 2}, 512, 1024}} {
		if lo, hi := tc.p.Buckets(); lo != tc.lo || hi != tc.hi {
			t.Errorf("%v.Buckets() = [%d, %d), want [%d, %d)", tc.p, lo, hi, tc.lo, tc.hi)
		}
	}
}

func TestPartitionValidation(t *testing.T) {
	for _, p := range []Partition{{0, 1}, {15, 16}, {1023, 1024}} {
		if err := p.Validate(); err != nil {
			t.Errorf("%v: %v", p, err)
		}
	}
	for _, p := range []Partition{{0, 0}, {0, 3}, {0, 2048}, {16, 16}, {0, 1000}} {
		if err := p.Validate(); !errors.Is(err, ErrInvalidPartition) {
			t.Errorf("%v: %v, want ErrInvalidPartition", p, err)
		}
		if err := RegionAll().WithPartition(p).Validate(); !errors.Is(err, ErrInvalidRegion) || !errors.Is(err, ErrInvalidPartition) {
			t.Errorf("region with %v: %v", p, err)
		}
	}
}

// The identity of a partition is the group region's identity plus
// "|part=<i>/<P>"; it parses back, and regions without a partition keep
// their identity.
func TestPartitionIdentity(t *testing.T) {
	r := RegionEntity("order").WithScope("shop").WithPartition(Partition{3, 16})
	const want = "entity=order|scope=shop|fact=none|clock=*|part=3/16"
	if got := r.Identity(); got != want {
		t.Fatalf("Identity = %q, want %q", got, want)
	}
	back, err := ParseRegionIdentity(want)
	if err != nil || back != r {
		t.Fatalf("ParseRegionIdentity = %+v, %v", back, err)
	}
	if got := r.WithoutPartition().Identity(); got != "entity=order|scope=shop|fact=none|clock=*" {
		t.Fatalf("without the partition: %q", got)
	}
	for _, bad := range []string{want + "|x=1", "entity=*|scope=*|fact=none|clock=*|part=3", "entity=*|scope=*|fact=none|clock=*|part=16/16", "entity=*|scope=*|fact=none|clock=*|prt=1/2"} {
		if _, err := ParseRegionIdentity(bad); !errors.Is(err, ErrInvalidRegion) {
			t.Errorf("ParseRegionIdentity(%q) = %v", bad, err)
		}
	}
	spec, err := ParseRegion("entity=order,part=3/16")
	if err != nil || spec.Spec() != "entity=order,part=3/16" {
		t.Fatalf("ParseRegion part: %v, %v", spec.Spec(), err)
	}
	// Matches filters by bucket.
	in, out := "", ""
	for i := 0; in == "" || out == ""; i++ {
		e := fmt.Sprintf("order:%d", i)
		if r.part.Holds(Bucket(e)) {
			in = e
		} else {
			out = e
		}
	}
	if !r.Matches(in, "shop", KindData, 0) || r.Matches(out, "shop", KindData, 0) {
		t.Fatalf("Matches ignores the partition (%s in, %s out)", in, out)
	}
	if !r.MatchesBucket(in, Bucket(in), "shop", KindData, 0) || r.MatchesBucket(out, Bucket(out), "shop", KindData, 0) {
		t.Fatal("MatchesBucket ignores the partition")
	}
}
