package clusters

import (
	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"
)

// KubectlFlags are kubectl's connection flags: --kubeconfig, --context,
// --cluster, --user, -n/--namespace, --server, --token, --as, --as-group,
// --certificate-authority, --insecure-skip-tls-verify, --request-timeout,
// and the rest of client-go's clientcmd override flags, which
// k8s.io/cli-runtime's ConfigFlags binds too. cli-runtime itself is not
// linked: its packages' initialisation alone doubled the agent binary's
// resident memory at start (26 → 58 MB for `driftwatch version`).
type KubectlFlags struct {
	rules     *clientcmd.ClientConfigLoadingRules
	overrides *clientcmd.ConfigOverrides
}

// BindKubectlFlags adds kubectl's connection flags to fs.
func BindKubectlFlags(fs *pflag.FlagSet) *KubectlFlags {
	kf := &KubectlFlags{rules: clientcmd.NewDefaultClientConfigLoadingRules(), overrides: &clientcmd.ConfigOverrides{}}
	fs.StringVar(&kf.rules.ExplicitPath, clientcmd.RecommendedConfigPathFlag, "", "path to the kubeconfig file")
	clientcmd.BindOverrideFlags(kf.overrides, fs, clientcmd.RecommendedConfigOverrideFlags(""))
	return kf
}

// Namespace is -n, or "" when it was not given.
func (kf *KubectlFlags) Namespace() string { return kf.overrides.Context.Namespace }

// Clients builds the clients that the flags describe, as kubectl would.
func (kf *KubectlFlags) Clients() (*Clients, error) {
	raw := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(kf.rules, kf.overrides)
	cfg, err := raw.ClientConfig()
	if err != nil {
		return nil, err
	}
	c, err := NewClients(cfg)
	if err != nil {
		return nil, err
	}
	c.rawConfig = raw
	return c, nil
}
