package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/driftwatch/driftwatch/test/cluster"
)

func manifestsCRDGVR() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
}

func tlsConfig(c *cluster.Cluster) *tls.Config {
	pool := x509.NewCertPool()
	if b, err := os.ReadFile(filepath.Join(c.Dir, "pki", "ca.crt")); err == nil {
		pool.AppendCertsFromPEM(b)
	}
	return &tls.Config{RootCAs: pool}
}
