package clusters

import (
	"testing"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
)

// Clients is the REST client getter that Helm's action.Configuration takes
// (genericclioptions.RESTClientGetter); the agent's binary does not link
// cli-runtime, the test does.
var _ genericclioptions.RESTClientGetter = (*Clients)(nil)

func TestClientsAsRESTClientGetter(t *testing.T) {
	c, err := NewClients(&rest.Config{Host: "https://127.0.0.1:1", BearerToken: "t"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := c.ToRESTConfig()
	if err != nil || cfg.Host != "https://127.0.0.1:1" || cfg == c.Config {
		t.Errorf("ToRESTConfig: %v, a copy of the configuration expected", err)
	}
	loaded, err := c.ToRawKubeConfigLoader().ClientConfig()
	if err != nil || loaded.Host != cfg.Host || loaded.BearerToken != "t" {
		t.Errorf("the raw loader of built clients yields %+v, %v", loaded, err)
	}
	if ns, _, err := c.ToRawKubeConfigLoader().Namespace(); err != nil || ns != "default" {
		t.Errorf("namespace %q, %v", ns, err)
	}
	if m, err := c.ToRESTMapper(); err != nil || m == nil {
		t.Errorf("ToRESTMapper: %v", err)
	}
}
