package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/vmihailenco/msgpack/v5"
)

// Range is a half-open sequence range [Start, End).
type Range struct {
	Start uint64 `msgpack:"start"`
	End   uint64 `msgpack:"end"`
}

// Contains reports whether seq lies in r.
func (r Range) Contains(seq uint64) bool { return seq >= r.Start && seq < r.End }

func (r Range) String() string { return fmt.Sprintf("[%d, %d)", r.Start, r.End) }

// NormalizeRanges validates, sorts and merges ranges: start >= end is
// ErrRangeMalformed; ranges that overlap or touch (next.Start <= cur.End)
// merge. The input is not modified.
func NormalizeRanges(in []Range) ([]Range, error) {
	for _, r := range in {
		if r.Start >= r.End {
			return nil, &RangeError{Start: r.Start, End: r.End}
		}
	}
	if len(in) == 0 {
		return nil, nil
	}
	out := append([]Range(nil), in...)
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	merged := out[:1]
	for _, r := range out[1:] {
		last := &merged[len(merged)-1]
		if r.Start <= last.End {
			if r.End > last.End {
				last.End = r.End
			}
			continue
		}
		merged = append(merged, r)
	}
	return merged, nil
}

// intersecting returns the ranges of the normalised list rs that intersect
// [lo, hi). The result aliases rs.
func intersecting(rs []Range, lo, hi uint64) []Range {
	if lo >= hi {
		return nil
	}
	i := sort.Search(len(rs), func(i int) bool { return rs[i].End > lo })
	j := i
	for j < len(rs) && rs[j].Start < hi {
		j++
	}
	return rs[i:j]
}

// Cancelled-ranges file (visibility_ranges.fbv):
//
//	bytes 0-5  "FBATVR"
//	bytes 6-7  version, u16 LE (2 is written; 1 and 2 are read)
//	bytes 8-11 CRC-32 (IEEE), u32 LE, of the body
//	bytes 12-  body: MessagePack {ranges: [{start, end}, ...]}
const (
	rangesFileName        = "visibility_ranges.fbv"
	rangesMagic           = "FBATVR"
	rangesVersion  uint16 = 2
)

type rangesBody struct {
	Ranges []Range `msgpack:"ranges"`
}

// loadRanges reads the cancelled-ranges file of dir. An absent file means
// no ranges.
func loadRanges(dir string) ([]Range, error) {
	path := filepath.Join(dir, rangesFileName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("engine: read %s: %w", path, err)
	}
	return decodeRangesFile(path, data)
}

func decodeRangesFile(path string, data []byte) ([]Range, error) {
	if len(data) < 12 {
		return nil, &RangesFileError{Path: path, Kind: "short"}
	}
	if !bytes.Equal(data[:6], []byte(rangesMagic)) {
		return nil, &RangesFileError{Path: path, Kind: "magic"}
	}
	version := binary.LittleEndian.Uint16(data[6:])
	if version == 0 || version > rangesVersion {
		return nil, &RangesFileError{Path: path, Kind: "version", Found: version, Supported: rangesVersion}
	}
	body := data[12:]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(data[8:]) {
		return nil, &RangesFileError{Path: path, Kind: "crc"}
	}
	var rb rangesBody
	if err := msgpack.Unmarshal(body, &rb); err != nil {
		return nil, &RangesFileError{Path: path, Kind: "decode", Cause: err}
	}
	rs, err := NormalizeRanges(rb.Ranges)
	if err != nil {
		return nil, &RangesFileError{Path: path, Kind: "range", Cause: err}
	}
	return rs, nil
}

func encodeRangesFile(rs []Range) ([]byte, error) {
	body, err := msgpack.Marshal(rangesBody{Ranges: rs})
	if err != nil {
		return nil, err
	}
	out := make([]byte, 12, 12+len(body))
	copy(out, rangesMagic)
	binary.LittleEndian.PutUint16(out[6:], rangesVersion)
	binary.LittleEndian.PutUint32(out[8:], crc32.ChecksumIEEE(body))
	return append(out, body...), nil
}

// saveRanges atomically replaces the cancelled-ranges file of dir; with no
// ranges it removes the file.
func saveRanges(dir string, rs []Range) error {
	path := filepath.Join(dir, rangesFileName)
	if len(rs) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return syncDir(dir)
	}
	data, err := encodeRangesFile(rs)
	if err != nil {
		return err
	}
	return writeFileAtomic(dir, rangesFileName, data)
}

// writeFileAtomic writes name in dir through a temporary file: write,
// fsync, rename over the final name, fsync the directory.
func writeFileAtomic(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmpName, filepath.Join(dir, name)); err != nil {
		return err
	}
	ok = true
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
