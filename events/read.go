package events

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"time"
)

// timeNow is time.Now (a variable for tests of ordering).
var timeNow = time.Now

// maxLine bounds one record when reading: a longer line is skipped.
const maxLine = 64 << 10

// ReadFile returns the records kept at path, the rotated older file
// (path.1) first, oldest first. A file that does not exist holds no
// records; lines that are not records (cut by a crash, or not JSON) are
// skipped and counted in skipped.
func ReadFile(path string) (recs []Record, skipped int, err error) {
	for _, p := range []string{path + ".1", path} {
		f, err := openRead(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, skipped, err
		}
		rs, sk, err := decode(f)
		f.Close()
		if err != nil {
			return nil, skipped, err
		}
		recs, skipped = append(recs, rs...), skipped+sk
	}
	return recs, skipped, nil
}

func decode(r io.Reader) (recs []Record, skipped int, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := readLine(br)
		if len(line) > 0 {
			var rec Record
			if json.Unmarshal(line, &rec) == nil && rec.Name != "" {
				recs = append(recs, rec)
			} else {
				skipped++
			}
		}
		if err == io.EOF {
			return recs, skipped, nil
		}
		if err != nil {
			return recs, skipped, err
		}
	}
}

// readLine returns the next line without its newline; a line longer than
// maxLine is returned empty (skipped whole).
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	tooLong := false
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > maxLine {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if tooLong {
			return []byte("-"), err // counted as skipped
		}
		return bytes.TrimRight(line, "\r\n"), err
	}
}

// Follow calls fn for every record appended to path from now on (after
// the ones already there), until ctx ends; it follows the file across
// rotations. It polls every interval (200ms when zero). A file is known
// by its id read from an open handle (fileID), and its records are read
// from the very handle whose id was checked.
func Follow(ctx context.Context, path string, interval time.Duration, fn func(Record)) error {
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	var cur fileID
	known := false
	var off int64
	if f, id, size, err := openID(path); err == nil {
		cur, known, off = id, true, size
		f.Close()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		f, id, size, err := openID(path)
		if err != nil {
			continue // not created yet, or being rotated
		}
		if known && id != cur {
			// Rotated: finish the old file (now path.1), then start over.
			if old, oldID, _, err := openID(path + ".1"); err == nil {
				if oldID == cur {
					readRecords(old, off, fn)
				}
				old.Close()
			}
			off = 0
		} else if size < off {
			off = 0 // truncated
		}
		cur, known = id, true
		off = readRecords(f, off, fn)
		f.Close()
	}
}

// openID opens path for reading and returns its id and size, both read
// from the open file.
func openID(path string) (*os.File, fileID, int64, error) {
	f, err := openRead(path)
	if err != nil {
		return nil, fileID{}, 0, err
	}
	id, err := idOf(f)
	if err != nil {
		f.Close()
		return nil, fileID{}, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fileID{}, 0, err
	}
	return f, id, fi.Size(), nil
}

// readRecords reads whole records of f from off on and returns the
// offset after the last whole line.
func readRecords(f *os.File, off int64, fn func(Record)) int64 {
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return off
	}
	br := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return off // a partial last line is read next time, whole
		}
		off += int64(len(line))
		var rec Record
		if json.Unmarshal(bytes.TrimRight(line, "\r\n"), &rec) == nil && rec.Name != "" {
			fn(rec)
		}
	}
}
