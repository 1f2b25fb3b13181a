package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sluice-stream/sluice/pkg/blobstore"
)

// S3Server is a real S3 server for tests: versitygw (github.com/versity/versitygw)
// with its posix backend on a temporary directory, on a free loopback port, as a
// separate process that stops when the test ends.
type S3Server struct {
	// Endpoint is the server's URL, e.g. "http://127.0.0.1:40123".
	Endpoint string
	// AccessKey and SecretKey are the root credentials.
	AccessKey, SecretKey string
	// Dir is the directory the posix backend serves: Dir/<bucket>/<key>.
	Dir string
}

// S3Region is the region the test server and its URLs use.
const S3Region = "us-east-1"

// SkipS3 skips t when S3 tests are off: under -short, or with SLUICE_SKIP_S3=1.
func SkipS3(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("S3 tests skipped under -short (they run versitygw, a real S3 server)")
	}
	if os.Getenv("SLUICE_SKIP_S3") == "1" {
		t.Skip("S3 tests skipped: SLUICE_SKIP_S3=1")
	}
}

// StartS3 starts versitygw for the test, or skips it (see SkipS3). The binary comes
// from $SLUICE_VERSITYGW if set, else from scripts/versitygw.sh, which installs the
// pinned version into a cache the first time (that takes a few minutes). StartS3 sets
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the test (t.Setenv), which is how
// gocloud's s3blob finds the credentials (so t and its ancestors must not be parallel
// tests), and stops the server with t.Cleanup; on Linux the kernel kills the server
// too if the test process dies.
func StartS3(t *testing.T) *S3Server {
	t.Helper()
	SkipS3(t)
	bin := versitygwBinary(t)
	srv := &S3Server{AccessKey: "sluice-access-key", SecretKey: "sluice-secret-key", Dir: t.TempDir()}
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(srv.Dir, "no-aws-config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(srv.Dir, "no-aws-credentials"))

	// A free port can be taken between choosing and binding it: try a few.
	var lastErr error
	for range 3 {
		addr, err := freeLoopbackAddr()
		if err != nil {
			t.Fatalf("blobtest: no free loopback port: %v", err)
		}
		if lastErr = srv.start(t, bin, addr); lastErr == nil {
			return srv
		}
	}
	t.Fatalf("blobtest: starting versitygw: %v", lastErr)
	return nil
}

func (srv *S3Server) start(t *testing.T, bin, addr string) error {
	var out bytes.Buffer
	cmd := exec.Command(bin,
		"--access", srv.AccessKey, "--secret", srv.SecretKey,
		"--port", addr, "--region", S3Region, "--quiet",
		"posix", srv.Dir)
	cmd.Stdout, cmd.Stderr = &out, &out
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	endpoint := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("versitygw exited (%v): %s", err, strings.TrimSpace(out.String()))
		default:
		}
		if resp, err := client.Get(endpoint + "/"); err == nil {
			// Any HTTP answer (403 without credentials) means it serves.
			_ = resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("versitygw did not answer on %s within 30s: %s", addr, strings.TrimSpace(out.String()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	srv.Endpoint = endpoint
	t.Logf("versitygw %s serving %s on %s", bin, srv.Dir, endpoint)
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			stop()
		}
	})
	return nil
}

// URL returns the store URL of prefix (may be "") in bucket on the server.
func (srv *S3Server) URL(bucket, prefix string) string {
	q := url.Values{}
	q.Set("endpoint", srv.Endpoint)
	q.Set("region", S3Region)
	q.Set("use_path_style", "true")
	u := url.URL{Scheme: "s3", Host: bucket, Path: "/" + prefix, RawQuery: q.Encode()}
	return u.String()
}

// CreateBucket creates a bucket through the S3 API (gocloud does not create buckets).
func (srv *S3Server) CreateBucket(t testing.TB, bucket string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := blobstore.Open(ctx, srv.URL(bucket, ""))
	if err != nil {
		t.Fatalf("blobtest: %v", err)
	}
	defer func() { _ = store.Close() }()
	var client *s3.Client
	if !store.Bucket().As(&client) {
		t.Fatalf("blobtest: the s3 store has no *s3.Client")
	}
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatalf("blobtest: create bucket %q on %s: %v", bucket, srv.Endpoint, err)
	}
}

// versitygwBinary returns the path of the versitygw binary.
func versitygwBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("SLUICE_VERSITYGW"); bin != "" {
		return bin
	}
	script, err := findScript("scripts/versitygw.sh")
	if err != nil {
		t.Fatalf("blobtest: %v (or set SLUICE_VERSITYGW to a versitygw binary)", err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", script)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("blobtest: %s failed (%v): %s", script, err, strings.TrimSpace(stderr.String()))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Logf("blobtest: %s installed versitygw in %v", script, d.Round(time.Second))
	}
	bin := strings.TrimSpace(stdout.String())
	if bin == "" {
		t.Fatalf("blobtest: %s printed no binary path", script)
	}
	return bin
}

// findScript walks up from the working directory (the test's package directory) to
// the repository root that holds rel.
func findScript(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no " + rel + " above the working directory")
		}
		dir = parent
	}
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}
