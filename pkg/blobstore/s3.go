package blobstore

import (
	"context"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
)

// How S3 writes are aborted. s3blob hands each write to the AWS SDK's transfer manager
// and aborts it by canceling the write's context. Left at that, an aborted multipart
// upload can leave its parts stored (invisible, but billed): the transfer manager sends
// AbortMultipartUpload with the canceled context, so the abort never leaves the
// process; and parts whose requests were cut off mid-flight may still be stored by the
// server after an abort (S3's documentation: "it might be necessary to abort a given
// multipart upload multiple times"). The store therefore replaces s3blob's transfer
// manager for each write (through the BeforeWrite hook) with one that
//
//   - aborts with a fresh context (FailTimeout), and
//   - lets a part upload or the creation of the multipart upload that has started run
//     to its end (bounded by s3RequestTimeout) and only then reports the
//     cancellation, so that the abort comes after every part and nothing is left.
//
// CompleteMultipartUpload and PutObject, the requests that make an object visible, keep
// the write's context: once it is canceled they are never sent.
const (
	s3AbortTimeout   = 30 * time.Second
	s3RequestTimeout = 2 * time.Minute
)

// newTransferManager returns the transfer manager for one S3 write: s3blob's settings
// (the client's request checksum mode; the default 16 MiB multipart threshold, 8 MiB
// parts and 5 parts in flight) and the abort handling described above.
func newTransferManager(client *s3.Client) *transfermanager.Client {
	return transfermanager.New(uploadClient{client}, func(o *transfermanager.Options) {
		o.RequestChecksumCalculation = client.Options().RequestChecksumCalculation
		o.FailTimeout = s3AbortTimeout
	})
}

// uploadClient is the S3 client of a transfer manager (see above).
type uploadClient struct{ *s3.Client }

func (c uploadClient) CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, opts ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	// If this were cut off, the server could create an upload whose ID nobody learns.
	return finish(ctx, func(ctx context.Context) (*s3.CreateMultipartUploadOutput, error) {
		return c.Client.CreateMultipartUpload(ctx, in, opts...)
	})
}

func (c uploadClient) UploadPart(ctx context.Context, in *s3.UploadPartInput, opts ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	return finish(ctx, func(ctx context.Context) (*s3.UploadPartOutput, error) {
		return c.Client.UploadPart(ctx, in, opts...)
	})
}

// finish runs a request that must not be cut off: not at all if ctx is already done,
// else to its end (or s3RequestTimeout), reporting ctx's error afterwards if ctx ended
// meanwhile so that the transfer manager aborts the upload.
func finish[T any](ctx context.Context, req func(context.Context) (T, error)) (T, error) {
	if err := ctx.Err(); err != nil {
		var zero T
		return zero, err
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s3RequestTimeout)
	defer cancel()
	out, err := req(rctx)
	if err == nil {
		if cerr := ctx.Err(); cerr != nil {
			var zero T
			return zero, cerr
		}
	}
	return out, err
}

// s3ReadOptions quiets the SDK's warning that it cannot validate the composite checksum
// of a multipart object on every such read: the store checks its own SHA-256.
var s3ReadOptions = &blob.ReaderOptions{
	BeforeRead: func(as func(any) bool) error {
		var opts *[]func(*s3.Options)
		if as(&opts) {
			*opts = append(*opts, func(o *s3.Options) { o.DisableLogOutputChecksumValidationSkipped = true })
		}
		return nil
	},
}
