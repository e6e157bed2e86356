// Command etcd is the etcd v3.6 server, built from go.etcd.io/etcd/server/v3.
// It lives in a module of its own because k8s.io/kubernetes v1.37 requires
// etcd v3.7 libraries, and minimal version selection would otherwise raise
// the server to v3.7.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
