//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-go/baton/internal/contract"
	"github.com/baton-go/baton/internal/testenv"
)

// The container example (examples/docker) is checked by running what it
// says, with its paths mapped into a test directory: no image is built
// (that needs a Docker daemon) and no cluster applies the manifest; the
// commands, their flags and their order are baton's own and run here.

// dockerfileExec returns the exec form (a JSON array) of the Dockerfile's
// instruction (ENTRYPOINT, CMD), its lines joined, and the value of each
// ENV variable.
func dockerfileExec(t *testing.T, path, instruction string) ([]string, map[string]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var insts []string // each instruction on one line
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		cont := strings.HasSuffix(line, `\`)
		cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
		if !cont {
			insts = append(insts, strings.TrimSpace(cur.String()))
			cur.Reset()
		}
	}
	var form []string
	env := map[string]string{}
	for _, in := range insts {
		word, rest, _ := strings.Cut(in, " ")
		switch strings.ToUpper(word) {
		case instruction:
			if form != nil {
				t.Fatalf("%s: two %s instructions", path, instruction)
			}
			if err := json.Unmarshal([]byte(rest), &form); err != nil {
				t.Fatalf("%s: %s is not in exec form (a JSON array): %v: %s", path, instruction, err, rest)
			}
		case "ENV":
			for _, kv := range strings.Fields(rest) {
				if k, v, ok := strings.Cut(kv, "="); ok {
					env[k] = v
				}
			}
		}
	}
	if len(form) == 0 {
		t.Fatalf("%s: no %s", path, instruction)
	}
	return form, env
}

// k8sDeployment is the part of examples/docker/kubernetes.yaml the test runs.
type k8sDeployment struct {
	Kind string `json:"kind"`
	Spec struct {
		Template struct {
			Spec struct {
				TerminationGracePeriodSeconds int            `json:"terminationGracePeriodSeconds"`
				InitContainers                []k8sContainer `json:"initContainers"`
				Containers                    []k8sContainer `json:"containers"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

type k8sContainer struct {
	Name      string    `json:"name"`
	Command   []string  `json:"command"`
	Args      []string  `json:"args"`
	Startup   *k8sProbe `json:"startupProbe"`
	Liveness  *k8sProbe `json:"livenessProbe"`
	Readiness *k8sProbe `json:"readinessProbe"`
}

type k8sProbe struct {
	Exec *struct {
		Command []string `json:"command"`
	} `json:"exec"`
	HTTPGet *struct {
		Path string `json:"path"`
		Port any    `json:"port"`
	} `json:"httpGet"`
}

// readK8s parses the manifest with a real YAML parser (Python's, which
// ansible-core brings; baton's module has no YAML dependency).
func readK8s(t *testing.T, path string) k8sDeployment {
	t.Helper()
	py := testenv.Command(t, "python3", "python3-yaml")
	out, err := exec.Command(py, "-c", `import json, sys, yaml
json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)`, path).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		if bytes.Contains(stderr, []byte("No module named 'yaml'")) {
			testenv.Missing(t, "python3's yaml module (Debian package python3-yaml) is needed to parse kubernetes.yaml")
		}
		t.Fatalf("parsing %s: %v\n%s", path, err, stderr)
	}
	var docs []k8sDeployment
	if err := json.Unmarshal(out, &docs); err != nil {
		t.Fatal(err)
	}
	if len(docs) != 1 || docs[0].Kind != "Deployment" {
		t.Fatalf("%s: %d documents, want one Deployment", path, len(docs))
	}
	return docs[0]
}

// pathMap rewrites the image's paths and address into the test's.
type pathMap []string // old, new pairs, tried in order

func (m pathMap) args(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		for j := 0; j < len(m); j += 2 {
			a = strings.ReplaceAll(a, m[j], m[j+1])
		}
		out[i] = a
	}
	return out
}

// commandAfter returns the command line that follows marker in a comment
// of the file at path (backslash continuations joined), "#" and the
// marker left out.
func commandAfter(t *testing.T, path, marker string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		_, after, ok := strings.Cut(l, marker)
		if !ok {
			continue
		}
		cmd := after
		for strings.HasSuffix(strings.TrimSpace(cmd), `\`) && i+1 < len(lines) {
			i++
			cmd = strings.TrimSuffix(strings.TrimSpace(cmd), `\`) + " " + strings.TrimPrefix(strings.TrimSpace(lines[i]), "#")
		}
		return strings.Fields(cmd)
	}
	t.Fatalf("%s: no comment with %q", path, marker)
	return nil
}

// container is one process started as the image's PID 1 would be.
type container struct {
	cmd  *exec.Cmd
	log  bytes.Buffer
	done chan struct{}
	err  error
}

func startContainer(t *testing.T, env []string, args []string) *container {
	t.Helper()
	c := &container{cmd: exec.Command(args[0], args[1:]...), done: make(chan struct{})}
	c.cmd.Env = env
	c.cmd.Stdout, c.cmd.Stderr = &c.log, &c.log
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", strings.Join(args, " "), err)
	}
	// Not given to the tracker: it would reap the process before Wait.
	go func() { c.err = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		if !c.exited() {
			signalEach(syscall.SIGKILL, c.cmd.Process.Pid)
			<-c.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", args[0], pid1Tail(c.log.String(), 8000))
		}
	})
	return c
}

func (c *container) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM (docker stop, the kubelet) and waits up to grace for
// the exit, which must be 0 (every generation drained).
func (c *container) stop(t *testing.T, grace time.Duration) {
	t.Helper()
	if err := signalPID(t, c.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(grace):
		t.Fatalf("still running %v after SIGTERM (the grace period)", grace)
	}
	if c.err != nil {
		t.Fatalf("exit after SIGTERM: %v, want 0", c.err)
	}
}

// runProbe runs an exec probe's command: its exit code and output.
func runProbe(ctx context.Context, env, args []string) (int, string) {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		return -1, err.Error()
	}
	return 0, string(out)
}

// probeClient opens a connection per request, as a probe does: no idle
// connection is left for a drain to wait for.
var probeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// getVersion GETs path from addr: the status and the X-Version header.
func getVersion(addr, path string) (int, string, error) {
	resp, err := probeClient.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Version"), nil
}

// TestContainerExample runs examples/docker as the image and the
// Deployment would: the Dockerfile's ENTRYPOINT + CMD serves and stops
// with exit 0 on SIGTERM; then the pod: the init container's baton install
// (checksum checked), ENTRYPOINT + the container's args, the startup and
// liveness probes' commands (exit 3 before the service runs, exit 0 once
// it serves: their flags parse), the readiness probe's GET, the in-place
// upgrade command of the manifest's comment with a v2 release on the
// volume, and SIGTERM within terminationGracePeriodSeconds, exit 0.
func TestContainerExample(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dockerfile := filepath.Join(root, "examples", "docker", "Dockerfile")
	manifest := filepath.Join(root, "examples", "docker", "kubernetes.yaml")
	entrypoint, env := dockerfileExec(t, dockerfile, "ENTRYPOINT")
	cmdArgs, _ := dockerfileExec(t, dockerfile, "CMD")
	if env[contract.EnvRuntimeDir] == "" {
		t.Fatalf("the Dockerfile sets no %s", contract.EnvRuntimeDir)
	}
	dep := readK8s(t, manifest)
	pod := dep.Spec.Template.Spec
	if len(pod.InitContainers) != 1 || len(pod.Containers) != 1 {
		t.Fatalf("the Deployment has %d init containers and %d containers, want 1 and 1", len(pod.InitContainers), len(pod.Containers))
	}
	app := pod.Containers[0]
	if app.Startup == nil || app.Startup.Exec == nil || app.Liveness == nil || app.Liveness.Exec == nil ||
		app.Readiness == nil || app.Readiness.HTTPGet == nil || len(app.Command) != 0 {
		t.Fatalf("the container has no exec startup and liveness probes, no httpGet readiness probe, or a command of its own (the ENTRYPOINT is baton run): %+v", app)
	}
	grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second
	if grace <= 0 {
		t.Fatalf("terminationGracePeriodSeconds %d", pod.TerminationGracePeriodSeconds)
	}

	dir := t.TempDir()
	for _, d := range []string{"app/bin", "releases/current", "srv/hello"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	imageHello := filepath.Join(dir, "app", "bin", "hello")
	installCopy(t, bins["hello"], imageHello)
	mapFor := func(addr string) pathMap {
		return pathMap{
			"/app/bin/baton", bins["baton"], "/app/bin/hello", imageHello, env[contract.EnvRuntimeDir], filepath.Join(dir, "run"),
			"/srv/hello", filepath.Join(dir, "srv", "hello"), "/releases", filepath.Join(dir, "releases"),
			"0.0.0.0:8080", addr,
		}
	}
	environ := func(m pathMap) []string {
		return append(os.Environ(), contract.EnvRuntimeDir+"="+m.args([]string{env[contract.EnvRuntimeDir]})[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The image as `docker run` starts it.
	addr := freeAddr(t, "tcp")
	m := mapFor(addr)
	ctr := startContainer(t, environ(m), m.args(append(entrypoint, cmdArgs...)))
	waitFor(t, 30*time.Second, "the image's ENTRYPOINT + CMD serving", func() bool {
		code, v, err := getVersion(addr, "/")
		return (err == nil && code == http.StatusOK && v == "v1") || ctr.exited()
	})
	if ctr.exited() {
		t.Fatalf("ENTRYPOINT + CMD exited: %v", ctr.err)
	}
	ctr.stop(t, grace)

	// The pod. The release volume: current/hello and its SHA256SUMS.
	addr = freeAddr(t, "tcp")
	m = mapFor(addr)
	penv := environ(m)
	current := filepath.Join(dir, "releases", "current")
	putRelease := func(bin string) {
		t.Helper()
		installCopy(t, bin, filepath.Join(current, "hello"))
		if err := os.WriteFile(filepath.Join(current, "SHA256SUMS"), []byte(sha(t, bin)+"  hello\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	putRelease(bins["hello"])
	initCmd := m.args(pod.InitContainers[0].Command)
	if code, out := runProbe(ctx, penv, initCmd); code != 0 {
		t.Fatalf("the init container (%s): exit %d: %s", strings.Join(initCmd, " "), code, out)
	}
	installed := filepath.Join(dir, "srv", "hello", "app", "hello")
	if sha(t, installed) != sha(t, bins["hello"]) {
		t.Fatalf("the init container did not install the current release at %s", installed)
	}
	// A container restart runs it again: the same release is left as it is.
	if code, out := runProbe(ctx, penv, initCmd); code != 0 {
		t.Fatalf("the init container, again: exit %d: %s", code, out)
	}

	startup, liveness := m.args(app.Startup.Exec.Command), m.args(app.Liveness.Exec.Command)
	for _, p := range [][]string{startup, liveness} {
		if code, out := runProbe(ctx, penv, p); code != contract.ExitUnreachable {
			t.Errorf("%s before the service runs: exit %d, want %d (nothing answers; 2 would be a usage error): %s",
				strings.Join(p, " "), code, contract.ExitUnreachable, out)
		}
	}
	ctr = startContainer(t, penv, m.args(append(entrypoint, app.Args...)))
	waitFor(t, 30*time.Second, "the startup probe passing", func() bool {
		code, _ := runProbe(ctx, penv, startup)
		return code == 0 || ctr.exited()
	})
	if ctr.exited() {
		t.Fatalf("the container exited: %v", ctr.err)
	}
	if code, out := runProbe(ctx, penv, liveness); code != 0 {
		t.Errorf("the liveness probe: exit %d: %s", code, out)
	}
	port := fmt.Sprint(app.Readiness.HTTPGet.Port)
	if port != "http" {
		t.Fatalf("the readiness probe's port %q, want the named port http (8080)", port)
	}
	if code, v, err := getVersion(addr, app.Readiness.HTTPGet.Path); err != nil || code != http.StatusOK || v != "v1" {
		t.Errorf("the readiness probe GET %s: %d %q %v, want 200 from v1", app.Readiness.HTTPGet.Path, code, v, err)
	}

	// The in-place upgrade the manifest documents, v2 on the volume.
	putRelease(bins["hello-v2"])
	up := commandAfter(t, manifest, "kubectl exec POD -c hello -- ")
	if len(up) == 0 || up[0] != "baton" {
		t.Fatalf("the upgrade command of the manifest's comment: %q", up)
	}
	up = m.args(append([]string{bins["baton"]}, up[1:]...))
	if code, out := runProbe(ctx, penv, up); code != 0 {
		t.Fatalf("%s: exit %d: %s", strings.Join(up, " "), code, out)
	}
	if code, v, err := getVersion(addr, "/"); err != nil || code != http.StatusOK || v != "v2" {
		t.Errorf("after the upgrade: %d %q %v, want 200 from v2", code, v, err)
	}
	if sha(t, installed) != sha(t, bins["hello-v2"]) {
		t.Errorf("the upgrade did not install v2 at %s", installed)
	}
	if code, out := runProbe(ctx, penv, liveness); code != 0 {
		t.Errorf("the liveness probe after the upgrade: exit %d: %s", code, out)
	}
	status := exec.CommandContext(ctx, bins["baton"], "status", "--name", "hello", "--json")
	status.Env = penv
	if st, err := status.Output(); err == nil {
		var s contract.Status
		if json.Unmarshal(st, &s) == nil && s.PID > 0 {
			tracker.Track(s.PID)
		}
		t.Logf("after the upgrade: generation %d, pid %d", s.Generation, s.PID)
	}
	ctr.stop(t, grace)
	if !strings.Contains(ctr.log.String(), "drained") {
		t.Errorf("no generation reported its drain")
	}
	t.Logf("ENTRYPOINT %q, CMD %q, container args %q, probes %q %q, upgrade %q, grace %v", entrypoint, cmdArgs, app.Args,
		app.Startup.Exec.Command, app.Liveness.Exec.Command, up[1:], grace)
}
