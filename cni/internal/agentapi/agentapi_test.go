package agentapi

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	good := func() AddRequest {
		return AddRequest{
			Pod:         Pod{Name: "web-0", Namespace: "app", UID: "u1", ServiceAccount: "web"},
			Netns:       "/var/run/netns/cni-1",
			ContainerID: "c1",
			IPs:         []netip.Addr{netip.MustParseAddr("10.0.0.2")},
		}
	}
	tests := []struct {
		name    string
		mutate  func(*AddRequest)
		wantErr string
	}{
		{"valid", func(*AddRequest) {}, ""},
		{"bad name", func(r *AddRequest) { r.Pod.Name = "Web" }, "pod name"},
		{"bad namespace", func(r *AddRequest) { r.Pod.Namespace = "a.b" }, "namespace"},
		{"no uid", func(r *AddRequest) { r.Pod.UID = "" }, "UID"},
		{"bad service account", func(r *AddRequest) { r.Pod.ServiceAccount = "A" }, "service account"},
		{"relative netns", func(r *AddRequest) { r.Netns = "netns/x" }, "absolute"},
		{"unclean netns", func(r *AddRequest) { r.Netns = "/var/run/../netns/x" }, "clean"},
		{"no container", func(r *AddRequest) { r.ContainerID = "" }, "container"},
		{"loopback ip", func(r *AddRequest) { r.IPs = []netip.Addr{netip.MustParseAddr("127.0.0.1")} }, "address"},
		{"zero ip", func(r *AddRequest) { r.IPs = []netip.Addr{{}} }, "address"},
	}
	for _, tc := range tests {
		r := good()
		tc.mutate(&r)
		err := r.Validate()
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.wantErr)
		}
	}
	d := DelRequest{Pod: Pod{Name: "web-0", Namespace: "app"}}
	if err := d.Validate(); err != nil {
		t.Errorf("del without netns or uid: %v", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, in := range []string{`{"pod":{"name":"a"},"extra":1}`, `{"pod":{}} {}`, `[`, strings.Repeat(" ", maxBody+1) + "{}"} {
		var r AddRequest
		if err := Decode(strings.NewReader(in), &r); err == nil {
			t.Errorf("Decode accepted %.40q", in)
		}
	}
}

func FuzzDecodeAddRequest(f *testing.F) {
	f.Add([]byte(`{"pod":{"name":"web","namespace":"app","uid":"u"},"netns":"/var/run/netns/x","containerID":"c","ips":["10.0.0.1"]}`))
	f.Add([]byte(`{"pod":{"name":"web","namespace":"app"},"ips":["::1","x"]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var r AddRequest
		if err := Decode(bytes.NewReader(in), &r); err != nil {
			return
		}
		if r.Validate() == nil && (r.Pod.UID == "" || r.Netns == "" || r.Netns[0] != '/') {
			t.Fatalf("validated a request missing required fields: %+v", r)
		}
	})
}
