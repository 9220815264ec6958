package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeLookup reads pods and namespaces from the apiserver. It is plain
// REST rather than client-go's clientset, which would make every plugin
// run (one per pod start) load every API group.
type kubeLookup struct {
	host *url.URL
	hc   *http.Client
}

// maxObject bounds a pod or namespace read from the apiserver.
const maxObject = 4 << 20

func newKubeLookup(path string) (*kubeLookup, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = TypeName
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	host, err := url.Parse(cfg.Host)
	if err != nil {
		return nil, fmt.Errorf("apiserver address %q: %w", cfg.Host, err)
	}
	return &kubeLookup{host: host, hc: hc}, nil
}

func (k *kubeLookup) pod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	var p corev1.Pod
	err := k.get(ctx, &p, "api", "v1", "namespaces", ns, "pods", name)
	return &p, err
}

func (k *kubeLookup) namespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	var n corev1.Namespace
	err := k.get(ctx, &n, "api", "v1", "namespaces", name)
	return &n, err
}

func (k *kubeLookup) get(ctx context.Context, into any, elem ...string) error {
	u := k.host.JoinPath(elem...)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxObject+1))
	if err != nil {
		return fmt.Errorf("reading %s: %w", u.Path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var st struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(body, &st) == nil && st.Message != "" {
			return fmt.Errorf("apiserver: %s (%s)", st.Message, resp.Status)
		}
		return fmt.Errorf("apiserver answered %s for %s", resp.Status, u.Path)
	}
	if len(body) > maxObject {
		return fmt.Errorf("%s: object larger than %d bytes", u.Path, maxObject)
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("decoding %s: %w", u.Path, err)
	}
	return nil
}
