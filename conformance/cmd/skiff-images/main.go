// Command skiff-images builds the container images of the local test cluster
// from static binaries, without a registry, and loads them into the
// containerd of every node of the cluster made by conformance/cluster/up.sh.
//
// Each image is one layer on an empty base, written as an OCI image layout
// tar archive (under <cache>/images) and imported with
// `ctr -a <node socket> -n k8s.io images import`. Pods use them with
// imagePullPolicy IfNotPresent (or Never).
//
// Images:
//
//	registry.k8s.io/pause:3.10      conformance/images/pause (the sandbox image containerd is configured with)
//	skiff.local/echo:dev            conformance/testapps/echo
//	skiff.local/toolbox:dev         busybox-static (sh, wget, nslookup, ...) + echo
//	skiff.local/coredns:<version>   CoreDNS built by build-k8s.sh
//	skiff.local/<component>:dev     Skiff's binaries (istiod-lite, ztunnel, waypoint,
//	                                cni), each component's binaries in one image
//	registry.k8s.io/gateway-api/echo-advanced:v1.5.1
//	                                Istio's echo app (with -istio; slow the first time)
//
// Run it from the repository (it builds with the go tool): go run ./conformance/cmd/skiff-images
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// PauseImage is the sandbox image name; up.sh configures containerd with it.
const PauseImage = "registry.k8s.io/pause:3.10"

// skiffComponents are Skiff's own images, skiff.local/<name>:dev: every
// binary of the component side by side in /, the first one the entry point.
// A component whose first package does not exist yet is skipped.
var skiffComponents = []struct {
	name string
	pkgs []string // relative to the repository root
}{
	{"istiod-lite", []string{"istiod-lite"}},
	{"ztunnel", []string{"ztunnel"}},
	{"waypoint", []string{"waypoint"}},
	// The node agent installs the plugin binary found next to itself.
	{"cni", []string{"cni/cmd/skiff-cni-agent", "cni/cmd/skiff-cni"}},
}

// file is one file of an image layer.
type file struct {
	path    string // inside the image, without leading slash
	data    []byte
	mode    int64
	symlink string // when not empty, path is a symlink to this target
}

type image struct {
	name       string
	files      []file
	entrypoint []string
	cmd        []string
}

func main() {
	log.SetFlags(0)
	cache := os.Getenv("SKIFF_CACHE")
	if cache == "" {
		c, err := os.UserCacheDir()
		if err != nil {
			log.Fatal(err)
		}
		cache = filepath.Join(c, "skiff")
	}
	state := envOr("SKIFF_STATE", "/var/lib/skiff-cluster")
	var (
		out      = flag.String("out", filepath.Join(cache, "images"), "directory for the image archives")
		stateDir = flag.String("state", state, "cluster state directory (its nodes file lists the containerd sockets)")
		noImport = flag.Bool("no-import", false, "only write the archives")
		only     = flag.String("only", "", "comma-separated image names (or name prefixes) to build; default all")
		coredns  = flag.String("coredns", filepath.Join(cache, "coredns-"+envOr("COREDNS_VERSION", "v1.14.7"), "bin", "coredns"), "CoreDNS binary")
		busybox  = flag.String("busybox", "/bin/busybox", "static busybox binary (Debian package busybox-static)")
		istio    = flag.Bool("istio", false, "also build Istio's echo app as the Gateway API conformance echo-advanced image")
		istioVer = flag.String("istio-version", envOr("ISTIO_VERSION", "v0.0.0-20260827124520-eed52ebb66ad"), "istio.io/istio module version (the one the interop suite pins)")
		istioImg = flag.String("istio-image", envOr("ECHO_ADVANCED_IMAGE", "registry.k8s.io/gateway-api/echo-advanced:v1.5.1"), "name of the echo-advanced image (the one the Gateway API conformance suite's mesh manifests use)")
	)
	flag.Parse()

	root, err := repoRoot()
	if err != nil {
		log.Fatal(err)
	}
	tmp, err := os.MkdirTemp("", "skiff-images-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}

	want := func(name string) bool {
		if *only == "" {
			return true
		}
		for _, o := range strings.Split(*only, ",") {
			if o != "" && strings.HasPrefix(name, o) {
				return true
			}
		}
		return false
	}

	var imgs []image
	step := func(what string, f func() error) {
		t := time.Now()
		if err := f(); err != nil {
			log.Fatalf("skiff-images: %s: %v", what, err)
		}
		fmt.Printf("  %-60s %5.1fs\n", what, time.Since(t).Seconds())
	}

	// Every binary the chosen images need comes from one go build: shared
	// packages compile once and the links run side by side.
	var comps []int
	pkgs := []string{"conformance/images/pause", "conformance/testapps/echo"}
	for i, c := range skiffComponents {
		if !want("skiff.local/" + c.name + ":dev") {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, c.pkgs[0], "main.go")); err != nil {
			continue
		}
		comps = append(comps, i)
		pkgs = append(pkgs, c.pkgs...)
	}
	bins := map[string][]byte{}
	step("build "+strings.Join(binNames(pkgs), ", "), func() error {
		var err error
		bins, err = goBuild(root, tmp, pkgs)
		return err
	})
	if want(PauseImage) {
		imgs = append(imgs, image{name: PauseImage, files: []file{exe("pause", bins["pause"])}, entrypoint: []string{"/pause"}})
	}
	if want("skiff.local/echo") {
		imgs = append(imgs, image{name: "skiff.local/echo:dev", files: []file{exe("echo", bins["echo"])},
			entrypoint: []string{"/echo"}, cmd: []string{"serve"}})
	}
	if want("skiff.local/toolbox") {
		step("toolbox", func() error {
			tb, err := toolbox(*busybox, bins["echo"])
			if err != nil {
				return err
			}
			imgs = append(imgs, image{name: "skiff.local/toolbox:dev", files: tb, cmd: []string{"/bin/sh"}})
			return nil
		})
	}
	if want("skiff.local/coredns") {
		step("coredns", func() error {
			b, err := os.ReadFile(*coredns)
			if err != nil {
				return fmt.Errorf("%w (build it with conformance/cluster/build-k8s.sh)", err)
			}
			ver := strings.TrimPrefix(filepath.Base(filepath.Dir(filepath.Dir(*coredns))), "coredns-")
			imgs = append(imgs, image{name: "skiff.local/coredns:" + ver, files: []file{exe("coredns", b)},
				entrypoint: []string{"/coredns"}})
			return nil
		})
	}
	for _, i := range comps {
		c := skiffComponents[i]
		im := image{name: "skiff.local/" + c.name + ":dev", entrypoint: []string{"/" + filepath.Base(c.pkgs[0])},
			files: []file{{path: "tmp/", mode: 0o1777}}}
		for _, p := range c.pkgs {
			im.files = append(im.files, exe(filepath.Base(p), bins[filepath.Base(p)]))
		}
		imgs = append(imgs, im)
	}
	if *istio {
		step("istio echo (echo-advanced)", func() error {
			files, err := istioEcho(cache, tmp, *istioVer)
			if err != nil {
				return err
			}
			imgs = append(imgs, image{
				name:       *istioImg,
				files:      files,
				entrypoint: []string{"/usr/local/bin/server"},
			})
			return nil
		})
	}

	var archives []string
	step(fmt.Sprintf("write %d image archives to %s", len(imgs), *out), func() error {
		for _, im := range imgs {
			p := filepath.Join(*out, archiveName(im.name))
			if err := writeArchive(im, p, tmp); err != nil {
				return fmt.Errorf("%s: %w", im.name, err)
			}
			archives = append(archives, p)
		}
		return nil
	})
	if *noImport {
		return
	}
	nodes, err := readNodes(filepath.Join(*stateDir, "nodes"))
	if err != nil {
		log.Fatalf("skiff-images: %v (is the cluster up? use -no-import to only write archives)", err)
	}
	for _, n := range nodes {
		step("import into "+n.name, func() error {
			for _, a := range archives {
				// ctr unpacks into the default snapshotter (overlayfs) on import.
				cmd := exec.Command("ctr", "-a", n.socket, "-n", "k8s.io", "images", "import", a)
				if out, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("ctr import %s: %v\n%s", a, err, out)
				}
			}
			return nil
		})
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run skiff-images inside the Skiff repository")
	}
	return filepath.Dir(mod), nil
}

// goBuild builds static binaries of pkgs (relative to dir) in one go build
// and returns their bytes by binary name (the last element of the path).
func goBuild(dir, tmp string, pkgs []string) (map[string][]byte, error) {
	o := filepath.Join(tmp, "bin")
	if err := os.MkdirAll(o, 0o755); err != nil {
		return nil, err
	}
	args := []string{"build", "-trimpath", "-ldflags=-s -w", "-o", o + "/"}
	for _, p := range pkgs {
		args = append(args, "./"+p)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	bins := map[string][]byte{}
	for _, name := range binNames(pkgs) {
		b, err := os.ReadFile(filepath.Join(o, name))
		if err != nil {
			return nil, err
		}
		bins[name] = b
	}
	return bins, nil
}

func binNames(pkgs []string) []string {
	names := make([]string, len(pkgs))
	for i, p := range pkgs {
		names[i] = filepath.Base(p)
	}
	return names
}

func exe(name string, b []byte) file { return file{path: name, data: b, mode: 0o755} }

// toolbox is busybox with its applet links, plus the echo binary.
func toolbox(busybox string, echo []byte) ([]file, error) {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("%w (apt-get install busybox-static)", err)
	}
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", busybox, err)
	}
	files := []file{
		{path: "bin/busybox", data: bb, mode: 0o755},
		exe("usr/local/bin/echo-app", echo),
		{path: "tmp/", mode: 0o1777},
		// root's home: busybox wget crashes when $HOME does not exist.
		{path: "root/", mode: 0o700},
		{path: "etc/passwd", data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"), mode: 0o644},
		{path: "etc/group", data: []byte("root:x:0:\nnobody:x:65534:\n"), mode: 0o644},
	}
	seen := map[string]bool{"bin/busybox": true}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		p := strings.TrimPrefix(strings.TrimSpace(sc.Text()), "/")
		if p == "" || seen[p] {
			continue
		}
		seen[p] = true
		files = append(files, file{path: p, symlink: "/bin/busybox", mode: 0o777})
	}
	return files, nil
}

// layerTar makes an uncompressed tar of files, with the parent directories.
func layerTar(files []file) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	epoch := time.Unix(0, 0)
	var addDirs func(p string) error
	addDirs = func(p string) error {
		d := filepath.Dir(p)
		if d == "." || d == "/" || dirs[d] {
			return nil
		}
		if err := addDirs(d); err != nil {
			return err
		}
		dirs[d] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch})
	}
	sort.SliceStable(files, func(i, j int) bool { return files[i].path < files[j].path })
	for _, f := range files {
		p := strings.TrimSuffix(f.path, "/")
		if err := addDirs(p); err != nil {
			return nil, err
		}
		h := &tar.Header{Name: p, Mode: f.mode, ModTime: epoch}
		switch {
		case strings.HasSuffix(f.path, "/"):
			if dirs[p] {
				continue
			}
			dirs[p] = true
			h.Typeflag, h.Name = tar.TypeDir, p+"/"
		case f.symlink != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.symlink
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func buildImage(im image) (v1.Image, error) {
	lt, err := layerTar(im.files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(lt)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = im.entrypoint
	cf.Config.Cmd = im.cmd
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
	cf.Config.WorkingDir = "/"
	return mutate.ConfigFile(img, cf)
}

func archiveName(name string) string {
	r := strings.NewReplacer("/", "_", ":", "_")
	return r.Replace(name) + ".oci.tar"
}

// writeArchive writes im as a tar of an OCI image layout whose index names
// the image the way containerd's importer reads it.
func writeArchive(im image, dst, tmp string) error {
	img, err := buildImage(im)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(tmp, "layout-")
	if err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	tag := im.name[strings.LastIndex(im.name, ":")+1:]
	if err := p.AppendImage(img,
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}),
		layout.WithAnnotations(map[string]string{
			"io.containerd.image.name":          im.name,
			"org.opencontainers.image.ref.name": tag,
		})); err != nil {
		return err
	}
	f, err := os.Create(dst + ".tmp")
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755})
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o644, Size: int64(len(b))}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(dst+".tmp", dst)
}

type node struct{ name, socket string }

// readNodes parses the state dir's nodes file: "<name> <containerd socket>" per line.
func readNodes(p string) ([]node, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var ns []node
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 {
			ns = append(ns, node{f[0], f[1]})
		}
	}
	if len(ns) == 0 {
		return nil, fmt.Errorf("%s lists no nodes", p)
	}
	return ns, nil
}

// istioEcho builds Istio's echo server and client (istio.io/istio/pkg/test/echo/cmd/...)
// through a wrapper module in the cache, keyed by the istio.io/istio version,
// and returns the image files: /usr/local/bin/server and /usr/local/bin/client.
func istioEcho(cache, tmp, ver string) ([]file, error) {
	base := filepath.Join(cache, "istio-echo")
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, err
	}
	src := filepath.Join(base, ver, "src")
	bin := filepath.Join(base, ver, "bin")
	server, client := filepath.Join(bin, "server"), filepath.Join(bin, "client")
	if _, err := os.Stat(client); err != nil {
		if err := os.MkdirAll(src, 0o755); err != nil {
			return nil, err
		}
		// Dependencies' replace directives are ignored by Go, so copy the
		// (non-local) ones of istio's own go.mod into the wrapper.
		cmd := exec.Command("go", "mod", "download", "-json", "istio.io/istio@"+ver)
		cmd.Dir = tmp
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("go mod download istio.io/istio@%s: %w", ver, err)
		}
		var replaces []string
		if i := bytes.Index(out, []byte(`"GoMod": "`)); i >= 0 {
			rest := out[i+len(`"GoMod": "`):]
			gomod, err := os.ReadFile(string(rest[:bytes.IndexByte(rest, '"')]))
			if err != nil {
				return nil, err
			}
			inBlock := false
			for _, l := range strings.Split(string(gomod), "\n") {
				t := strings.TrimSpace(l)
				switch {
				case t == "replace (":
					inBlock = true
				case inBlock && t == ")":
					inBlock = false
				case strings.HasPrefix(t, "replace ") && strings.Contains(t, "=>"):
					t = strings.TrimSpace(strings.TrimPrefix(t, "replace "))
					fallthrough
				case inBlock && strings.Contains(t, "=>"):
					if r := strings.TrimSpace(t[strings.Index(t, "=>")+2:]); !strings.HasPrefix(r, ".") {
						replaces = append(replaces, "replace "+t)
					}
				}
			}
		}
		gm := "module skiff.local/istioecho\n\ngo 1.26\n\nrequire istio.io/istio " + ver + "\n\n" + strings.Join(replaces, "\n") + "\n"
		tools := "//go:build tools\n\npackage tools\n\nimport (\n\t_ \"istio.io/istio/pkg/test/echo/cmd/client\"\n\t_ \"istio.io/istio/pkg/test/echo/cmd/server\"\n)\n"
		if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte(gm), 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(src, "tools.go"), []byte(tools), 0o644); err != nil {
			return nil, err
		}
		run := func(args ...string) error {
			c := exec.Command("go", args...)
			c.Dir = src
			c.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
			if o, err := c.CombinedOutput(); err != nil {
				return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, o)
			}
			return nil
		}
		if err := run("mod", "tidy"); err != nil {
			return nil, err
		}
		for name, pkg := range map[string]string{server: "istio.io/istio/pkg/test/echo/cmd/server", client: "istio.io/istio/pkg/test/echo/cmd/client"} {
			if err := run("build", "-trimpath", "-ldflags=-s -w", "-o", name, pkg); err != nil {
				return nil, err
			}
		}
	}
	s, err := os.ReadFile(server)
	if err != nil {
		return nil, err
	}
	c, err := os.ReadFile(client)
	if err != nil {
		return nil, err
	}
	crt, key, err := echoCert(bin)
	if err != nil {
		return nil, err
	}
	return []file{
		exe("usr/local/bin/server", s), exe("usr/local/bin/client", c), {path: "tmp/", mode: 0o1777},
		// The conformance manifests start the server with --crt=/cert.crt --key=/cert.key.
		{path: "cert.crt", data: crt, mode: 0o644}, {path: "cert.key", data: key, mode: 0o644},
	}, nil
}

// echoCert returns the echo app's self-signed serving certificate and key,
// made once and kept in dir so rebuilt images stay identical.
func echoCert(dir string) (crt, key []byte, err error) {
	cp, kp := filepath.Join(dir, "cert.crt"), filepath.Join(dir, "cert.key")
	crt, err1 := os.ReadFile(cp)
	key, err2 := os.ReadFile(kp)
	if err1 == nil && err2 == nil {
		return crt, key, nil
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "echo"},
		DNSNames:     []string{"echo", "*.gateway-conformance-mesh.svc.cluster.local", "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, nil, fmt.Errorf("echo certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	crt = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	key = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	if err := os.WriteFile(cp, crt, 0o644); err != nil {
		return nil, nil, err
	}
	return crt, key, os.WriteFile(kp, key, 0o600)
}
