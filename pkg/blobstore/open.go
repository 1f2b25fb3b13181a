package blobstore

import (
	"context"
	"fmt"
	"net/url"
	"path"
	"strings"
	"sync"

	"gocloud.dev/blob"
	// The drivers, all compiled in: which one a store uses is decided by its URL.
	_ "gocloud.dev/blob/azureblob"
	_ "gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/gcsblob"
	"gocloud.dev/blob/memblob"
	_ "gocloud.dev/blob/s3blob"
)

// The URL schemes Open accepts.
const (
	SchemeFile   = "file"
	SchemeMem    = "mem"
	SchemeS3     = "s3"
	SchemeGCS    = "gs"
	SchemeAzure  = "azblob"
	schemesUsage = "file:///abs/dir, s3://bucket/prefix, gs://bucket/prefix, azblob://container/prefix or mem://"
)

// Open opens the store a URL names (see the package documentation for the forms).
// Errors are one line that names the URL and says what to do.
func Open(ctx context.Context, rawURL string) (*Store, error) {
	if strings.TrimSpace(rawURL) == "" {
		return nil, fmt.Errorf("blobstore: empty store URL: use %s", schemesUsage)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("blobstore: store URL %q does not parse (%v): use %s", rawURL, err, schemesUsage)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme == "" {
		if strings.HasPrefix(rawURL, "/") {
			return nil, fmt.Errorf("blobstore: store URL %q has no scheme: for a local directory use file://%s", rawURL, path.Clean(rawURL))
		}
		return nil, fmt.Errorf("blobstore: store URL %q has no scheme: use %s", rawURL, schemesUsage)
	}
	if u.User != nil {
		return nil, fmt.Errorf("blobstore: store URL %q contains credentials: remove them and use the provider's usual credentials (environment, config files, instance identity)", redact(u))
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("blobstore: store URL %q has a fragment (#%s): remove it", rawURL, u.Fragment)
	}
	q := u.Query()
	for _, p := range []string{"prefix", "key"} {
		if q.Has(p) {
			return nil, fmt.Errorf("blobstore: store URL %q has a %q parameter: put the prefix in the path instead, e.g. s3://bucket/some/prefix", rawURL, p)
		}
	}
	switch scheme {
	case SchemeFile:
		return openFile(ctx, rawURL, u, q)
	case SchemeMem:
		return openMem(rawURL, u, q)
	case SchemeS3, SchemeGCS, SchemeAzure:
		return openCloud(ctx, rawURL, scheme, u)
	default:
		return nil, fmt.Errorf("blobstore: store URL %q has the unsupported scheme %q: use %s", rawURL, u.Scheme, schemesUsage)
	}
}

func openFile(ctx context.Context, rawURL string, u *url.URL, q url.Values) (*Store, error) {
	switch {
	case u.Opaque != "" || u.Host == ".":
		return nil, fmt.Errorf("blobstore: store URL %q is a relative file path: use an absolute one, e.g. file:///var/sluice/checkpoints", rawURL)
	case u.Host != "" && u.Host != "localhost":
		return nil, fmt.Errorf("blobstore: store URL %q names the host %q: a local directory takes three slashes, file:///%s%s", rawURL, u.Host, u.Host, u.Path)
	case u.Path == "" || u.Path == "/":
		return nil, fmt.Errorf("blobstore: store URL %q names no directory: use e.g. file:///var/sluice/checkpoints", rawURL)
	}
	dir := path.Clean(u.Path)
	// Defaults (each can be overridden in the URL):
	//   no_tmp_dir: write temporary files next to their final name, not in $TMPDIR, so
	//     that the commit is a rename within one file system (a rename from a tmpfs
	//     /tmp to the checkpoint volume fails with EXDEV);
	//   metadata=skip: no ".attrs" sidecar files (the store keeps its checksums in
	//     the checkpoint metadata, not in the blob store);
	//   create_dir: create the directory, like a bucket prefix that needs no creating.
	for k, v := range map[string]string{"no_tmp_dir": "1", "metadata": "skip", "create_dir": "1"} {
		if !q.Has(k) {
			q.Set(k, v)
		}
	}
	b, err := blob.DefaultURLMux().OpenBucketURL(ctx, &url.URL{Scheme: SchemeFile, Path: dir, RawQuery: q.Encode()})
	if err != nil {
		return nil, fmt.Errorf("blobstore: open %s: %w", rawURL, err)
	}
	return &Store{bucket: b, scheme: SchemeFile, display: "file://" + dir, fileDir: dir, owner: true}, nil
}

// Named in-memory buckets, shared by every Store of the process that opens
// mem://<name>/...; they live as long as the process.
var memBuckets struct {
	sync.Mutex
	m map[string]*blob.Bucket
}

func openMem(rawURL string, u *url.URL, q url.Values) (*Store, error) {
	if len(q) > 0 {
		return nil, fmt.Errorf("blobstore: store URL %q has query parameters: mem:// takes none", rawURL)
	}
	prefix, err := pathPrefix(rawURL, u)
	if err != nil {
		return nil, err
	}
	display := "mem://" + u.Host + "/" + prefix
	if u.Host == "" {
		return &Store{bucket: memblob.OpenBucket(nil), scheme: SchemeMem, display: display, prefix: prefix, owner: true}, nil
	}
	if err := checkElem(u.Host); err != nil {
		return nil, fmt.Errorf("blobstore: store URL %q: invalid in-memory bucket name %q: %s", rawURL, u.Host, err)
	}
	memBuckets.Lock()
	defer memBuckets.Unlock()
	b := memBuckets.m[u.Host]
	if b == nil {
		if memBuckets.m == nil {
			memBuckets.m = map[string]*blob.Bucket{}
		}
		b = memblob.OpenBucket(nil)
		memBuckets.m[u.Host] = b
	}
	// owner false: closing one Store must not close the bucket the others share.
	return &Store{bucket: b, scheme: SchemeMem, display: display, prefix: prefix}, nil
}

func openCloud(ctx context.Context, rawURL, scheme string, u *url.URL) (*Store, error) {
	what := "bucket"
	if scheme == SchemeAzure {
		what = "container"
	}
	if u.Host == "" {
		return nil, fmt.Errorf("blobstore: store URL %q names no %s: use %s://<%s>/<prefix>", rawURL, what, scheme, what)
	}
	prefix, err := pathPrefix(rawURL, u)
	if err != nil {
		return nil, err
	}
	// The driver sees the bucket and its parameters; the prefix is the store's own.
	bu := *u
	bu.Scheme, bu.Path, bu.RawPath = scheme, "", ""
	b, err := blob.DefaultURLMux().OpenBucketURL(ctx, &bu)
	if err != nil {
		hint := ""
		if scheme == SchemeAzure {
			hint = " (azblob:// takes the storage account from AZURE_STORAGE_ACCOUNT or the storage_account parameter, credentials from the environment)"
		}
		return nil, fmt.Errorf("blobstore: open %s: %w%s", redact(u), err, hint)
	}
	s := &Store{bucket: b, scheme: scheme, display: scheme + "://" + u.Host + "/" + prefix, prefix: prefix, owner: true}
	if scheme == SchemeS3 && !b.As(&s.s3) {
		_ = b.Close()
		return nil, fmt.Errorf("blobstore: open %s: the s3 driver exposes no *s3.Client", redact(u))
	}
	return s, nil
}

// pathPrefix returns the URL's path as a store prefix: "" or "a/b/".
func pathPrefix(rawURL string, u *url.URL) (string, error) {
	p := strings.TrimSuffix(strings.TrimPrefix(u.Path, "/"), "/")
	if p == "" {
		return "", nil
	}
	if err := checkKey(p); err != nil {
		return "", fmt.Errorf("blobstore: store URL %q has an invalid prefix %q: %w", rawURL, p, err)
	}
	return p + "/", nil
}

// redact returns the URL without user information and query (which can carry secrets,
// e.g. an Azure SAS token).
func redact(u *url.URL) string {
	r := *u
	r.User, r.RawQuery, r.ForceQuery = nil, "", false
	return r.String()
}
