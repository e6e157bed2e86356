package clusters

import (
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// restConfigLoader is a clientcmd.ClientConfig for a configuration that
// came from no kubeconfig (in-cluster, or impersonating): it yields that
// configuration and the "default" namespace.
type restConfigLoader struct{ cfg *rest.Config }

func (l restConfigLoader) RawConfig() (clientcmdapi.Config, error) { return clientcmdapi.Config{}, nil }

func (l restConfigLoader) ClientConfig() (*rest.Config, error) { return rest.CopyConfig(l.cfg), nil }

func (l restConfigLoader) Namespace() (string, bool, error) { return "default", false, nil }

func (l restConfigLoader) ConfigAccess() clientcmd.ConfigAccess {
	return clientcmd.NewDefaultClientConfigLoadingRules()
}
