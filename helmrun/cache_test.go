package helmrun

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestChartCacheChecksDigestsAndEvictsTheLeastRecentlyUsed(t *testing.T) {
	dir := t.TempDir()
	c, err := newChartCache(dir, 25)
	if err != nil {
		t.Fatal(err)
	}
	digest := func(s string) string { sum := sha256.Sum256([]byte(s)); return hex.EncodeToString(sum[:]) }
	downloads := 0
	get := func(d, body string) error {
		_, _, err := c.get(d, func() ([]byte, error) { downloads++; return []byte(body), nil })
		return err
	}
	if err := get(digest("aaaaaaaaaa"), "aaaaaaaaaa"); err != nil {
		t.Fatal(err)
	}
	if err := get(digest("aaaaaaaaaa"), "aaaaaaaaaa"); err != nil || downloads != 1 {
		t.Fatalf("a cached chart downloaded again (%d downloads, %v)", downloads, err)
	}
	if err := get(digest("not this"), "tampered"); err == nil || !strings.Contains(err.Error(), "digest mismatch") {
		t.Fatalf("a download that does not match its digest: %v", err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(dir, digest("aaaaaaaaaa")+".tgz"), old, old); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"bbbbbbbbbb", "cccccccccc"} {
		if err := get(digest(body), body); err != nil {
			t.Fatal(err)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.tgz"))
	if len(files) != 2 {
		t.Fatalf("cache holds %v: want the two most recent within 25 bytes", files)
	}
	for _, f := range files {
		if strings.Contains(f, digest("aaaaaaaaaa")) {
			t.Errorf("the least recently used chart was kept: %v", files)
		}
	}
}
