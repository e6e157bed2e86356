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
		_, _, err := c.getBySum(d, func() ([]byte, error) { downloads++; return []byte(body), nil })
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

// TestChartCacheCannotBePoisoned: one tenant's repository or registry
// cannot make another tenant's next release install its chart through the
// shared cache. Entries are named by the sha256 of their bytes and verified
// on every read; OCI entries are found by registry/repository@digest.
func TestChartCacheCannotBePoisoned(t *testing.T) {
	digest := func(s string) string { sum := sha256.Sum256([]byte(s)); return hex.EncodeToString(sum[:]) }
	const genuine, evil = "the victim's chart", "the attacker's templates"
	from := func(body string, n *int) func() ([]byte, error) {
		return func() ([]byte, error) { *n++; return []byte(body), nil }
	}

	t.Run("an index that claims another chart's digest", func(t *testing.T) {
		c, err := newChartCache(t.TempDir(), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		// The attacker's index names the victim's digest, with or
		// without the sha256: prefix, for its own bytes.
		for _, claim := range []string{"sha256:" + digest(genuine), digest(genuine)} {
			if _, _, err := c.getBySum(claim, from(evil, &n)); err == nil || !strings.Contains(err.Error(), "digest mismatch") {
				t.Fatalf("claim %s for other bytes: err = %v, want a digest mismatch", claim, err)
			}
		}
		data, _, err := c.getBySum(digest(genuine), from(genuine, &n))
		if err != nil || string(data) != genuine {
			t.Fatalf("the victim's chart: %q, %v", data, err)
		}
	})

	t.Run("a registry that claims another registry's manifest digest", func(t *testing.T) {
		c, err := newChartCache(t.TempDir(), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		const d = "sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		var n int
		if _, err := c.getByRef("evil.example/charts/web@"+d, from(evil, &n)); err != nil {
			t.Fatal(err)
		}
		data, err := c.getByRef("good.example/charts/web@"+d, from(genuine, &n))
		if err != nil || string(data) != genuine {
			t.Fatalf("the victim's registry's chart: got %q, %v; want its own download", data, err)
		}
		if n != 2 {
			t.Errorf("%d downloads, want 2: the victim's reference must not hit the attacker's entry", n)
		}
		if data, _ := c.getByRef("good.example/charts/web@"+d, from("downloaded again", &n)); string(data) != genuine || n != 2 {
			t.Errorf("the victim's second read: %q after %d downloads, want its cached chart", data, n)
		}
	})

	t.Run("a file planted under a chart's name", func(t *testing.T) {
		dir := t.TempDir()
		c, err := newChartCache(dir, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, digest(genuine)+".tgz"), []byte(evil), 0o600); err != nil {
			t.Fatal(err)
		}
		var n int
		data, _, err := c.getBySum(digest(genuine), from(genuine, &n))
		if err != nil || string(data) != genuine || n != 1 {
			t.Fatalf("read %q (%d downloads, %v): want the verified download, not the planted file", data, n, err)
		}
	})
}
