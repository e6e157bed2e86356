// Command kubectl is the stock kubectl v1.37, built from the k8s.io/kubectl
// module so that tests check what users will see with a current client.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() {
	os.Exit(cli.Run(cmd.NewDefaultKubectlCommand()))
}
