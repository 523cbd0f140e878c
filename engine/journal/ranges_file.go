package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/batfleet/batfleet/engine"
	"github.com/batfleet/batfleet/internal/fsx"
	"github.com/batfleet/batfleet/internal/msgpackutil"
	"github.com/vmihailenco/msgpack/v5"
)

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
	Ranges []engine.Range `msgpack:"ranges"`
}

// loadRanges reads the cancelled-ranges file of dir. An absent file means
// no ranges.
func loadRanges(dir string) ([]engine.Range, error) {
	path := filepath.Join(dir, rangesFileName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("journal: read %s: %w", path, err)
	}
	return decodeRangesFile(path, data)
}

func decodeRangesFile(path string, data []byte) ([]engine.Range, error) {
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
	// CheckBounded first: msgpack/v5 would size Ranges by the length its
	// array declares.
	if err := msgpackutil.CheckBounded(body); err != nil {
		return nil, &RangesFileError{Path: path, Kind: "decode", Cause: err}
	}
	if err := msgpack.Unmarshal(body, &rb); err != nil {
		return nil, &RangesFileError{Path: path, Kind: "decode", Cause: err}
	}
	rs, err := engine.NormalizeRanges(rb.Ranges)
	if err != nil {
		return nil, &RangesFileError{Path: path, Kind: "range", Cause: err}
	}
	return rs, nil
}

func encodeRangesFile(rs []engine.Range) ([]byte, error) {
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
func saveRanges(dir string, rs []engine.Range) error {
	path := filepath.Join(dir, rangesFileName)
	if len(rs) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return fsx.SyncDir(dir)
	}
	data, err := encodeRangesFile(rs)
	if err != nil {
		return err
	}
	return fsx.WriteFile(dir, rangesFileName, data, nil)
}
