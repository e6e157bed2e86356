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

// chartCache keeps downloaded charts on disk within a bound on their total
// size, the least recently used going first. A chart is stored under the
// sha256 of its bytes and verified against it on every read, so an entry
// is what its name says whoever downloaded it: a repository that claims
// another chart's digest gets a mismatch, never that chart's cache entry.
// OCI charts are found through refs: registry/repository@manifest-digest
// → the chart's sha256, so that one registry's claim never names another
// registry's chart.
type chartCache struct {
	dir      string
	maxBytes int64
	mu       sync.Mutex
}

// newChartCache returns the cache in dir. The directory is made when a
// chart is first stored, not here: an agent whose file system is read-only
// where the cache would be (a container without the cache volume) starts,
// and without a place to keep charts only downloads them again.
func newChartCache(dir string, maxBytes int64) (*chartCache, error) {
	return &chartCache{dir: dir, maxBytes: maxBytes}, nil
}

// ensure makes the cache's directories.
func (c *chartCache) ensure() error {
	if err := os.MkdirAll(filepath.Join(c.dir, "refs"), 0o700); err != nil {
		return fmt.Errorf("chart cache: %w", err)
	}
	return nil
}

// credentialsFile is a registry credentials file of the agent's own, so
// that Helm's registry client never reads a user's Docker config.
func (c *chartCache) credentialsFile() string {
	_ = c.ensure() // a registry client without the file only cannot log in, which it never does
	return filepath.Join(c.dir, "registry-config.json")
}

// getBySum returns the chart whose sha256 an index claims (hex, with or
// without "sha256:"), from disk or else through download, and the digest
// of what it returns. A download whose sha256 is not the claimed one is
// refused; without a claim the download is not looked up, only kept.
func (c *chartCache) getBySum(claimed string, download func() ([]byte, error)) ([]byte, string, error) {
	want := strings.TrimPrefix(claimed, "sha256:")
	if !isHex(want) {
		want = ""
	}
	if want != "" {
		if data, ok := c.load(want); ok {
			return data, "sha256:" + want, nil
		}
	}
	data, err := download()
	if err != nil {
		return nil, "", err
	}
	got := sum(data)
	if want != "" && got != want {
		return nil, "", fmt.Errorf("digest mismatch: the index says sha256:%s, the download is sha256:%s", want, got)
	}
	c.store(got, data)
	return data, "sha256:" + got, nil
}

// getByRef returns the chart that ref (registry/repository@digest) names,
// from disk or else through download.
func (c *chartCache) getByRef(ref string, download func() ([]byte, error)) ([]byte, error) {
	refPath := filepath.Join(c.dir, "refs", sum([]byte(ref)))
	if name, err := os.ReadFile(refPath); err == nil {
		if data, ok := c.load(string(name)); ok {
			return data, nil
		}
	}
	data, err := download()
	if err != nil {
		return nil, err
	}
	got := sum(data)
	c.store(got, data)
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = writeFile(c.dir, refPath, []byte(got)) // a failure (no cache directory) only costs a later download
	return data, nil
}

// load reads the chart stored as name and verifies that its bytes are
// what the name says; an entry that is not (a corrupt or planted file) is
// removed.
func (c *chartCache) load(name string) ([]byte, bool) {
	if !isHex(name) {
		return nil, false
	}
	path := filepath.Join(c.dir, name+".tgz")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, false
	}
	if sum(data) != name {
		_ = os.Remove(path)
		return nil, false
	}
	now := time.Now()
	_ = os.Chtimes(path, now, now) // recently used
	return data, true
}

func sum(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil && len(s) == 64
}

// writeFile writes data to path through a temporary file in dir, so that
// a reader never sees half of it.
func writeFile(dir, path string, data []byte) error {
	tmp, err := os.CreateTemp(dir, ".download-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	tmp.Close()
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// store writes a chart and evicts the least recently used beyond the
// bound. A failure to write only costs a later download.
func (c *chartCache) store(name string, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.ensure(); err != nil {
		return // not kept: downloaded again next time
	}
	if writeFile(c.dir, filepath.Join(c.dir, name+".tgz"), data) == nil {
		c.evict()
	}
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
