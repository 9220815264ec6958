package plugin

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

const prev = `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],"ips":[{"address":"10.1.2.3/24","gateway":"10.1.2.1","interface":0},{"address":"fd00::3/64","interface":0}]}`

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
		check   func(*testing.T, *Config)
	}{
		{name: "defaults", in: `{"cniVersion":"1.0.0","name":"net","type":"skiff-cni"}`, check: func(t *testing.T, c *Config) {
			if c.AgentSocket == "" || c.Kubeconfig != DefaultKubeconfig || c.timeout != DefaultTimeout ||
				!slices.Equal(c.ExcludeNamespaces, []string{"kube-system"}) || c.PrevResult != nil {
				t.Fatalf("defaults not applied: %+v", c)
			}
		}},
		{name: "all fields", in: `{"cniVersion":"1.1.0","name":"net","type":"skiff-cni","agentSocket":"/run/a.sock","kubeconfig":"/etc/k","excludeNamespaces":[],"timeout":"5s","prevResult":` + prev + `,"runtimeConfig":{"x":1}}`,
			check: func(t *testing.T, c *Config) {
				if c.AgentSocket != "/run/a.sock" || c.Kubeconfig != "/etc/k" || len(c.ExcludeNamespaces) != 0 || c.timeout.Seconds() != 5 {
					t.Fatalf("fields not read: %+v", c)
				}
				if string(c.PrevResult) != prev {
					t.Fatalf("prevResult changed: %s", c.PrevResult)
				}
				ips, err := c.PrevIPs()
				if err != nil || !slices.Equal(ips, []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fd00::3")}) {
					t.Fatalf("PrevIPs = %v, %v", ips, err)
				}
			}},
		{name: "null prevResult", in: `{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","prevResult":null}`, check: func(t *testing.T, c *Config) {
			if c.PrevResult != nil {
				t.Fatalf("prevResult %q, want none", c.PrevResult)
			}
		}},
		{name: "not json", in: `{"cniVersion":`, wantErr: "decoding"},
		{name: "no version", in: `{"name":"n","type":"skiff-cni"}`, wantErr: "cniVersion"},
		{name: "bad version", in: `{"cniVersion":"x.y","name":"n","type":"skiff-cni"}`, wantErr: "version"},
		{name: "other type", in: `{"cniVersion":"1.0.0","name":"n","type":"bridge"}`, wantErr: "plugin type"},
		{name: "relative socket", in: `{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","agentSocket":"a.sock"}`, wantErr: "absolute"},
		{name: "bad namespace", in: `{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","excludeNamespaces":["Kube_System"]}`, wantErr: "excluded namespace"},
		{name: "bad timeout", in: `{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","timeout":"-1s"}`, wantErr: "timeout"},
		{name: "wrong field type", in: `{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","excludeNamespaces":"kube-system"}`, wantErr: "decoding"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestPrevIPsMalformed(t *testing.T) {
	for _, p := range []string{`{"ips":[{"address":"nope"}]}`, `[]`, `{"cniVersion":"1.0.0","ips":"x"}`} {
		c, err := ParseConfig([]byte(`{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","prevResult":` + p + `}`))
		if err != nil {
			continue
		}
		if _, err := c.PrevIPs(); err == nil {
			t.Errorf("PrevIPs accepted %s", p)
		}
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		in      string
		want    Args
		wantErr string
	}{
		{in: "", want: Args{}},
		{in: "IgnoreUnknown=1;K8S_POD_NAMESPACE=app;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1",
			want: Args{PodName: "web-0", PodNamespace: "app", PodUID: "u-1", InfraContainerID: "abc"}},
		{in: "K8S_POD_NAMESPACE=app;K8S_POD_NAME=web-0;", want: Args{PodName: "web-0", PodNamespace: "app"}},
		{in: "FOO=bar", want: Args{}},
		{in: "K8S_POD_NAME", wantErr: "malformed"},
		{in: "=x", wantErr: "malformed"},
		{in: "K8S_POD_NAME=a;K8S_POD_NAME=b;K8S_POD_NAMESPACE=c", wantErr: "twice"},
		{in: "K8S_POD_NAME=Bad_Name;K8S_POD_NAMESPACE=app", wantErr: "K8S_POD_NAME"},
		{in: "K8S_POD_NAME=a;K8S_POD_NAMESPACE=a.b", wantErr: "K8S_POD_NAMESPACE"},
		{in: "K8S_POD_NAME=a", wantErr: "together"},
		{in: "K8S_POD_NAME=a;K8S_POD_NAMESPACE=b;K8S_POD_UID=" + strings.Repeat("u", 129), wantErr: "UID"},
	}
	for _, tc := range tests {
		got, err := ParseArgs(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseArgs(%q) err = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseArgs(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"net","type":"skiff-cni","prevResult":` + prev + `}`))
	f.Add([]byte(`{"cniVersion":"0.4.0","name":"net","type":"skiff-cni","prevResult":{"ips":[{"version":"4","address":"10.0.0.2/24"}]}}`))
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"net","type":"skiff-cni","excludeNamespaces":["a"],"timeout":"1s"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := ParseConfig(in)
		if err != nil {
			return
		}
		if c.Type != TypeName || c.timeout <= 0 || c.AgentSocket == "" {
			t.Fatalf("accepted config lacks required fields: %+v", c)
		}
		_, _ = c.PrevIPs()
	})
}

func FuzzParseArgs(f *testing.F) {
	f.Add("IgnoreUnknown=1;K8S_POD_NAMESPACE=app;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u")
	f.Add("K8S_POD_NAME=a;;K8S_POD_NAMESPACE=b=c")
	f.Add("=;=")
	f.Fuzz(func(t *testing.T, in string) {
		a, err := ParseArgs(in)
		if err != nil {
			return
		}
		if (a.PodName == "") != (a.PodNamespace == "") {
			t.Fatalf("accepted half a pod: %+v", a)
		}
		if strings.ContainsAny(a.PodName+a.PodNamespace, ";=") {
			t.Fatalf("separator leaked into a name: %+v", a)
		}
	})
}
