package helmrun

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// chartCache keeps downloaded charts on disk by digest, within a bound on
// their total size: the least recently used go first.
type chartCache struct {
	dir      string
	maxBytes int64
	mu       sync.Mutex
}

func newChartCache(dir string, maxBytes int64) (*chartCache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("chart cache: %w", err)
	}
	return &chartCache{dir: dir, maxBytes: maxBytes}, nil
}

// credentialsFile is a registry credentials file of the agent's own, so
// that Helm's registry client never reads a user's Docker config.
func (c *chartCache) credentialsFile() string { return filepath.Join(c.dir, "registry-config.json") }

// get returns the chart with digest, from disk or else through download,
// and the digest it is stored under. An empty digest (an index without
// one) is computed from the download. A download whose sha256 does not
// match a sha256 digest is refused.
func (c *chartCache) get(digest string, download func() ([]byte, error)) ([]byte, string, error) {
	name := strings.TrimPrefix(digest, "sha256:")
	if name != "" && !isHex(name) {
		name = ""
	}
	if name != "" {
		if data, err := os.ReadFile(filepath.Join(c.dir, name+".tgz")); err == nil {
			now := time.Now()
			_ = os.Chtimes(filepath.Join(c.dir, name+".tgz"), now, now) // recently used
			return data, "sha256:" + name, nil
		}
	}
	data, err := download()
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(data)
	got := hex.EncodeToString(sum[:])
	if name != "" && !strings.Contains(digest, "sha256:") && got != name {
		// An index's digest is the archive's sha256; an OCI manifest
		// digest is not, and is kept as the name.
		return nil, "", fmt.Errorf("digest mismatch: the index says %s, the download is %s", name, got)
	}
	if name == "" {
		name = got
	}
	c.store(name, data)
	return data, "sha256:" + name, nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil && len(s) == 64
}

// store writes a chart and evicts the least recently used beyond the
// bound. A failure to write only costs a later download.
func (c *chartCache) store(name string, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tmp, err := os.CreateTemp(c.dir, ".download-*")
	if err != nil {
		return
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return
	}
	tmp.Close()
	if err := os.Rename(tmp.Name(), filepath.Join(c.dir, name+".tgz")); err != nil {
		os.Remove(tmp.Name())
		return
	}
	c.evict()
}

// evict removes the least recently used charts until the rest fit.
func (c *chartCache) evict() {
	type entry struct {
		path string
		size int64
		used time.Time
	}
	var all []entry
	var total int64
	_ = filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".tgz") {
			return nil
		}
		if info, err := d.Info(); err == nil {
			all = append(all, entry{p, info.Size(), info.ModTime()})
			total += info.Size()
		}
		return nil
	})
	sort.Slice(all, func(i, j int) bool { return all[i].used.Before(all[j].used) })
	for _, e := range all {
		if total <= c.maxBytes {
			return
		}
		if os.Remove(e.path) == nil {
			total -= e.size
		}
	}
}
