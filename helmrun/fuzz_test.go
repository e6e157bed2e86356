package helmrun

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"

	"github.com/driftwatch/driftwatch/manifests"
)

// chartFiles is a Bundle holding a chart twice: as the directory chart/
// and packaged as pkg.tgz.
func chartFiles(chartYAML, values, helmignore, tmpl string, archive []byte) []manifests.Resource {
	return []manifests.Resource{
		{Name: "chart/Chart.yaml", Content: chartYAML},
		{Name: "chart/values.yaml", Content: values},
		{Name: "chart/.helmignore", Content: helmignore},
		{Name: "chart/templates/t.yaml", Content: tmpl},
		{Name: "pkg.tgz", Encoding: manifests.EncodingBase64, Content: base64.StdEncoding.EncodeToString(archive)},
	}
}

// tgz packs files as `helm package` does: a gzipped tar, every path
// under the chart's directory.
func tgz(t testing.TB, files map[string]string) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		data := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzLoadChart loads a chart of fuzzed files from a Bundle's resources,
// the one chart source that reads nothing but the Bundle, by a fuzzed
// name: a directory, a packaged chart, or neither. Errors name the chart;
// a loaded chart has metadata and a version; its digest does not depend
// on the order of the resources; and a template it holds is part of its
// digest.
func FuzzLoadChart(f *testing.F) {
	web := func(name string) string {
		data, err := os.ReadFile(filepath.Join("testdata", "web", name))
		if err != nil {
			f.Fatal(err)
		}
		return string(data)
	}
	chartYAML, values, tmpl := web("Chart.yaml"), web("values.yaml"), web("templates/config.yaml")
	pkg := tgz(f, map[string]string{"web/Chart.yaml": chartYAML, "web/values.yaml": values, "web/templates/config.yaml": tmpl})
	for _, name := range []string{"chart", "pkg.tgz", "/chart/", "./chart", ".", "", "missing", "../chart", "chart/Chart.yaml"} {
		f.Add(name, chartYAML, values, "", tmpl, pkg)
	}
	for _, seed := range []struct{ chartYAML, values, helmignore, tmpl string }{
		{chartYAML, values, "templates/t.yaml\n", tmpl},
		{chartYAML, values, "templates/\n", tmpl},
		{chartYAML, values, "*.yaml\n!Chart.yaml\n", tmpl},
		{chartYAML, values, "[\n", tmpl},
		{"apiVersion: v2\nname: web\n", values, "", tmpl},
		{"apiVersion: v2\nname: web\nversion: not-semver\n", values, "", tmpl},
		{"apiVersion: v2\nname: [\n", values, "", tmpl},
		{"null\n", values, "", tmpl},
		{chartYAML, "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n", "", tmpl},
		{chartYAML, "not: [yaml\n", "", tmpl},
	} {
		f.Add("chart", seed.chartYAML, seed.values, seed.helmignore, seed.tmpl, pkg)
	}
	f.Add("pkg.tgz", chartYAML, values, "", tmpl, []byte("not a tarball"))
	f.Add("pkg.tgz", chartYAML, values, "", tmpl, tgz(f, map[string]string{"web/Chart.yaml": "apiVersion: v2\nname: web\n"}))
	f.Add("pkg.tgz", chartYAML, values, "", tmpl, tgz(f, map[string]string{"Chart.yaml": chartYAML, "../escape/Chart.yaml": chartYAML}))
	f.Add("pkg.tgz", chartYAML, values, "", tmpl, pkg[:len(pkg)/2])
	f.Fuzz(func(t *testing.T, name, chartYAML, values, helmignore, tmpl string, archive []byte) {
		resources := chartFiles(chartYAML, values, helmignore, tmpl, archive)
		l, err := loadFromResources(resources, name)

		// A Bundle's resources are a set of files: listed in another
		// order they are the same chart, or the release would be
		// upgraded for nothing.
		reversed := slices.Clone(resources)
		slices.Reverse(reversed)
		l2, err2 := loadFromResources(reversed, name)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("in reverse order the resources load otherwise: %v, then %v", err, err2)
		}
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "chart ") || (!strings.Contains(msg, name) && !strings.Contains(msg, strconv.Quote(name))) {
				t.Errorf("error %q does not name the chart %q", msg, name)
			}
			return
		}
		if l.chart == nil || l.chart.Metadata == nil || l.version == "" || l.version != l.chart.Metadata.Version {
			t.Fatalf("chart %+v, version %q: want metadata and its version", l.chart, l.version)
		}
		if !isHex(l.digest) {
			t.Errorf("digest %q, want 64 hexadecimal digits", l.digest)
		}
		if l2.digest != l.digest || l2.version != l.version {
			t.Errorf("in reverse order: digest %s, version %s; first %s, %s", l2.digest, l2.version, l.digest, l.version)
		}

		// A template the directory chart holds is part of its identity:
		// when it changes, the digest changes, or the release installed
		// from the old one would be taken as current.
		if strings.Trim(path.Clean(name), "/") != "chart" || !slices.ContainsFunc(l.chart.Templates, func(file *common.File) bool { return file.Name == "templates/t.yaml" }) {
			return
		}
		changed, err := loadFromResources(chartFiles(chartYAML, values, helmignore, tmpl+"\n# changed\n", archive), name)
		if err != nil {
			t.Fatalf("with a comment added to a template: %v", err)
		}
		if changed.digest == l.digest {
			t.Errorf("the digest %s stays when a template changes", l.digest)
		}
	})
}
