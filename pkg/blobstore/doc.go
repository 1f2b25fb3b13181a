// Package blobstore is the boundary between Sluice and the bytes of checkpoints and
// savepoints: every state file, _metadata file and savepoint goes through a Store, which
// sits on gocloud.dev/blob. The store adds what the checkpoint protocol relies on:
// writes that are all or nothing, a size and SHA-256 for every file (recorded in its
// sluicev1.StateFile), reads that verify them, and the directory layout.
//
// # URLs
//
// Open takes the URL of execution.checkpointing.dir (or a savepoint directory):
//
//	file:///var/sluice/checkpoints          a local (or mounted) directory, created if missing
//	s3://bucket/some/prefix?region=eu-west-1
//	s3://bucket/prefix?endpoint=http://127.0.0.1:7070&region=us-east-1&use_path_style=true
//	gs://bucket/prefix
//	azblob://container/prefix
//	mem://                                  a new, private in-memory bucket (tests)
//	mem://name/prefix                       the process-wide in-memory bucket "name",
//	                                        shared by every Open of it (in-process clusters)
//
// The URL's path is a prefix inside the bucket: the store works under it, and keys and
// StateFile paths never include it, so a store's contents can be moved to another
// prefix or bucket. Query parameters go to the gocloud driver (for s3: region,
// endpoint, use_path_style, disable_https, profile, request_checksum_calculation, ...;
// see gocloud.dev/blob/s3blob.URLOpener and gocloud.dev/aws.V2ConfigFromURLParams).
// Credentials come from the provider's usual sources (for S3 the AWS SDK's: the
// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY environment, shared config, instance roles),
// never from the URL. file:// URLs get no_tmp_dir, metadata=skip and create_dir unless
// they set them (see below). Anything else (no scheme, an unknown scheme, no bucket, a
// relative file path, user information, a prefix parameter) is refused with one line
// that names the URL and says what to write instead.
//
// # Keys
//
// Keys are relative to the store (or to the view, see Store.Sub), "/"-separated, made
// of letters, digits and ._-=+~, at most 1024 bytes with the prefix, with no empty, "."
// or ".." elements; the suffixes ".attrs" and ".<hex>.tmp" and the sequence "__0x" are
// reserved by gocloud. No driver escapes such keys, so a key names the same object
// everywhere, and on file:// the same path.
//
// # Layout
//
// The functions in layout.go are the only place that spells a key. Under the checkpoint
// store's root (execution.checkpointing.dir):
//
//	<job-id>/chk-<n>/_metadata       MetadataKey: the checkpoint, written last
//	<job-id>/chk-<n>/<file>          PrivateKey: files only checkpoint n uses
//	<job-id>/shared/<file>           SharedKey: incremental files several checkpoints use;
//	                                 their lifetime is the shared-file registry's (etcd)
//	<job-id>/taskowned/<file>        TaskOwnedKey: files the task managers own
//
// StateFile paths in a checkpoint's _metadata are relative to the job directory
// ("chk-7/…", "shared/…"; CheckpointPath, SharedPath, TaskOwnedPath), as checkpoint.proto
// says: write and read them through the view Store.Sub(JobDir(jobID)).
//
// Under the savepoint store's root, each savepoint is one self-contained directory,
// SavepointDir(jobID) = "savepoint-<first 6 of the job ID>-<12 random hex>/", holding
// "_metadata" (SavepointMetadataKey) and the savepoint's state files, which the task
// managers write there through a store opened at the directory (StateFiles with
// Savepoint set): "chk-<n>/…" like a checkpoint's private files, never "shared/…".
// The references in _metadata are relative to the savepoint directory: the directory
// can be moved or copied anywhere, and restore reads it through a store opened at its
// new URL exactly as it reads a checkpoint through the job view. Rel and Resolve convert
// between keys and relative references; Resolve refuses references that leave their
// directory.
//
// # Atomic commits
//
// A Writer's bytes become visible under its key only when Close returns nil, and
// never partially; Abort, a failed Write or Close, or canceling the writer's context
// leaves nothing (and an earlier object under the key unchanged). This is gocloud's
// contract — a write is committed by Close and aborted by canceling its context — and
// per driver it comes from:
//
//   - file://: fileblob writes a temporary file "<key>.<hex>.tmp" and renames it over
//     the key at Close (rename is atomic within one file system). The store opens
//     file:// with no_tmp_dir so that the temporary file sits next to the final one
//     (a rename from a tmpfs $TMPDIR to the checkpoint volume would fail with EXDEV);
//     List and Exists never show temporary files. The store also fsyncs the temporary
//     file before the rename and the directories after it (fileblob does neither), so a
//     committed file survives a machine crash. A process killed mid-write can leave a
//     temporary file behind; it is invisible to the store and can be removed by hand.
//   - mem://: memblob stores the buffer in its map at Close.
//   - s3://: s3blob streams to the AWS SDK's transfer manager: a single PutObject for
//     objects below 16 MiB (buffered in memory until then), else a multipart upload of
//     8 MiB parts, invisible until CompleteMultipartUpload. On cancellation or error the transfer
//     manager aborts the multipart upload; the store gives it a fresh context for that
//     (by default it would reuse the canceled one, and the parts would stay). An upload
//     whose abort failed too, or whose process died, stays invisible but holds storage:
//     give the bucket a lifecycle rule that aborts incomplete multipart uploads after a
//     day.
//   - gs://: gcsblob writes through cloud.google.com/go/storage's Writer, whose upload
//     (one request, or a resumable upload for large objects) creates the object only
//     when it completes at Close; canceling the context abandons it.
//   - azblob://: azureblob stages blocks and commits the block list at Close;
//     uncommitted blocks are invisible and Azure discards them after a week.
//
// # Verification
//
// Writer.Close returns the StateFile (path, size, SHA-256) that the checkpoint records.
// Store.Open and ReadAll check a file against it while reading: a file whose size
// differs (truncated or extended) or whose SHA-256 differs (corrupt) fails with an
// error wrapping ErrCorrupt that names the file and the expected and actual values, at
// the latest when the end is reached, and never returns io.EOF. A reader that stops
// before the end has read unverified bytes. Inline StateFiles (empty path, inline_data
// set; see Inline) are served from memory and checked the same way.
package blobstore
