package installer

import (
	"fmt"
	"net"
	"os"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Credentials are what the plugin's kubeconfig is built from: the node
// agent's own service-account token and the cluster CA.
type Credentials struct {
	// Server is the apiserver URL ("https://10.96.0.1:443").
	Server string
	// TokenFile and CAFile are the agent's projected service-account files.
	TokenFile, CAFile string
}

// DefaultServer builds the apiserver URL from KUBERNETES_SERVICE_HOST and
// KUBERNETES_SERVICE_PORT, as in-cluster clients do; "" outside a pod.
func DefaultServer() string {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return ""
	}
	return "https://" + net.JoinHostPort(host, port)
}

// kubeconfig renders the plugin's kubeconfig, with the token and CA inline
// because the plugin runs on the host, outside the agent's pod.
func (c Credentials) kubeconfig() ([]byte, error) {
	if c.Server == "" {
		return nil, fmt.Errorf("no apiserver address for the plugin's kubeconfig")
	}
	token, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("reading service-account token: %w", err)
	}
	tok := strings.TrimSpace(string(token))
	if tok == "" {
		return nil, fmt.Errorf("service-account token %s is empty", c.TokenFile)
	}
	cluster := &clientcmdapi.Cluster{Server: c.Server}
	if c.CAFile != "" {
		ca, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading cluster CA: %w", err)
		}
		cluster.CertificateAuthorityData = ca
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = cluster
	cfg.AuthInfos["skiff-cni"] = &clientcmdapi.AuthInfo{Token: tok}
	cfg.Contexts["skiff-cni"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "skiff-cni"}
	cfg.CurrentContext = "skiff-cni"
	return clientcmd.Write(*cfg)
}
