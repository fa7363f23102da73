package metrics

import (
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"io"
	"os"
	"sync"
)

// buildInfo labels baton_build_info.
type buildInfo struct{ version, goVersion, sha256 string }

// buildCache reads a generation's binary once (per pid): its sha256 and
// the build information the Go toolchain wrote into it.
type buildCache struct {
	mu   sync.Mutex
	pid  int
	path string
	info buildInfo
}

func (c *buildCache) get(pid int, binary string) buildInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pid == pid && c.path == binary {
		return c.info
	}
	c.pid, c.path, c.info = pid, binary, readBuild(image(pid, binary))
	return c.info
}

// readBuild reads what is known of the binary at path; what cannot be
// read is left empty.
func readBuild(path string) buildInfo {
	var b buildInfo
	f, err := os.Open(path)
	if err != nil {
		return b
	}
	defer f.Close()
	if bi, err := buildinfo.Read(f); err == nil {
		b.version, b.goVersion = bi.Main.Version, bi.GoVersion
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return b
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err == nil {
		b.sha256 = hex.EncodeToString(h.Sum(nil))
	}
	return b
}
